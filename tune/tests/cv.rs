//! The cross-validated search against the same fits done by hand: every candidate's fold
//! scores, their mean and standard deviation, and the best, on a small data set; and a
//! searcher that hears each result before it suggests more.

use prism_tune::cv::{search_svc, svc_params, Candidate, Progress, Quiet};
use prism_tune::datasets::{digits, stratified_folds, Labelled};
use prism_tune::svc::{Features, Svc};
use prism_tune::{grid, Config, GridSearch, Searcher, Space};

/// Every 9th digit: 200 rows, still ten classes.
fn small() -> Labelled {
    let d = digits();
    let rows: Vec<usize> = (0..d.rows()).step_by(9).collect();
    d.select(&rows)
}

fn by_hand(data: &Labelled, config: &Config, k: usize) -> Vec<f64> {
    let params = svc_params(config).unwrap();
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
    let result = search_svc(&data, &mut search, 4, 3, &mut Quiet).unwrap();
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
    let result = search_svc(&data, &mut searcher, 3, 1, &mut progress).unwrap();
    assert_eq!(
        (result.candidates.len(), searcher.heard, progress.0),
        (3, 3, 3)
    );
    // A configuration the SVC cannot use is an error before any task runs.
    let mut bad = GridSearch::new(&Space::new().add("C", 1.0), 1, 0).unwrap();
    let err = search_svc(&data, &mut bad, 3, 1, &mut Quiet).unwrap_err();
    assert!(err.to_string().contains("gamma"), "{err}");
    prism::shutdown();
}
