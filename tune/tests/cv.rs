//! The cross-validated search against a case worked out on paper (a threshold
//! estimator of ours on eight points), against the same SVC fits done by hand on a
//! small data set (every candidate's fold scores, their mean and standard deviation,
//! and the best), and with a searcher that hears each result before it suggests more.

use prism_tune::cv::{self, Candidate, Progress, Quiet};
use prism_tune::datasets::{digits, stratified_folds, Features, Labelled};
use prism_tune::svc::{Svc, SvcParams};
use prism_tune::{grid, Config, Estimator, GridSearch, Searcher, Space, TuneError};

/// Class 1 above a threshold: halfway between the largest training point of class 0
/// and the smallest of class 1, moved by the configuration's `shift`.
struct Threshold(f32);

impl Estimator for Threshold {
    fn fit(x: &Features, y: &[usize], config: &Config) -> Result<Self, TuneError> {
        let of = |class| {
            (0..y.len())
                .filter(move |i| y[*i] == class)
                .map(|i| x.row(i)[0])
        };
        let top0 = of(0).fold(f32::MIN, f32::max);
        let low1 = of(1).fold(f32::MAX, f32::min);
        Ok(Threshold((top0 + low1) / 2.0 + config.f64("shift")? as f32))
    }

    fn predict(&self, x: &Features) -> Result<Vec<usize>, TuneError> {
        Ok((0..x.rows())
            .map(|i| usize::from(x.row(i)[0] > self.0))
            .collect())
    }

    fn check(config: &Config) -> Result<(), TuneError> {
        config.f64("shift").map(|_| ())
    }
}

prism_tune::register_estimator!(Threshold);

/// Not registered.
struct Stray;

impl Estimator for Stray {
    fn fit(_: &Features, _: &[usize], _: &Config) -> Result<Self, TuneError> {
        Ok(Stray)
    }

    fn predict(&self, x: &Features) -> Result<Vec<usize>, TuneError> {
        Ok(vec![0; x.rows()])
    }
}

#[test]
fn a_search_worked_out_on_paper() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    // Eight points, four per class. StratifiedKFold(2) tests on rows 0, 1, 4, 5 and then
    // on rows 2, 3, 6, 7, so the thresholds learnt are 7.5 (from 2, 3 | 12, 13) and 5.5
    // (from 0, 1 | 10, 11) before the shift.
    let data = Labelled {
        x: vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0],
        dims: 1,
        y: vec![0, 0, 0, 0, 1, 1, 1, 1],
    };
    let space = Space::new().add("shift", grid([5.0, 0.0, 3.0]));
    let mut searcher = GridSearch::new(&space, 1, 0).unwrap();
    let result = cv::search::<Threshold>(&data, &mut searcher, 2, 2, &mut Quiet).unwrap();
    let got: Vec<(f64, Vec<f64>, f64, f64)> = result
        .candidates
        .iter()
        .map(|c| {
            (
                c.config.f64("shift").unwrap(),
                c.fold_scores.clone(),
                c.mean,
                c.std,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            // 12.5 misses 10 and 11; 10.5 gets all of 2, 3, 12, 13.
            (5.0, vec![0.5, 1.0], 0.75, 0.25),
            // 7.5 and 5.5 separate both test folds.
            (0.0, vec![1.0, 1.0], 1.0, 0.0),
            // 10.5 misses 10; 8.5 gets all.
            (3.0, vec![0.75, 1.0], 0.875, 0.125),
        ]
    );
    assert_eq!(result.best_params().unwrap().f64("shift").unwrap(), 0.0);

    // An estimator nobody registered is a clear error, not a failure in a task.
    let mut again = GridSearch::new(&space, 1, 0).unwrap();
    let err = cv::search::<Stray>(&data, &mut again, 2, 2, &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("register_estimator!"), "{err}");
    // A configuration the estimator refuses stops the search before any task runs.
    let mut bad = GridSearch::new(&Space::new().add("tilt", 1.0), 1, 0).unwrap();
    let err = cv::search::<Threshold>(&data, &mut bad, 2, 2, &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("shift"), "{err}");
    prism::shutdown();
}

/// Every 9th digit: 200 rows, still ten classes.
fn small() -> Labelled {
    let d = digits();
    let rows: Vec<usize> = (0..d.rows()).step_by(9).collect();
    d.select(&rows)
}

fn by_hand(data: &Labelled, config: &Config, k: usize) -> Vec<f64> {
    let params = SvcParams::from_config(config).unwrap();
    stratified_folds(&data.y, k)
        .iter()
        .map(|(train, test)| {
            let (tr, te) = (data.select(train), data.select(test));
            let svc = Svc::fit(&Features::new(&tr.x, 64).unwrap(), &tr.y, &params).unwrap();
            svc.score(&Features::new(&te.x, 64).unwrap(), &te.y)
        })
        .collect()
}

#[test]
fn every_candidate_is_scored_as_by_hand_and_the_best_is_the_highest_mean() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let data = small();
    let space = Space::new()
        .add("C", grid([1.0, 10.0]))
        .add("gamma", grid([1e-4, 1e-3, 1e-2]));
    let mut search = GridSearch::new(&space, 1, 0).unwrap();
    let result = cv::search::<Svc>(&data, &mut search, 4, 3, &mut Quiet).unwrap();
    assert_eq!(result.candidates.len(), 6);
    for c in &result.candidates {
        let scores = by_hand(&data, &c.config, 4);
        assert_eq!(c.fold_scores, scores, "{}", c.config);
        let mean = scores.iter().sum::<f64>() / 4.0;
        let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
        assert!((c.mean - mean).abs() < 1e-12 && (c.std - std).abs() < 1e-12);
    }
    let top = result
        .candidates
        .iter()
        .map(|c| c.mean)
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(result.best_score(), Some(top));
    assert_eq!(result.best().map(|b| b.mean), Some(top));
    prism::shutdown();
}

/// A searcher that suggests the next candidate only after hearing the previous one.
struct OneByOne {
    left: Vec<Config>,
    heard: usize,
    suggested: usize,
}

impl Searcher for OneByOne {
    fn suggest(&mut self) -> Option<Config> {
        assert!(
            self.suggested <= self.heard + 1,
            "asked for more than one candidate in flight"
        );
        self.suggested += 1;
        self.left.pop()
    }

    fn observe(&mut self, _config: &Config, _score: f64) {
        self.heard += 1;
    }
}

struct Count(usize);

impl Progress for Count {
    fn candidate_done(&mut self, done: usize, _latest: &Candidate, best: &Candidate) {
        assert_eq!(done, self.0 + 1);
        assert!(best.mean >= 0.0);
        self.0 = done;
    }
}

#[test]
fn candidates_are_asked_for_as_results_come_in() {
    prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
    let data = small();
    let configs: Vec<Config> = [1e-4, 1e-3, 1e-2]
        .iter()
        .map(|g| Config::from_pairs([("C", 10.0.into()), ("gamma", (*g).into())]))
        .collect();
    let mut searcher = OneByOne {
        left: configs,
        heard: 0,
        suggested: 0,
    };
    let mut progress = Count(0);
    let result = cv::search::<Svc>(&data, &mut searcher, 3, 1, &mut progress).unwrap();
    assert_eq!(
        (result.candidates.len(), searcher.heard, progress.0),
        (3, 3, 3)
    );
    // A configuration the SVC cannot use is an error before any task runs.
    let mut bad = GridSearch::new(&Space::new().add("C", 1.0), 1, 0).unwrap();
    let err = cv::search::<Svc>(&data, &mut bad, 3, 1, &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("gamma"), "{err}");
    prism::shutdown();
}
