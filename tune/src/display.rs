//! What a run shows while it goes: on a terminal, a live table redrawn in place (trial
//! counts by status, CPUs in use, the best so far, and one row per trial with its
//! parameters, iterations and latest metric, as Ray Tune's); elsewhere (a pipe, a log
//! file, a test), one plain line per trial that finishes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use crate::schedule::Mode;
use crate::space::Config;
use crate::tuner::{Metrics, Status, Trial};

/// How a run is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Display {
    /// A live table on a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Always plain lines.
    Lines,
    /// Nothing.
    Quiet,
}

/// The most trial rows the table shows (the latest ones).
const ROWS: usize = 20;

/// The state of a run as shown.
pub(crate) struct Board {
    metric: String,
    mode: Mode,
    table: bool,
    quiet: bool,
    /// Running trials: configuration, iterations and latest metrics so far.
    running: BTreeMap<usize, (Config, usize, Option<f64>)>,
    done: BTreeMap<usize, (Config, usize, Option<f64>, Status)>,
    drawn_lines: usize,
}

impl Board {
    pub fn new(metric: &str, mode: Mode, display: Display) -> Board {
        Board {
            metric: metric.to_string(),
            mode,
            table: display == Display::Auto && std::io::stdout().is_terminal(),
            quiet: display == Display::Quiet,
            running: BTreeMap::new(),
            done: BTreeMap::new(),
            drawn_lines: 0,
        }
    }

    /// Whether the table is live (redrawn while trials run).
    pub fn live(&self) -> bool {
        self.table && !self.quiet
    }

    pub fn started(&mut self, id: usize, config: &Config) {
        self.running.insert(id, (config.clone(), 0, None));
        self.draw();
    }

    /// The latest reports of running trials.
    pub fn progress(&mut self, latest: &BTreeMap<usize, (usize, Option<Metrics>)>) {
        for (id, (iterations, metrics)) in latest {
            if let Some(r) = self.running.get_mut(id) {
                r.1 = *iterations;
                r.2 = metrics.as_ref().and_then(|m| m.get(&self.metric).copied());
            }
        }
        self.draw();
    }

    pub fn finished(&mut self, trial: &Trial) {
        self.running.remove(&trial.id);
        let last = trial.last(&self.metric);
        self.done.insert(
            trial.id,
            (
                trial.config.clone(),
                trial.history.len(),
                last,
                trial.status.clone(),
            ),
        );
        if self.quiet {
            return;
        }
        if self.table {
            return self.draw();
        }
        let best = self.best().map_or(String::new(), |(id, v)| {
            format!("; best so far {v:.4} (trial {id})")
        });
        let value = last.map_or("-".to_string(), |v| format!("{v:.4}"));
        // A closed pipe is not the run's failure: the line is dropped.
        let _ = writeln!(
            std::io::stdout().lock(),
            "trial {} {} after {} iterations: {}={value} {}{best}",
            trial.id,
            status_word(&trial.status),
            trial.history.len(),
            self.metric,
            trial.config
        );
    }

    fn best(&self) -> Option<(usize, f64)> {
        self.done
            .iter()
            .filter_map(|(id, (_, _, v, s))| match (v, s) {
                (Some(v), Status::Completed | Status::Stopped) => Some((*id, *v)),
                _ => None,
            })
            .max_by(|a, b| self.mode.signed(a.1).total_cmp(&self.mode.signed(b.1)))
    }

    /// Redraws the table in place (a terminal only).
    fn draw(&mut self) {
        if !self.table || self.quiet {
            return;
        }
        let count = |f: fn(&Status) -> bool| self.done.values().filter(|d| f(&d.3)).count();
        // A table line is no reason to fail a run: a cluster that cannot say shows 0.
        let cpus = |r: prism::Result<std::collections::BTreeMap<String, f64>>| {
            r.ok().and_then(|m| m.get("CPU").copied()).unwrap_or(0.0)
        };
        let total = cpus(prism::cluster_resources());
        let free = cpus(prism::available_resources());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== trials: {} running, {} completed, {} stopped, {} failed | CPUs {}/{} in use | best {}",
            self.running.len(),
            count(|s| *s == Status::Completed),
            count(|s| *s == Status::Stopped),
            count(|s| matches!(s, Status::Failed(_))),
            total - free,
            total,
            self.best()
                .map_or("-".to_string(), |(id, v)| format!("{v:.4} (trial {id})"))
        );
        let _ = writeln!(
            out,
            "{:>5}  {:<10} {:>5}  {:>10}  params",
            "trial", "status", "iter", self.metric
        );
        let rows: Vec<String> = self
            .done
            .iter()
            .map(|(id, (c, n, v, s))| row(*id, status_word(s), *n, *v, c))
            .chain(
                self.running
                    .iter()
                    .map(|(id, (c, n, v))| row(*id, "running", *n, *v, c)),
            )
            .collect();
        let skip = rows.len().saturating_sub(ROWS);
        for r in &rows[skip..] {
            out.push_str(r);
        }
        let mut stdout = std::io::stdout().lock();
        // Back to the top of the previous drawing, and clear below it.
        if self.drawn_lines > 0 {
            let _ = write!(stdout, "\x1b[{}F\x1b[J", self.drawn_lines);
        }
        let _ = write!(stdout, "{out}");
        let _ = stdout.flush();
        self.drawn_lines = out.lines().count();
    }
}

fn row(id: usize, status: &str, iterations: usize, value: Option<f64>, config: &Config) -> String {
    let value = value.map_or("-".to_string(), |v| format!("{v:.4}"));
    format!("{id:>5}  {status:<10} {iterations:>5}  {value:>10}  {config}\n")
}

fn status_word(s: &Status) -> &'static str {
    match s {
        Status::Completed => "completed",
        Status::Stopped => "stopped",
        Status::Failed(_) => "failed",
    }
}
