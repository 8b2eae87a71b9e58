//! The RBF SVC on the digits, fold by fold (scikit-learn's `StratifiedKFold(5)` folds):
//! fit time and accuracy for a few (C, gamma), to put beside scikit-learn's `SVC`.
//!
//! `cargo run --release -p prism-tune --example svc_digits`

use std::time::Instant;

use prism_tune::datasets::{digits, stratified_folds};
use prism_tune::svc::{Features, Svc, SvcParams};

fn main() {
    let data = digits();
    let folds = stratified_folds(&data.y, 5);
    for (c, gamma) in [(10.0, 0.001), (1.0, 0.001), (100.0, 0.0001), (1000.0, 1e-5)] {
        let params = SvcParams {
            c,
            gamma,
            ..SvcParams::default()
        };
        let mut times = Vec::new();
        let mut accuracy = 0.0;
        let mut svs = 0;
        for (train, test) in &folds {
            let (tr, te) = (data.select(train), data.select(test));
            let t = Instant::now();
            let svc = Svc::fit(&Features::new(&tr.x, tr.dims).unwrap(), &tr.y, &params).unwrap();
            times.push(t.elapsed().as_secs_f64());
            accuracy += svc.score(&Features::new(&te.x, te.dims).unwrap(), &te.y) / 5.0;
            svs = svc.support_vectors();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "C={c} gamma={gamma}: fit median {:.4} s, mean accuracy {accuracy:.4}, {svs} support vectors (last fold)",
            times[2]
        );
    }
}
