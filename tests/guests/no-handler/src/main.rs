//! A component with no HTTP handler: an ordinary command (`wasi:cli/run`).
//! The host must refuse to deploy it as a function, with a clear message.

fn main() {
    println!("no-handler: I export wasi:cli/run, not wasi:http/incoming-handler");
}
