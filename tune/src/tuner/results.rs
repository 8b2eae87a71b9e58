//! How the trials of a run ended: each [`Trial`] with its configuration, reports and
//! [`Status`], gathered in a [`ResultGrid`] that finds the best and exports CSV and JSON.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use super::Metrics;
use crate::schedule::Mode;
use crate::space::Config;

/// How a trial ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// It ran to its end.
    Completed,
    /// The scheduler stopped it.
    Stopped,
    /// It failed, with why.
    Failed(String),
}

impl std::fmt::Display for Status {
    /// `completed`, `stopped`, or `failed: ` and why (as the journal and exports write it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Completed => write!(f, "completed"),
            Status::Stopped => write!(f, "stopped"),
            Status::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// One trial's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Its number, in the order started.
    pub id: usize,
    /// Its configuration.
    pub config: Config,
    /// Its reports, one per iteration.
    pub history: Vec<Metrics>,
    /// How it ended.
    pub status: Status,
    /// The latest checkpoint it reported, if any (the model of the best trial, say).
    pub checkpoint: Option<super::Checkpoint>,
}

impl Trial {
    /// Its last report of `metric`.
    pub fn last(&self, metric: &str) -> Option<f64> {
        self.history.last().and_then(|m| m.get(metric).copied())
    }
}

/// Every trial of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultGrid {
    /// The trials, by number.
    pub trials: Vec<Trial>,
    /// The metric that ranks them.
    pub metric: String,
    /// Which way it is better.
    pub mode: Mode,
    /// The run's wall time.
    pub elapsed: Duration,
}

impl ResultGrid {
    /// The trial whose last report of the metric is best.
    pub fn best(&self) -> Option<&Trial> {
        self.best_by(&self.metric, self.mode)
    }

    /// The trial whose last report of `metric` is best for `mode`.
    pub fn best_by(&self, metric: &str, mode: Mode) -> Option<&Trial> {
        self.trials
            .iter()
            .filter_map(|t| t.last(metric).map(|v| (t, mode.signed(v))))
            .fold(None, |best: Option<(&Trial, f64)>, (t, v)| match best {
                Some((_, b)) if b >= v => best,
                _ => Some((t, v)),
            })
            .map(|(t, _)| t)
    }

    /// Iterations run over all trials.
    pub fn iterations(&self) -> usize {
        self.trials.iter().map(|t| t.history.len()).sum()
    }

    /// One row per trial: its number, status, iterations, parameters and last metrics.
    pub fn to_csv(&self) -> String {
        let params: BTreeSet<&String> =
            self.trials.iter().flat_map(|t| t.config.0.keys()).collect();
        let metrics: BTreeSet<&String> = self
            .trials
            .iter()
            .flat_map(|t| t.history.last().into_iter().flat_map(|m| m.keys()))
            .collect();
        let mut out = String::from("trial,status,iterations");
        for p in &params {
            let _ = write!(out, ",{}", csv_field(p));
        }
        for m in &metrics {
            let _ = write!(out, ",{}", csv_field(m));
        }
        out.push('\n');
        for t in &self.trials {
            let status = t.status.to_string();
            let _ = write!(out, "{},{},{}", t.id, csv_field(&status), t.history.len());
            for p in &params {
                let v = t.config.get(p).map(|v| v.to_string()).unwrap_or_default();
                let _ = write!(out, ",{}", csv_field(&v));
            }
            for m in &metrics {
                let v = t.last(m).map(|v| v.to_string()).unwrap_or_default();
                let _ = write!(out, ",{v}");
            }
            out.push('\n');
        }
        out
    }

    /// Every trial with its whole history, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "metric": self.metric,
            "mode": if self.mode == Mode::Max { "max" } else { "min" },
            "elapsed_s": self.elapsed.as_secs_f64(),
            "trials": self.trials.iter().map(|t| serde_json::json!({
                "id": t.id,
                "config": t.config.to_json(),
                "status": t.status.to_string(),
                "history": t.history,
                "checkpoint_iteration": t.checkpoint.as_ref().map(|c| c.iteration),
            })).collect::<Vec<_>>(),
        })
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
