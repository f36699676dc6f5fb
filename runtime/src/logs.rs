//! A function's stdout and stderr, as log lines attributed to it.
//!
//! Each complete line a guest writes becomes one `tracing` event (target
//! `function`) carrying the app, function and stream, so guest output is
//! searchable with the host's logs and cannot pose as a host line. Output is
//! bounded per invocation: past the budget it is dropped with one notice.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line logged; longer lines are cut.
const MAX_LINE: usize = 4 * 1024;
/// Bytes of output one invocation may log in all.
pub const MAX_OUTPUT_PER_INVOCATION: usize = 256 * 1024;
/// Lines of an invocation kept for `runtime logs` (the rest still reach the
/// host's log).
pub const MAX_CAPTURED_LINES: usize = 200;

/// The lines an invocation wrote, as `stdout: text` / `stderr: text`.
pub type Captured = Arc<std::sync::Mutex<Vec<String>>>;

/// Where a function's output goes: one per stream per invocation.
#[derive(Debug, Clone)]
pub struct FunctionOutput {
    app: Arc<str>,
    function: Arc<str>,
    stream: &'static str,
    /// Bytes left for this invocation, shared by stdout and stderr.
    budget: Arc<AtomicUsize>,
    /// Lines kept for the invocation's record.
    captured: Captured,
}

impl FunctionOutput {
    /// stdout and stderr of one invocation of `app/function`.
    pub fn pair(app: Arc<str>, function: Arc<str>) -> (Self, Self) {
        let budget = Arc::new(AtomicUsize::new(MAX_OUTPUT_PER_INVOCATION));
        let out = Self {
            app,
            function,
            stream: "stdout",
            budget,
            captured: Captured::default(),
        };
        let err = Self {
            stream: "stderr",
            ..out.clone()
        };
        (out, err)
    }

    /// The lines captured so far (shared by both streams).
    pub fn captured(&self) -> Captured {
        self.captured.clone()
    }
}

impl IsTerminal for FunctionOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for FunctionOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            target: self.clone(),
            line: Vec::new(),
            exhausted: false,
        })
    }
}

struct LineWriter {
    target: FunctionOutput,
    line: Vec<u8>,
    exhausted: bool,
}

impl LineWriter {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let t = &self.target;
        let text = text.trim_end_matches('\r');
        tracing::info!(target: "function", app = %t.app, function = %t.function, stream = t.stream, "{}", text);
        if let Ok(mut lines) = t.captured.lock()
            && lines.len() < MAX_CAPTURED_LINES
        {
            lines.push(format!("{}: {text}", t.stream));
        }
        self.line.clear();
    }

    fn take_budget(&mut self, n: usize) -> bool {
        let ok = self
            .target
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok();
        if !ok && !self.exhausted {
            self.exhausted = true;
            self.target.budget.store(0, Ordering::Relaxed);
            let t = &self.target;
            tracing::warn!(target: "function", app = %t.app, function = %t.function,
                "output beyond {MAX_OUTPUT_PER_INVOCATION} bytes in one invocation is dropped");
        }
        ok
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // The guest is told everything was written either way: dropping
        // output past the budget must not make it retry or fail.
        if !self.take_budget(buf.len()) {
            return Poll::Ready(Ok(buf.len()));
        }
        for &byte in buf {
            if byte == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(byte);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}
