//! Autoscaling: a deployment whose handler takes 20 ms, between 1 and 3 replicas,
//! aiming at 2 requests in flight per replica, with an upscale delay of 1 s and a
//! downscale delay of 2 s. Six connections of load need three replicas; once the load
//! stops, one is enough. Prints the replica count as it follows, 1 → 3 → 1, and checks
//! that the third replica serves within the upscale delay plus one second of the load's
//! start and that the extra ones are gone within the downscale delay plus two seconds
//! of its end.
//!
//! `cargo run --release --example serve_autoscale`

use std::time::{Duration, Instant};

use prism_examples::load;
use prism_serve::{
    Autoscaling, Deployment, DeploymentOptions, Handlers, HttpError, HttpOptions, ReplicaState,
    Serve,
};

/// Takes 20 ms per request, like a model on a slow device.
struct Slow;

impl Deployment for Slow {
    type Config = ();

    fn new(_: ()) -> Result<Self, String> {
        Ok(Slow)
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.call(|_: &Slow, _: ()| {
            std::thread::sleep(Duration::from_millis(20));
            Ok::<_, HttpError>("done")
        });
    }
}
prism_serve::register_deployment!(Slow);

fn serving(serve: &Serve) -> usize {
    serve.status()[0]
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Running)
        .count()
}

/// Waits up to `limit` for `want` serving replicas, printing changes; how long it took.
fn until(serve: &Serve, want: usize, limit: Duration, t0: Instant) -> Option<Duration> {
    let start = Instant::now();
    let mut last = usize::MAX;
    while start.elapsed() < limit {
        let n = serving(serve);
        if n != last {
            println!(
                "{:>6.2} s: {n} replica(s) serving",
                t0.elapsed().as_secs_f64()
            );
            last = n;
        }
        if n == want {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let serve = Serve::start(HttpOptions::default().port(0))?;
    let (up, down) = (Duration::from_secs(1), Duration::from_secs(2));
    let scaling = Autoscaling::new(1, 3)
        .target_ongoing_requests(2.0)
        .upscale_delay(up)
        .downscale_delay(down)
        .look_back(Duration::from_millis(250));
    let options = DeploymentOptions::new("slow")
        .autoscaling(scaling)
        .max_ongoing_requests(2);
    serve.deploy::<Slow>(options, ())?;
    let t0 = Instant::now();
    let at = serve.address();
    let loader =
        std::thread::spawn(move || load::post_for(at, "/slow", "null", 6, Duration::from_secs(5)));
    let to_three = until(&serve, 3, up + Duration::from_secs(3), t0);
    let report = loader.join().expect("the load ran");
    println!(
        "{:>6.2} s: the load stops ({:.0} requests/s, p99 {:.1} ms, {} errors)",
        t0.elapsed().as_secs_f64(),
        report.rps,
        report.p99_ms,
        report.errors
    );
    let to_one = until(&serve, 1, down + Duration::from_secs(4), t0);
    let to_three = to_three.ok_or("three replicas never served")?;
    let to_one = to_one.ok_or("the extra replicas never stopped")?;
    println!(
        "the third replica served {:.2} s after the load started (upscale delay {up:?}); \
         the extras were gone {:.2} s after it stopped (downscale delay {down:?})",
        to_three.as_secs_f64(),
        to_one.as_secs_f64()
    );
    assert!(to_three <= up + Duration::from_secs(1));
    assert!(to_one <= down + Duration::from_secs(2));
    assert_eq!(report.errors, 0);
    serve.shutdown();
    prism::shutdown();
    Ok(())
}
