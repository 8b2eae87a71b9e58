//! The Ray tutorial's SVM search, ported: an RBF SVC on the digits (1,797 images of 8×8
//! pixels, ten classes), C and gamma drawn log-uniformly (30 candidates by default),
//! each scored by 5-fold stratified cross-validation, every (candidate, fold) fit a
//! task on every core. Prints each candidate as it finishes, then the best parameters,
//! the best mean CV accuracy and the wall time.
//!
//! `cargo run --release --example tune_svm_digits [-- --n-iter 300 --wide --tpe --seed 0]`
//!
//! The random search draws the candidates scikit-learn's `RandomizedSearchCV` draws for
//! the same `random_state` (`--seed`, default 0), so its results can be put beside
//! scikit-learn's candidate by candidate. `--wide` searches the space of Ray's tutorial
//! instead (C in 1e-6..1e6, gamma in 1e-8..1e8, tol in 1e-4..1e-1, class_weight none or
//! balanced); `--tpe` lets the model-based searcher pick the candidates.

use std::io::{IsTerminal, Write};

use prism_tune::cv::{self, Candidate, Progress};
use prism_tune::svc::Svc;
use prism_tune::{choice, datasets, loguniform, RandomSearch, Searcher, Space, Tpe};

/// Prints each finished candidate: on a line of its own, or in place on a terminal.
struct Lines {
    terminal: bool,
    total: usize,
}

impl Progress for Lines {
    fn candidate_done(&mut self, done: usize, latest: &Candidate, best: &Candidate) {
        let total = self.total;
        let line = format!(
            "[{done:>3}/{total}] {}  mean {:.4} ± {:.4}   best so far {:.4}",
            latest.config, latest.mean, latest.std, best.mean
        );
        let mut out = std::io::stdout().lock();
        if self.terminal {
            let _ = write!(out, "\r\x1b[2K{line}");
            if done == total {
                let _ = writeln!(out);
            }
        } else {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let args: Vec<String> = std::env::args().collect();
    let n_iter = prism_examples::flag("--n-iter")?.unwrap_or(30);
    let seed: u32 = prism_examples::flag("--seed")?.unwrap_or(0);
    let wide = args.iter().any(|a| a == "--wide");
    let space = if wide {
        Space::new()
            .add("C", loguniform(1e-6, 1e6))
            .add("gamma", loguniform(1e-8, 1e8))
            .add("tol", loguniform(1e-4, 1e-1))
            .add("class_weight", choice(["none", "balanced"]))
    } else {
        Space::new()
            .add("C", loguniform(1e-2, 1e3))
            .add("gamma", loguniform(1e-5, 1e-1))
    };
    let mut searcher: Box<dyn Searcher> = if args.iter().any(|a| a == "--tpe") {
        Box::new(Tpe::new(&space, n_iter, seed.into())?)
    } else {
        Box::new(RandomSearch::sklearn(&space, n_iter, seed)?)
    };
    let data = datasets::digits();
    let cpus = prism::cluster_resources()?
        .get("CPU")
        .copied()
        .unwrap_or(0.0);
    println!(
        "RBF SVC on the digits ({} images), {n_iter} candidates x 5 folds on {cpus} CPUs",
        data.rows(),
    );
    let mut progress = Lines {
        terminal: std::io::stdout().is_terminal(),
        total: n_iter,
    };
    // Two candidates per CPU being scored at once: their five folds keep every core busy.
    let in_flight = (2.0 * cpus.max(1.0)).ceil() as usize;
    let result = cv::search::<Svc>(&data, searcher.as_mut(), 5, in_flight, &mut progress)?;
    let best = result.best().ok_or("no candidate finished")?;
    let mut ranked: Vec<&Candidate> = result.candidates.iter().collect();
    ranked.sort_by(|a, b| b.mean.total_cmp(&a.mean));
    println!("\ntop candidates:");
    for c in ranked.iter().take(5) {
        println!("  {:.4} ± {:.4}  {}", c.mean, c.std, c.config);
    }
    println!("\nbest parameters: {}", best.config);
    println!("best mean CV accuracy: {:.4}", best.mean);
    println!("wall time: {:.2} s", result.elapsed.as_secs_f64());
    prism::shutdown();
    Ok(())
}
