//! W9 with dynamic batching: the digits SVC's `batch` handler takes the requests that
//! arrive together as one `Vec` (up to 32, waiting at most 2 ms for others) and
//! predicts them in one kernel product. Eight connections of load for 2 s, then the
//! mean batch size the handler saw, read from `/metrics`.
//!
//! `cargo run --release --example serve_batched`

use std::time::Duration;

use prism_examples::digits::{first_image_body, Digits, DigitsConfig};
use prism_examples::load;
use prism_serve::client::Conn;
use prism_serve::{DeploymentOptions, HttpOptions, Serve};

/// A sample of the metrics page, `name{deployment="digits"} value`.
fn metric(page: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{deployment=\"digits\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let serve = Serve::start(HttpOptions::default().port(0))?;
    // One batch in flight at a time: batches still fill, since a batch counts once.
    let options = DeploymentOptions::new("digits").max_ongoing_requests(1);
    serve.deploy::<Digits>(options, DigitsConfig::default())?;
    let (body, expected) = first_image_body();
    let one = Conn::open(serve.address())?.send("POST", "/digits/batch", &body)?;
    assert_eq!(one.json()["digit"], expected);

    let r = load::post_for(
        serve.address(),
        "/digits/batch",
        &body,
        8,
        Duration::from_secs(2),
    );
    let page = Conn::open(serve.address())?
        .send("GET", "/metrics", "")?
        .body;
    let batches = metric(&page, "prism_serve_batch_size_count");
    let mean = metric(&page, "prism_serve_batch_size_sum") / batches;
    println!(
        "8 connections for 2 s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        r.rps, r.p50_ms, r.p99_ms, r.errors
    );
    println!("{batches} batches, {mean:.1} requests each on average");
    assert_eq!(r.errors, 0);
    assert!(mean > 1.5, "requests that arrive together are batched");
    serve.shutdown();
    prism::shutdown();
    Ok(())
}
