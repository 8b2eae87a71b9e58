//! An experiment's directory: the journal of its trials, written as they start and
//! finish, so that a run interrupted (Ctrl-C, a killed process, a lost machine) resumes
//! where it stopped without running its finished trials again.
//!
//! The journal is `trials.jsonl`, one JSON object per line: `{"started": id, "config":
//! ...}` when a trial starts, `{"checkpoint": id, "iteration": n, "history": [...]}` when
//! a checkpoint it reported after `n` iterations was written to
//! `checkpoints/trial-<id>-<n>.bin` (the file first, renamed into place; the trial's
//! older checkpoint files are removed after the line), and `{"finished": id, "status":
//! ..., "history": [...]}` when it ends, appended and flushed at once. A line cut short
//! by a crash is ignored, and so is a checkpoint file no line names.
//!
//! Beside it, `searcher.json` holds the searcher's state (see
//! [`Searcher::state`](crate::Searcher::state)) after each line, with how many trials
//! it had suggested and which results it had heard: written to a new file renamed over
//! the old, so it is always whole.
//!
//! On resume the tuner takes the searcher's state back (or, for a searcher that keeps
//! none, asks a new one for as many configurations as were started and tells it the
//! finished ones' results, in the order of the trials), runs the trials that started
//! but never finished again with their recorded configurations (from their latest
//! checkpoint, with their reports up to it), feeds the finished ones' results to the
//! scheduler, and goes on with new trials.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::space::Config;
use crate::tuner::{Checkpoint, Metrics, Status};
use crate::TuneError;

/// The searcher's state, beside the journal.
const SEARCHER: &str = "searcher.json";

/// Where trial `id`'s checkpoint after `iteration` iterations is kept.
fn checkpoint_file(dir: &Path, id: usize, iteration: usize) -> PathBuf {
    dir.join("checkpoints")
        .join(format!("trial-{id}-{iteration}.bin"))
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Started {
        started: usize,
        config: Config,
    },
    Finished {
        finished: usize,
        status: String,
        history: Vec<Metrics>,
    },
    Checkpointed {
        checkpoint: usize,
        iteration: usize,
        history: Vec<Metrics>,
    },
}

/// A trial as the journal recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Its configuration.
    pub config: Config,
    /// Its reports and how it ended, if it finished.
    pub outcome: Option<(Vec<Metrics>, Status)>,
    /// Its latest checkpoint written, with its reports up to it.
    pub checkpoint: Option<(Checkpoint, Vec<Metrics>)>,
}

/// A searcher's state as an experiment directory keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSearcher {
    /// How many configurations it had suggested (the trials numbered below this).
    pub suggested: usize,
    /// The trials whose results it had heard.
    pub observed: BTreeSet<usize>,
    /// Its [`Searcher::state`](crate::Searcher::state).
    pub state: serde_json::Value,
}

/// The journal of an experiment directory.
pub struct Journal {
    /// The experiment directory.
    dir: PathBuf,
    path: PathBuf,
    file: std::fs::File,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> TuneError {
    TuneError::Runtime(format!("{what} {}: {e}", path.display()))
}

fn parse_status(text: &str) -> Status {
    match text {
        "completed" => Status::Completed,
        "stopped" => Status::Stopped,
        other => Status::Failed(other.strip_prefix("failed: ").unwrap_or(other).to_string()),
    }
}

impl Journal {
    /// Opens (creating it if needed) the experiment directory `dir`, and returns the
    /// trials its journal recorded, by number, and the searcher's saved state if any.
    #[allow(clippy::type_complexity)]
    pub fn open(
        dir: &Path,
    ) -> Result<(Journal, BTreeMap<usize, Recorded>, Option<SavedSearcher>), TuneError> {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let path = dir.join("trials.jsonl");
        let mut trials: BTreeMap<usize, Recorded> = BTreeMap::new();
        // Each trial's latest checkpoint line (the files of earlier ones are gone).
        let mut latest: BTreeMap<usize, (usize, Vec<Metrics>)> = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                // A line cut short by a crash does not parse: skip it.
                match serde_json::from_str::<Line>(line) {
                    Ok(Line::Started { started, config }) => {
                        trials.insert(
                            started,
                            Recorded {
                                config,
                                outcome: None,
                                checkpoint: None,
                            },
                        );
                    }
                    Ok(Line::Finished {
                        finished,
                        status,
                        history,
                    }) => {
                        if let Some(t) = trials.get_mut(&finished) {
                            t.outcome = Some((history, parse_status(&status)));
                        }
                    }
                    Ok(Line::Checkpointed {
                        checkpoint,
                        iteration,
                        history,
                    }) => {
                        latest.insert(checkpoint, (iteration, history));
                    }
                    Err(_) => {}
                }
            }
        }
        for (id, (iteration, history)) in latest {
            let Some(t) = trials.get_mut(&id) else {
                continue;
            };
            let file = checkpoint_file(dir, id, iteration);
            match std::fs::read(&file) {
                Ok(bytes) => t.checkpoint = Some((Checkpoint { iteration, bytes }, history)),
                // Removed by hand, say: the trial runs again from its start.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("reading the checkpoint", &file, e)),
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("opening", &path, e))?;
        let searcher = std::fs::read_to_string(dir.join(SEARCHER))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                path,
                file,
            },
            trials,
            searcher,
        ))
    }

    /// Writes trial `id`'s checkpoint (a new file renamed over the old), then records
    /// it with the trial's reports up to it.
    pub fn checkpoint(
        &mut self,
        id: usize,
        checkpoint: &Checkpoint,
        history: &[Metrics],
    ) -> Result<(), TuneError> {
        let file = checkpoint_file(&self.dir, id, checkpoint.iteration);
        let part = file.with_extension("part");
        let checkpoints = self.dir.join("checkpoints");
        std::fs::create_dir_all(&checkpoints)
            .and_then(|()| {
                let mut f = std::fs::File::create(&part)?;
                f.write_all(&checkpoint.bytes)?;
                // On disk before the journal names it, whatever happens to the machine.
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&part, &file))
            .map_err(|e| io("writing", &file, e))?;
        self.write(&Line::Checkpointed {
            checkpoint: id,
            iteration: checkpoint.iteration,
            history: history.to_vec(),
        })?;
        // The trial's older checkpoints: no longer named by its latest line.
        let prefix = format!("trial-{id}-");
        if let Ok(entries) = std::fs::read_dir(&checkpoints) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&prefix) && e.path() != file {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// Writes the searcher's state (whole: a new file renamed over the old).
    pub fn save_searcher(&self, saved: &SavedSearcher) -> Result<(), TuneError> {
        let dir = &self.dir;
        let (file, part) = (dir.join(SEARCHER), dir.join("searcher.json.part"));
        let text = serde_json::to_string(saved).map_err(|e| TuneError::Runtime(e.to_string()))?;
        std::fs::write(&part, text)
            .and_then(|()| std::fs::rename(&part, &file))
            .map_err(|e| io("writing", &file, e))
    }

    fn write(&mut self, line: &Line) -> Result<(), TuneError> {
        let mut text =
            serde_json::to_string(line).map_err(|e| TuneError::Runtime(e.to_string()))?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| io("writing", &self.path, e))
    }

    /// Records that trial `id` started with `config`.
    pub fn started(&mut self, id: usize, config: &Config) -> Result<(), TuneError> {
        self.write(&Line::Started {
            started: id,
            config: config.clone(),
        })
    }

    /// Records how trial `id` ended.
    pub fn finished(
        &mut self,
        id: usize,
        history: &[Metrics],
        status: &Status,
    ) -> Result<(), TuneError> {
        self.write(&Line::Finished {
            finished: id,
            status: status.to_string(),
            history: history.to_vec(),
        })
    }
}
