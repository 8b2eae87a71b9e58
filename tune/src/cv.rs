//! Cross-validated search, scikit-learn's `RandomizedSearchCV` use case: candidates drawn
//! from a space, each scored by the mean accuracy of k stratified folds, every
//! (candidate, fold) fit a prism task on data put in the object store once. On the
//! embedded runtime the tasks share that one copy; on a cluster each worker fetches it
//! once.
//!
//! Any registered [`Estimator`] can be searched: the RBF [`Svc`](crate::svc::Svc) of
//! this crate, a model of yours, or smartcore and linfa models through the adapters of
//! [`crate::adapters`].
//!
//! ```
//! use prism_tune::cv::{self, Quiet};
//! use prism_tune::svc::Svc;
//! use prism_tune::{datasets, loguniform, RandomSearch, Space};
//!
//! prism::init().unwrap();
//! let digits = datasets::digits().select(&(0..400).collect::<Vec<_>>());
//! let space = Space::new()
//!     .add("C", loguniform(1.0, 100.0))
//!     .add("gamma", loguniform(1e-4, 1e-2));
//! let mut search = RandomSearch::sklearn(&space, 4, 0).unwrap();
//! let result = cv::search::<Svc>(&digits, &mut search, 3, 2, &mut Quiet).unwrap();
//! assert_eq!(result.candidates.len(), 4);
//! assert!(result.best_score().unwrap() > 0.9);
//! prism::shutdown();
//! ```

use std::time::{Duration, Instant};

use prism::ObjectRef;

use crate::datasets::{stratified_folds, Labelled};
use crate::estimator::{self, Estimator};
use crate::search::Searcher;
use crate::space::Config;
use crate::TuneError;

/// One candidate's cross-validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its place in the order the searcher suggested the candidates, from 0.
    pub index: usize,
    /// Its configuration.
    pub config: Config,
    /// The accuracy on each held-out fold.
    pub fold_scores: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// Their standard deviation (over the folds, as scikit-learn's `std_test_score`).
    pub std: f64,
}

/// The outcome of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct CvResult {
    /// Every candidate, in the order the searcher suggested them (not the order they
    /// finished).
    pub candidates: Vec<Candidate>,
    /// The wall time of the search.
    pub elapsed: Duration,
}

impl CvResult {
    /// The candidate with the best mean score (the first suggested of equals, as
    /// scikit-learn's `best_index_`).
    pub fn best(&self) -> Option<&Candidate> {
        self.candidates
            .iter()
            .fold(None, |best: Option<&Candidate>, c| match best {
                Some(b) if b.mean >= c.mean => Some(b),
                _ => Some(c),
            })
    }

    /// The best candidate's configuration.
    pub fn best_params(&self) -> Option<&Config> {
        self.best().map(|c| &c.config)
    }

    /// The best mean score.
    pub fn best_score(&self) -> Option<f64> {
        self.best().map(|c| c.mean)
    }
}

/// One (candidate, fold) fit of the estimator registered as `estimator`: train on the
/// fold's training rows, score on its test rows. A task: `data` and `folds` are shared
/// from the object store, not copied.
#[prism::remote]
pub fn cv_fold(
    estimator: String,
    data: &Labelled,
    folds: &[(Vec<usize>, Vec<usize>)],
    config: Config,
    fold: usize,
) -> Result<f64, TuneError> {
    (estimator::lookup(&estimator)?.score_fold)(data, folds, &config, fold)
}

/// What a search reports as candidates finish.
pub trait Progress {
    /// `done` candidates have all their folds scored; `latest` is the one that just
    /// finished, `best` the best so far.
    fn candidate_done(&mut self, done: usize, latest: &Candidate, best: &Candidate);
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn candidate_done(&mut self, _: usize, _: &Candidate, _: &Candidate) {}
}

/// Searches the hyperparameters of the estimator `E` on `data` by `k`-fold stratified
/// cross-validation (scikit-learn's folds), with the candidates `searcher` suggests,
/// every fold a prism task. Candidates are asked for as room frees up (at most
/// `in_flight` being scored at once, their folds running in parallel), so a
/// model-based searcher hears each result before it suggests the next candidates.
/// `E` must be registered ([`register_estimator!`](crate::register_estimator)). Needs a
/// running prism runtime.
pub fn search<E: Estimator>(
    data: &Labelled,
    searcher: &mut dyn Searcher,
    k: usize,
    in_flight: usize,
    progress: &mut dyn Progress,
) -> Result<CvResult, TuneError> {
    let started = Instant::now();
    let name = std::any::type_name::<E>();
    estimator::lookup(name)?;
    let folds = stratified_folds(&data.y, k);
    let data_ref = prism::put(data.clone());
    let folds_ref = prism::put(folds);
    type Fold = ObjectRef<Result<f64, TuneError>>;
    // Candidates being scored: their index, configuration and folds' results.
    let mut running: Vec<(usize, Config, Vec<Fold>)> = Vec::new();
    let mut suggested = 0;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut best: Option<Candidate> = None;
    let mut exhausted = false;
    loop {
        while !exhausted && running.len() < in_flight.max(1) {
            let Some(config) = searcher.suggest() else {
                exhausted = true;
                break;
            };
            E::check(&config)?;
            let refs = (0..k)
                .map(|f| {
                    cv_fold::remote(name.to_string(), &data_ref, &folds_ref, config.clone(), f)
                })
                .collect();
            running.push((suggested, config, refs));
            suggested += 1;
        }
        if running.is_empty() {
            break;
        }
        // Wait for one candidate to have all its folds scored.
        let finished = loop {
            if let Some(i) = running.iter().position(|(_, _, refs)| all_ready(refs)) {
                break i;
            }
            let pending: Vec<Fold> = running
                .iter()
                .flat_map(|(_, _, refs)| refs.iter())
                .filter(|r| !all_ready(std::slice::from_ref(*r)))
                .cloned()
                .collect();
            prism::wait(&pending, 1, None).map_err(runtime)?;
        };
        let (index, config, refs) = running.swap_remove(finished);
        let scores = prism::get_all(&refs)
            .map_err(runtime)?
            .into_iter()
            .collect::<Result<Vec<f64>, TuneError>>()?;
        let mean = scores.iter().sum::<f64>() / k as f64;
        let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / k as f64).sqrt();
        let c = Candidate {
            index,
            config,
            fold_scores: scores,
            mean,
            std,
        };
        searcher.observe(&c.config, c.mean);
        if best.as_ref().is_none_or(|b| c.mean > b.mean) {
            best = Some(c.clone());
        }
        candidates.push(c);
        if let (Some(b), Some(latest)) = (&best, candidates.last()) {
            progress.candidate_done(candidates.len(), latest, b);
        }
    }
    candidates.sort_by_key(|c| c.index);
    Ok(CvResult {
        candidates,
        elapsed: started.elapsed(),
    })
}

/// Whether every one of `refs` is final (without waiting).
fn all_ready<T>(refs: &[ObjectRef<T>]) -> bool {
    prism::wait(refs, refs.len(), Some(Duration::ZERO))
        .is_ok_and(|(ready, _)| ready.len() == refs.len())
}

fn runtime(e: prism::Error) -> TuneError {
    TuneError::Runtime(e.to_string())
}
