//! W9: the digits SVC served over HTTP. One replica of the `Digits` deployment (the
//! RBF SVC of prism-tune fitted on all of the digits, C = 1, gamma = 0.001) answers
//! `POST /digits {"features": [64 floats]}` with `{"digit": d}`.
//!
//! `cargo run --release --example serve_digits` deploys it, checks one answer, puts 8
//! connections of load on it for 2 s and prints requests/s and latencies, then stops.
//! With `-- --serve [--port 8000]` it keeps serving until Ctrl-C, for wrk or curl:
//!
//! ```text
//! curl -d '{"features": [0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]}' \
//!      http://127.0.0.1:8000/digits
//! ```

use std::time::Duration;

use prism_examples::digits::{first_image_body, Digits, DigitsConfig};
use prism_examples::{flag, load};
use prism_serve::{DeploymentOptions, HttpOptions, Serve};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let keep_serving = std::env::args().any(|a| a == "--serve");
    let port: u16 = flag("--port")?.unwrap_or(if keep_serving { 8000 } else { 0 });
    let replicas: usize = flag("--replicas")?.unwrap_or(1);
    let serve = Serve::start(HttpOptions::default().port(port))?;
    let options = DeploymentOptions::new("digits")
        .num_replicas(replicas)
        .max_ongoing_requests(8);
    serve.deploy::<Digits>(options, DigitsConfig::default())?;
    let (body, expected) = first_image_body();
    let mut conn = prism_serve::client::Conn::open(serve.address())?;
    let answer = conn.send("POST", "/digits", &body)?;
    println!(
        "POST {} -> {} {}",
        serve.url("/digits"),
        answer.status,
        answer.body
    );
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json()["digit"],
        expected,
        "the first image is a {expected}"
    );
    // A wrong shape is the client's error, with the reason.
    let wrong = conn.send("POST", "/digits", r#"{"features": [1, 2, 3]}"#)?;
    println!("a 3-pixel image -> {} {}", wrong.status, wrong.body);
    assert_eq!(wrong.status, 400);

    if keep_serving {
        println!("serving on {} until Ctrl-C", serve.url("/digits"));
        serve.wait();
        return Ok(());
    }
    let r = load::post_for(serve.address(), "/digits", &body, 8, Duration::from_secs(2));
    println!(
        "8 connections for 2 s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        r.rps, r.p50_ms, r.p99_ms, r.errors
    );
    assert_eq!(r.errors, 0);
    serve.shutdown();
    prism::shutdown();
    Ok(())
}
