//! The change feed: one connection per node that `LISTEN`s on the channel
//! the schema's triggers `NOTIFY` on commit, forwarding each table name to
//! the node. When the connection drops, the node is told `reconnected`
//! (changes may have been missed, so it reconciles everything) once the
//! feed is back; it retries every [`RETRY`] while PostgreSQL is away.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc::Sender;
use tokio_postgres::AsyncMessage;

use super::pg_text;
use super::schema::CHANGES_CHANNEL;
use crate::pg_tls::MakeRustls;

/// Pause between reconnection attempts.
const RETRY: Duration = Duration::from_secs(1);

/// Runs until the receiving node goes away.
pub(super) async fn run(
    config: tokio_postgres::Config,
    tls: MakeRustls,
    place: String,
    tx: Sender<String>,
) {
    let mut listened_before = false;
    loop {
        if tx.is_closed() {
            return;
        }
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                // The connection makes progress only while it is polled:
                // poll it while LISTEN runs.
                let sql = format!("LISTEN {CHANGES_CHANNEL}");
                let listening = {
                    let listen = client.batch_execute(&sql);
                    tokio::pin!(listen);
                    loop {
                        tokio::select! {
                            r = &mut listen => break r,
                            m = messages.next() => if m.is_none() { break Ok(()) },
                        }
                    }
                };
                if let Err(e) = listening {
                    tracing::warn!(store = %place, error = %pg_text(&e), "change feed: LISTEN failed");
                } else {
                    if listened_before && tx.send("reconnected".into()).await.is_err() {
                        return;
                    }
                    listened_before = true;
                    tracing::debug!(store = %place, "change feed listening");
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).await.is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(store = %place, error = %pg_text(&e), "change feed interrupted");
                                break;
                            }
                        }
                    }
                }
                drop(client);
            }
            Err(e) => {
                tracing::warn!(store = %place, error = %pg_text(&e), "change feed: cannot reach the store; retrying");
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}
