//! A run's record: rank 0's history, the checkpoints kept under the run's policy,
//! and the line printed per epoch.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::{Mode, Progress, RunConfig};
use super::store::{self, RunStore};
use super::{Metrics, Report};

/// A checkpoint of a run: the bytes rank 0 reported at the end of an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The epochs reported when it was made, itself included.
    pub iteration: usize,
    /// The metrics of its epoch.
    pub metrics: Metrics,
    /// The loop's bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// Its directory, in a run with a run directory.
    pub path: Option<PathBuf>,
}

/// What a finished run leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainResult {
    /// Rank 0's metrics, one entry per epoch.
    pub history: Vec<Metrics>,
    /// The latest checkpoint.
    pub checkpoint: Option<Checkpoint>,
    /// The checkpoints kept, oldest first.
    pub checkpoints: Vec<Checkpoint>,
    /// The restarts the run took.
    pub failures: u32,
    /// The run directory, if it had one.
    pub dir: Option<PathBuf>,
    /// How long `fit` took.
    pub elapsed: Duration,
    pub(super) score: Option<(String, Mode)>,
}

impl TrainResult {
    /// The last epoch's metrics (empty if the loop reported nothing).
    pub fn metrics(&self) -> Metrics {
        self.history.last().cloned().unwrap_or_default()
    }

    /// The best kept checkpoint by the run's score, or the latest without one.
    pub fn best_checkpoint(&self) -> Option<&Checkpoint> {
        match &self.score {
            Some(score) => self.checkpoints.iter().max_by(|a, b| rank(a, b, score)),
            None => self.checkpoint.as_ref(),
        }
    }
}

/// Orders checkpoints by a score, better last; one without the metric is worst.
fn rank(a: &Checkpoint, b: &Checkpoint, (name, mode): &(String, Mode)) -> std::cmp::Ordering {
    let value = |c: &Checkpoint| {
        c.metrics.get(name).map(|v| match mode {
            Mode::Min => -v,
            Mode::Max => *v,
        })
    };
    match (value(a), value(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y).then(a.iteration.cmp(&b.iteration)),
        (x, y) => x
            .is_some()
            .cmp(&y.is_some())
            .then(a.iteration.cmp(&b.iteration)),
    }
}

/// The run's record: rank 0's history and the checkpoints kept.
pub(super) struct Book {
    pub(super) history: Vec<Metrics>,
    /// Oldest first: the latest is the last.
    pub(super) kept: Vec<Checkpoint>,
    num_to_keep: Option<usize>,
    score: Option<(String, Mode)>,
}

impl Book {
    pub(super) fn new(run: &RunConfig, restored: Option<(Vec<Metrics>, Vec<Checkpoint>)>) -> Book {
        let (history, kept) = restored.unwrap_or_default();
        let mut book = Book {
            history,
            kept,
            num_to_keep: run.num_to_keep,
            score: run.score.clone(),
        };
        book.rewind(None);
        book
    }

    /// The latest checkpoint: the one the next attempt resumes from.
    pub(super) fn latest(&self) -> Option<&Checkpoint> {
        self.kept.last()
    }

    /// The epochs the next attempt starts after.
    pub(super) fn start(&self) -> usize {
        self.latest().map_or(0, |c| c.iteration)
    }

    /// Cuts the history back to the latest checkpoint, for an attempt resuming from it.
    pub(super) fn rewind(&mut self, store: Option<&RunStore>) {
        self.history.truncate(self.start());
        if let Some(s) = store {
            s.history(&self.history);
        }
    }

    pub(super) fn record(&mut self, report: Report, store: Option<&RunStore>) {
        self.history.push(report.metrics.clone());
        if let Some(s) = store {
            s.history(&self.history);
        }
        let Some(bytes) = report.checkpoint else {
            return;
        };
        let checkpoint = Checkpoint {
            iteration: report.iteration,
            metrics: report.metrics,
            bytes: bytes.into_vec(),
            path: store.map(|s| store::checkpoint_dir(s.dir(), report.iteration)),
        };
        if let Some(s) = store {
            s.checkpoint(checkpoint.clone());
        }
        // A checkpoint of an epoch seen before (by an attempt that failed after it)
        // gives way to the new one.
        self.kept.retain(|c| c.iteration != checkpoint.iteration);
        self.kept.push(checkpoint);
        self.prune(store);
    }

    /// Keeps `num_to_keep` checkpoints besides the latest.
    fn prune(&mut self, store: Option<&RunStore>) {
        let Some(keep) = self.num_to_keep else {
            return;
        };
        let latest = self.start();
        let mut others: Vec<Checkpoint> = self
            .kept
            .iter()
            .filter(|c| c.iteration != latest)
            .cloned()
            .collect();
        match &self.score {
            Some(score) => others.sort_by(|a, b| rank(b, a, score)),
            None => others.sort_by_key(|c| std::cmp::Reverse(c.iteration)),
        }
        for gone in others.iter().skip(keep) {
            if let (Some(s), Some(path)) = (store, gone.path.clone()) {
                s.remove(path);
            }
        }
        let stay: Vec<usize> = others.iter().take(keep).map(|c| c.iteration).collect();
        self.kept
            .retain(|c| c.iteration == latest || stay.contains(&c.iteration));
    }
}

/// The per-epoch progress line.
pub(super) struct Line {
    on: bool,
    last: Instant,
}

impl Line {
    pub(super) fn new(progress: Progress) -> Line {
        let on = match progress {
            Progress::Auto => std::io::stderr().is_terminal(),
            Progress::Always => true,
            Progress::Never => false,
        };
        Line {
            on,
            last: Instant::now(),
        }
    }

    pub(super) fn epoch(&mut self, report: &Report) {
        if !self.on {
            return;
        }
        let took = self.last.elapsed();
        self.last = Instant::now();
        let metrics: Vec<String> = report
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        let saved = if report.checkpoint.is_some() {
            "  [checkpoint]"
        } else {
            ""
        };
        eprintln!(
            "epoch {:>4}  {}  ({:.2} s){saved}",
            report.iteration,
            metrics.join("  "),
            took.as_secs_f64()
        );
    }
}
