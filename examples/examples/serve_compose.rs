//! Composition: a preprocessing deployment calls the model deployment through a
//! handle. `POST /classify {"image": [[8 grayscale values 0-255] x 8]}` is scaled to
//! the digits' 0-16 range and flattened by `Preprocess`, whose handler asks the
//! `digits` deployment (no HTTP route of its own) for the digit. Both run two
//! replicas; on a cluster they may be on any node, and the handle routes from there.
//!
//! `cargo run --release --example serve_compose`

use prism_examples::digits::{Answer, Digits, DigitsConfig, Query};
use prism_serve::client::Conn;
use prism_serve::{
    Deployment, DeploymentHandle, DeploymentOptions, Handlers, HttpError, HttpOptions, Serve,
};
use serde::{Deserialize, Serialize};

/// An 8×8 grayscale image, 0–255.
#[derive(Debug, Serialize, Deserialize)]
struct Image {
    image: Vec<Vec<u8>>,
}

/// Scales and flattens images, then asks the model.
struct Preprocess {
    model: DeploymentHandle,
}

impl Deployment for Preprocess {
    type Config = ();

    fn new(_: ()) -> Result<Self, String> {
        Ok(Preprocess {
            model: DeploymentHandle::new("digits"),
        })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.call(|p: &Preprocess, img: Image| {
            if img.image.len() != 8 || img.image.iter().any(|row| row.len() != 8) {
                return Err(HttpError::bad_request("an image is 8 rows of 8 values"));
            }
            let features = img
                .image
                .concat()
                .iter()
                .map(|v| *v as f32 * 16.0 / 255.0)
                .collect();
            let answer: Answer = p.model.call(&Query { features }).get()?;
            Ok(answer)
        });
    }
}
prism_serve::register_deployment!(Preprocess);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let serve = Serve::start(HttpOptions::default().port(0))?;
    let model = DeploymentOptions::new("digits").no_route().num_replicas(2);
    serve.deploy::<Digits>(model, DigitsConfig::default())?;
    let pre = DeploymentOptions::new("classify").num_replicas(2);
    serve.deploy::<Preprocess>(pre, ())?;

    let data = prism_tune::datasets::digits();
    let mut conn = Conn::open(serve.address())?;
    let mut right = 0;
    let n = 50;
    for i in 0..n {
        let pixels = &data.x[i * 64..(i + 1) * 64];
        let image: Vec<Vec<u8>> = pixels
            .chunks(8)
            .map(|row| {
                row.iter()
                    .map(|v| (v * 255.0 / 16.0).round() as u8)
                    .collect()
            })
            .collect();
        let body = serde_json::to_string(&Image { image })?;
        let a = conn.send("POST", "/classify", &body)?;
        assert_eq!(a.status, 200, "{}", a.body);
        if a.json()["digit"] == data.y[i] {
            right += 1;
        }
    }
    println!("{right} of {n} images classified right through preprocess -> digits");
    assert!(right >= n * 9 / 10);
    let wrong = conn.send("POST", "/classify", r#"{"image": [[1, 2]]}"#)?;
    println!("a 1x2 image -> {} {}", wrong.status, wrong.body);
    assert_eq!(wrong.status, 400);
    for d in serve.status() {
        let running = d.replicas.iter().filter(|r| r.info.is_some()).count();
        println!("{}: {running} replicas, {} requests", d.name, d.requests);
    }
    serve.shutdown();
    prism::shutdown();
    Ok(())
}
