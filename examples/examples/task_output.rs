//! What tasks print reaches the driver's terminal. On the embedded runtime tasks print
//! straight to this process's output; on a cluster each line arrives prefixed with the
//! worker process and node that printed it, as Ray does, and is kept in the session's
//! log files.
//!
//! `cargo run --release --example task_output`

use std::time::Duration;

#[prism::remote]
fn greet(i: u32) -> u32 {
    println!("task {i} says hello");
    eprintln!("task {i} writes to stderr too");
    i
}

fn main() -> prism::Result<()> {
    prism::init()?;
    let refs: Vec<_> = (0..4).map(greet::remote).collect();
    let done = prism::get_all(&refs)?;
    // Output of remote workers travels apart from results: give it a moment to arrive.
    std::thread::sleep(Duration::from_millis(300));
    println!("{} tasks done", done.len());
    prism::shutdown();
    Ok(())
}
