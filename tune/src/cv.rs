//! Cross-validated search, scikit-learn's `RandomizedSearchCV` use case: candidates drawn
//! from a space, each scored by the mean accuracy of k stratified folds, every
//! (candidate, fold) fit a prism task on data put in the object store once. On the
//! embedded runtime the tasks share that one copy; on a cluster each worker fetches it
//! once.
//!
//! The estimator today is the RBF [`Svc`](crate::svc::Svc); its configuration names
//! `C` and `gamma` (numbers), and optionally `tol` (default 1e-3) and `class_weight`
//! (`"none"` or `"balanced"`).

use std::time::{Duration, Instant};

use prism::ObjectRef;

use crate::datasets::{stratified_folds, Labelled};
use crate::search::Searcher;
use crate::space::Config;
use crate::svc::{ClassWeight, Features, Svc, SvcParams};
use crate::TuneError;

/// One candidate's cross-validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
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
    /// Every candidate, in the order drawn.
    pub candidates: Vec<Candidate>,
    /// The wall time of the search.
    pub elapsed: Duration,
}

impl CvResult {
    /// The candidate with the best mean score (the first of equals, as scikit-learn).
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

/// The SVC parameters a configuration names.
pub fn svc_params(config: &Config) -> Result<SvcParams, TuneError> {
    let class_weight = match config.get("class_weight").and_then(|p| p.as_str()) {
        None | Some("none") => ClassWeight::None,
        Some("balanced") => ClassWeight::Balanced,
        Some(other) => {
            return Err(TuneError::Config(format!(
                "class_weight must be \"none\" or \"balanced\", not {other:?}"
            )))
        }
    };
    Ok(SvcParams {
        c: config.f64("C")?,
        gamma: config.f64("gamma")?,
        tol: config.get("tol").and_then(|p| p.as_f64()).unwrap_or(1e-3),
        class_weight,
    })
}

/// One (candidate, fold) fit: train on the fold's training rows, score on its test rows.
/// A task: `data` and `folds` are shared from the object store, not copied.
#[prism::remote]
pub fn svc_fold(
    data: &Labelled,
    folds: &[(Vec<usize>, Vec<usize>)],
    config: Config,
    fold: usize,
) -> Result<f64, TuneError> {
    let params = svc_params(&config)?;
    let (train, test) = &folds[fold];
    let (tr, te) = (data.select(train), data.select(test));
    let svc = Svc::fit(&Features::new(&tr.x, tr.dims)?, &tr.y, &params)?;
    Ok(svc.score(&Features::new(&te.x, te.dims)?, &te.y))
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

/// Searches the RBF SVC's hyperparameters on `data` by `k`-fold stratified
/// cross-validation (scikit-learn's folds), with the candidates `searcher` suggests,
/// every fold a prism task. Candidates are asked for as room frees up (at most
/// `in_flight` being scored at once, their folds running in parallel), so a
/// model-based searcher hears each result before it suggests the next candidates.
/// Needs a running prism runtime.
pub fn search_svc(
    data: &Labelled,
    searcher: &mut dyn Searcher,
    k: usize,
    in_flight: usize,
    progress: &mut dyn Progress,
) -> Result<CvResult, TuneError> {
    let started = Instant::now();
    let folds = stratified_folds(&data.y, k);
    let data_ref = prism::put(data.clone());
    let folds_ref = prism::put(folds);
    type Fold = ObjectRef<Result<f64, TuneError>>;
    // Candidates being scored: their configuration and their folds' results.
    let mut running: Vec<(Config, Vec<Fold>)> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut best: Option<Candidate> = None;
    let mut exhausted = false;
    loop {
        while !exhausted && running.len() < in_flight.max(1) {
            let Some(config) = searcher.suggest() else {
                exhausted = true;
                break;
            };
            svc_params(&config)?;
            let refs = (0..k)
                .map(|f| svc_fold::remote(&data_ref, &folds_ref, config.clone(), f))
                .collect();
            running.push((config, refs));
        }
        if running.is_empty() {
            break;
        }
        // Wait for one candidate to have all its folds scored.
        let finished = loop {
            if let Some(i) = running.iter().position(|(_, refs)| all_ready(refs)) {
                break i;
            }
            let pending: Vec<Fold> = running
                .iter()
                .flat_map(|(_, refs)| refs.iter())
                .filter(|r| !all_ready(std::slice::from_ref(*r)))
                .cloned()
                .collect();
            prism::wait(&pending, 1, None).map_err(runtime)?;
        };
        let (config, refs) = running.swap_remove(finished);
        let scores = prism::get_all(&refs)
            .map_err(runtime)?
            .into_iter()
            .collect::<Result<Vec<f64>, TuneError>>()?;
        let mean = scores.iter().sum::<f64>() / k as f64;
        let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / k as f64).sqrt();
        let c = Candidate {
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
