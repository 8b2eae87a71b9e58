//! Models of other crates searched like prism-tune's own SVC: a smartcore random forest
//! and a linfa decision tree on the digits, each by 5-fold stratified cross-validation
//! of candidates drawn as scikit-learn's `RandomizedSearchCV(random_state=0)` draws them,
//! every (candidate, fold) fit a task. Prints each model's best parameters, best mean CV
//! accuracy and wall time.
//!
//! `cargo run --release --example tune_estimators [-- --n-iter 8]`

use prism_tune::adapters::{Linfa, Smartcore};
use prism_tune::cv::{self, Candidate, Progress};
use prism_tune::{choice, datasets, randint, uniform, Estimator, RandomSearch, Space};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

/// smartcore's random forest, searchable.
type Forest = Smartcore<
    RandomForestClassifier<f64, u32, DenseMatrix<f64>, Vec<u32>>,
    RandomForestClassifierParameters,
>;
prism_tune::register_estimator!(Forest);

/// linfa-trees' decision tree, searchable.
type Tree = Linfa<linfa_trees::DecisionTree<f64, usize>>;
prism_tune::register_estimator!(Tree);

/// One line per finished candidate.
struct Lines;

impl Progress for Lines {
    fn candidate_done(&mut self, done: usize, latest: &Candidate, best: &Candidate) {
        println!(
            "  [{done:>2}] {}  mean {:.4} ± {:.4}   best so far {:.4}",
            latest.config, latest.mean, latest.std, best.mean
        );
    }
}

/// Searches `E` over `space`; its best mean CV accuracy.
fn search<E: Estimator>(
    what: &str,
    space: &Space,
    n_iter: usize,
    data: &datasets::Labelled,
) -> Result<f64, Box<dyn std::error::Error>> {
    println!("{what}: {n_iter} candidates x 5 folds");
    let mut searcher = RandomSearch::sklearn(space, n_iter, 0)?;
    let cpus = prism::cluster_resources()?
        .get("CPU")
        .copied()
        .unwrap_or(1.0);
    let in_flight = (2.0 * cpus).ceil() as usize;
    let result = cv::search::<E>(data, &mut searcher, 5, in_flight, &mut Lines)?;
    let best = result.best().ok_or("no candidate finished")?;
    println!(
        "{what}: best {} with mean CV accuracy {:.4}, {:.2} s\n",
        best.config,
        best.mean,
        result.elapsed.as_secs_f64()
    );
    Ok(best.mean)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::init()?;
    let n_iter = prism_examples::flag("--n-iter")?.unwrap_or(8);
    let data = datasets::digits();
    let forest = Space::new()
        .add("n_trees", randint(5, 40))
        .add("max_depth", randint(4, 16))
        .add("min_samples_split", randint(2, 8))
        .add("seed", 0);
    let forest_best = search::<Forest>("smartcore RandomForestClassifier", &forest, n_iter, &data)?;
    let tree = Space::new()
        .add("max_depth", randint(4, 20))
        .add("split_quality", choice(["gini", "entropy"]))
        .add("min_weight_split", uniform(2.0, 10.0));
    let tree_best = search::<Tree>("linfa DecisionTree", &tree, n_iter, &data)?;
    // Ten classes: guessing scores 0.1. Both models learn the digits, the forest better.
    assert!(forest_best > 0.8 && tree_best > 0.6 && forest_best > tree_best);
    prism::shutdown();
    Ok(())
}
