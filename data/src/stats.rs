//! What a run did, stage by stage ([`Dataset::stats`](crate::Dataset::stats)), and the
//! progress shown while it runs: a bar per stage on a terminal (indicatif), a plain
//! line per finished stage otherwise (for runs longer than a second).

use std::fmt;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one stage of a run did. Rows and bytes are those of its outputs (a stage ending
/// in a count reports the rows counted, and no bytes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageStats {
    /// The stage's operators, as errors name them (`read -> filter(x > 0)`).
    pub name: String,
    /// Tasks (or actor calls) run, one per block.
    pub blocks: u64,
    /// Rows out.
    pub rows: u64,
    /// Bytes of the Arrow buffers of the blocks out.
    pub bytes: u64,
    /// The time the tasks ran, summed over them (measured in each task).
    pub task_time: Duration,
    /// From the first task submitted to the last output taken.
    pub wall_time: Duration,
    /// The most bytes of output blocks in flight at once: made by tasks the executor
    /// had submitted and not yet handed on. What the window and the memory budget bound.
    pub peak_bytes: u64,
}

/// What a run of a dataset did: one entry per stage, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// The stages.
    pub stages: Vec<StageStats>,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.stages.iter().enumerate() {
            writeln!(
                f,
                "stage {i} {}: {} blocks, {} rows, {} out; tasks {:.3} s, wall {:.3} s, peak {} in flight",
                s.name,
                s.blocks,
                s.rows,
                human_bytes(s.bytes),
                s.task_time.as_secs_f64(),
                s.wall_time.as_secs_f64(),
                human_bytes(s.peak_bytes)
            )?;
        }
        Ok(())
    }
}

/// `bytes` in B, KiB, MiB or GiB.
pub(crate) fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// How progress is shown: `PRISM_DATA_PROGRESS` = `bars`, `lines`, `off` or `auto` (the
/// default: bars when stderr is a terminal, lines otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Off,
}

fn mode() -> Mode {
    match std::env::var("PRISM_DATA_PROGRESS").as_deref() {
        Ok("bars") => Mode::Bars,
        Ok("lines") => Mode::Lines,
        Ok("off") => Mode::Off,
        _ if std::io::stderr().is_terminal() => Mode::Bars,
        _ => Mode::Lines,
    }
}

/// A run's statistics as they are gathered, shared by its stages' streams.
#[derive(Clone)]
pub(crate) struct Recorder {
    stats: Arc<Mutex<Stats>>,
    bars: Option<indicatif::MultiProgress>,
    started: Instant,
    mode: Mode,
}

impl Recorder {
    /// A recorder writing into `slot` (emptied first).
    pub(crate) fn new(slot: Arc<Mutex<Stats>>) -> Recorder {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Stats::default();
        let mode = mode();
        Recorder {
            stats: slot,
            bars: (mode == Mode::Bars).then(indicatif::MultiProgress::new),
            started: Instant::now(),
            mode,
        }
    }

    /// A new stage named `name` with `total` blocks if known.
    pub(crate) fn stage(&self, name: &str, total: Option<u64>) -> StageRecorder {
        let index = {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.stages.push(StageStats {
                name: name.to_string(),
                ..StageStats::default()
            });
            s.stages.len() - 1
        };
        let bar = self.bars.as_ref().map(|m| {
            let bar = match total {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let template = if total.is_some() {
                "{prefix} [{bar:30}] {pos}/{len} blocks {msg} ({elapsed})"
            } else {
                "{prefix} {spinner} {pos} blocks {msg} ({elapsed})"
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            // A bar stays on one line: a long stage name is cut.
            let shown = if name.chars().count() > 48 {
                format!("{}...", name.chars().take(45).collect::<String>())
            } else {
                name.to_string()
            };
            bar.set_prefix(format!("stage {index} {shown}"));
            // Short runs draw nothing: the bar shows after half a second.
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            m.add(bar)
        });
        StageRecorder {
            run: self.clone(),
            index,
            bar,
            shown: false,
            first: None,
            bytes: Vec::new(),
            windows: Vec::new(),
            finished: false,
        }
    }
}

/// One stage's share of a [`Recorder`].
pub(crate) struct StageRecorder {
    run: Recorder,
    index: usize,
    bar: Option<indicatif::ProgressBar>,
    shown: bool,
    first: Option<Instant>,
    /// Output bytes of each task, in order (outputs are taken in order).
    bytes: Vec<u64>,
    /// The tasks in flight (from, to) when each output was taken.
    windows: Vec<(usize, usize)>,
    finished: bool,
}

impl StageRecorder {
    /// A task was submitted.
    pub(crate) fn submitted(&mut self) {
        self.first.get_or_insert_with(Instant::now);
    }

    /// The next output was taken, with `rows` and `bytes`, its task having run for
    /// `task_time`, while tasks up to `submitted` were in flight.
    pub(crate) fn taken(&mut self, submitted: usize, rows: u64, bytes: u64, task_time: Duration) {
        self.windows.push((self.bytes.len(), submitted));
        self.bytes.push(bytes);
        let (blocks, all_rows) = {
            let mut s = self.run.stats.lock().unwrap_or_else(|e| e.into_inner());
            let st = &mut s.stages[self.index];
            st.blocks += 1;
            st.rows += rows;
            st.bytes += bytes;
            st.task_time += task_time;
            (st.blocks, st.rows)
        };
        if let Some(bar) = &self.bar {
            if !self.shown && self.run.started.elapsed() > Duration::from_millis(500) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                self.shown = true;
            }
            bar.set_position(blocks);
            bar.set_message(format!("{all_rows} rows"));
        }
    }

    /// The stage ended (its last output taken, or the stream dropped).
    pub(crate) fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        // The peak over the windows, now that every output's bytes are known.
        let peak = self
            .windows
            .iter()
            .map(|&(from, to)| {
                self.bytes[from.min(self.bytes.len())..to.min(self.bytes.len())]
                    .iter()
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0);
        let line = {
            let mut s = self.run.stats.lock().unwrap_or_else(|e| e.into_inner());
            let st = &mut s.stages[self.index];
            st.wall_time = self.first.map_or(Duration::ZERO, |t| t.elapsed());
            st.peak_bytes = peak;
            format!(
                "prism-data: stage {} {}: {} blocks, {} rows, {} in {:.2} s",
                self.index,
                st.name,
                st.blocks,
                st.rows,
                human_bytes(st.bytes),
                st.wall_time.as_secs_f64()
            )
        };
        if let Some(bar) = &self.bar {
            bar.finish();
        }
        if self.run.mode == Mode::Lines && self.run.started.elapsed() > Duration::from_secs(1) {
            eprintln!("{line}");
        }
    }
}

impl Drop for StageRecorder {
    fn drop(&mut self) {
        self.finish();
    }
}
