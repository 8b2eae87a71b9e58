//! smartcore and linfa models searched through the adapters: every candidate's fold
//! scores are those of the same models fitted directly with each library on the same
//! folds, and bad configurations are errors that name the parameter.

use prism_tune::adapters::Smartcore;
use prism_tune::cv::{self, Quiet};
use prism_tune::datasets::{digits, stratified_folds, Labelled};
use prism_tune::{grid, Config, Estimator, GridSearch, Space, TuneError};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::tree::decision_tree_classifier::{
    DecisionTreeClassifier, DecisionTreeClassifierParameters, SplitCriterion,
};

type Tree = Smartcore<
    DecisionTreeClassifier<f64, u32, DenseMatrix<f64>, Vec<u32>>,
    DecisionTreeClassifierParameters,
>;
prism_tune::register_estimator!(Tree);

/// Every 9th digit: 200 rows, still ten classes.
fn small() -> Labelled {
    let d = digits();
    let rows: Vec<usize> = (0..d.rows()).step_by(9).collect();
    d.select(&rows)
}

fn accuracy(predicted: &[usize], y: &[usize]) -> f64 {
    predicted.iter().zip(y).filter(|(p, t)| p == t).count() as f64 / y.len() as f64
}

/// The fold scores of smartcore's tree fitted directly.
fn smartcore_by_hand(data: &Labelled, depth: u16, criterion: SplitCriterion) -> Vec<f64> {
    let matrix = |d: &Labelled| {
        let values = d.x.iter().map(|v| *v as f64).collect();
        DenseMatrix::new(d.rows(), d.dims, values, false).unwrap()
    };
    stratified_folds(&data.y, 3)
        .iter()
        .map(|(train, test)| {
            let (tr, te) = (data.select(train), data.select(test));
            let labels: Vec<u32> = tr.y.iter().map(|c| *c as u32).collect();
            let params = DecisionTreeClassifierParameters {
                max_depth: Some(depth),
                criterion: criterion.clone(),
                ..Default::default()
            };
            let model = DecisionTreeClassifier::fit(&matrix(&tr), &labels, params).unwrap();
            let predicted: Vec<usize> = model
                .predict(&matrix(&te))
                .unwrap()
                .into_iter()
                .map(|c| c as usize)
                .collect();
            accuracy(&predicted, &te.y)
        })
        .collect()
}

#[test]
fn smartcore_models_are_searched_as_fitted_directly() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let data = small();
    let space = Space::new()
        .add("max_depth", grid([3, 8]))
        .add("criterion", grid(["Gini", "Entropy"]));
    let mut search = GridSearch::new(&space, 1, 0).unwrap();
    let result = cv::search::<Tree>(&data, &mut search, 3, 2, &mut Quiet).unwrap();
    assert_eq!(result.candidates.len(), 4);
    for c in &result.candidates {
        let depth = c.config.i64("max_depth").unwrap() as u16;
        let criterion = match c.config.str("criterion").unwrap() {
            "Gini" => SplitCriterion::Gini,
            _ => SplitCriterion::Entropy,
        };
        assert_eq!(
            c.fold_scores,
            smartcore_by_hand(&data, depth, criterion),
            "{}",
            c.config
        );
    }
    // The deeper trees do better on the digits.
    assert_eq!(result.best_params().unwrap().i64("max_depth").unwrap(), 8);
    assert!(result.best_score().unwrap() > 0.6);
    prism::shutdown();
}

#[test]
fn bad_smartcore_configurations_name_the_parameter() {
    let unknown = Tree::check(&Config::from_pairs([("depth", 3.into())])).unwrap_err();
    assert!(matches!(unknown, TuneError::Config(_)));
    assert!(unknown.to_string().contains("depth") && unknown.to_string().contains("max_depth"));
    let wrong = Tree::check(&Config::from_pairs([("criterion", 3.into())])).unwrap_err();
    assert!(
        wrong.to_string().contains("criterion") || wrong.to_string().contains("variant"),
        "{wrong}"
    );
    let fractional =
        Tree::check(&Config::from_pairs([("min_samples_split", 2.5.into())])).unwrap_err();
    assert!(
        fractional.to_string().contains("min_samples_split"),
        "{fractional}"
    );
    // A whole real is taken for an integer field (as quniform draws them), optional
    // ones (`max_depth: Option<u16>`) included.
    Tree::check(&Config::from_pairs([("min_samples_split", 4.0.into())])).unwrap();
    Tree::check(&Config::from_pairs([("max_depth", 6.0.into())])).unwrap();
}

#[cfg(feature = "linfa")]
mod linfa_models {
    use super::*;
    use linfa::prelude::{Fit, Predict};
    use linfa_trees::{DecisionTree, SplitQuality};
    use ndarray::{Array1, Array2};
    use prism_tune::adapters::Linfa;

    type LinfaTree = Linfa<DecisionTree<f64, usize>>;
    prism_tune::register_estimator!(LinfaTree);

    fn by_hand(data: &Labelled, depth: usize, quality: SplitQuality) -> Vec<f64> {
        let records = |d: &Labelled| {
            Array2::from_shape_vec((d.rows(), d.dims), d.x.iter().map(|v| *v as f64).collect())
                .unwrap()
        };
        stratified_folds(&data.y, 3)
            .iter()
            .map(|(train, test)| {
                let (tr, te) = (data.select(train), data.select(test));
                let dataset = linfa::DatasetBase::new(records(&tr), Array1::from(tr.y.clone()));
                let model = DecisionTree::params()
                    .max_depth(Some(depth))
                    .split_quality(quality)
                    .fit(&dataset)
                    .unwrap();
                accuracy(&model.predict(&records(&te)).to_vec(), &te.y)
            })
            .collect()
    }

    /// The threes and eights.
    fn threes_and_eights() -> Labelled {
        let d = digits();
        let rows: Vec<usize> = (0..d.rows())
            .filter(|r| [3, 8].contains(&d.y[*r]))
            .collect();
        d.select(&rows)
    }

    #[test]
    fn linfa_models_are_searched_as_fitted_directly() {
        prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
        let data = threes_and_eights();
        let space = Space::new()
            .add("max_depth", grid([1, 20]))
            .add("split_quality", grid(["gini", "entropy"]));
        let mut search = GridSearch::new(&space, 1, 0).unwrap();
        let result = cv::search::<LinfaTree>(&data, &mut search, 3, 2, &mut Quiet).unwrap();
        assert_eq!(result.candidates.len(), 4);
        // linfa-trees 0.8 gives a leaf whose classes tie the class a `HashMap` lists
        // last (random per map), so two fits of the same rows can differ by such
        // leaves: each fold's score may be a row or two away from the direct fit's.
        for c in &result.candidates {
            let depth = c.config.i64("max_depth").unwrap() as usize;
            let quality = match c.config.str("split_quality").unwrap() {
                "gini" => SplitQuality::Gini,
                _ => SplitQuality::Entropy,
            };
            let direct = by_hand(&data, depth, quality);
            for (got, want) in c.fold_scores.iter().zip(&direct) {
                assert!(
                    (got - want).abs() <= 2.5 / 119.0,
                    "{}: {:?} vs {direct:?}",
                    c.config,
                    c.fold_scores
                );
            }
        }
        // The parameters reach the model: a stump does far worse than a grown tree.
        let mean = |depth: i64| {
            let scores: Vec<f64> = result
                .candidates
                .iter()
                .filter(|c| c.config.i64("max_depth").unwrap() == depth)
                .map(|c| c.mean)
                .collect();
            scores.iter().sum::<f64>() / scores.len() as f64
        };
        assert!(mean(1) + 0.05 < mean(20), "{} vs {}", mean(1), mean(20));
        assert!(result.best_score().unwrap() > 0.9);
        let bad = LinfaTree::check(&Config::from_pairs([("min_impurity_decrease", 0.0.into())]));
        assert!(bad.is_err());
        let unknown = LinfaTree::check(&Config::from_pairs([("depth", 2.into())])).unwrap_err();
        assert!(unknown.to_string().contains("depth"), "{unknown}");
        prism::shutdown();
    }
}
