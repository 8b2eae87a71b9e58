//! A run's directory: what the run is (`trainer.json`), its history so far
//! (`history.json`) and its kept checkpoints (`checkpoint_000007/`, each with the
//! model's bytes and the metrics of its epoch).
//!
//! Everything is written atomically: into a temporary name first, then renamed, so a
//! run killed mid-write leaves the previous state whole. Checkpoints are written on a
//! thread of their own, so the trainer goes on draining reports (and the workers go on
//! training) while one is on its way to disk.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use super::{Checkpoint, Metrics};
use crate::{Result, TrainError};

const MANIFEST: &str = "trainer.json";
const HISTORY: &str = "history.json";
const CHECKPOINT_PREFIX: &str = "checkpoint_";
const CHECKPOINT_DATA: &str = "checkpoint.bin";
const CHECKPOINT_META: &str = "metrics.json";

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io(format!("{what} {}: {e}", path.display()))
}

/// Writes `bytes` to `path` by way of a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot rename into", path, e))
}

/// The directory of the checkpoint made at `iteration`.
pub(super) fn checkpoint_dir(dir: &Path, iteration: usize) -> PathBuf {
    dir.join(format!("{CHECKPOINT_PREFIX}{iteration:06}"))
}

/// The metrics file of a checkpoint.
#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    iteration: usize,
    metrics: Metrics,
}

/// What the writer thread is asked to do, in order.
enum Write {
    Checkpoint(Checkpoint),
    Remove(PathBuf),
    History(Vec<Metrics>),
}

/// The run directory's writer.
pub(super) struct RunStore {
    dir: PathBuf,
    send: Option<Sender<Write>>,
    thread: Option<JoinHandle<()>>,
    failure: Arc<Mutex<Option<TrainError>>>,
}

impl RunStore {
    /// Opens `dir` (made if missing) and writes the run's manifest into it.
    pub(super) fn create(dir: &Path, manifest: &serde_json::Value) -> Result<RunStore> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot make the run directory", dir, e))?;
        let text = serde_json::to_vec_pretty(manifest)
            .map_err(|e| TrainError::Config(format!("the run's manifest: {e}")))?;
        write_atomically(&dir.join(MANIFEST), &text)?;
        let (send, receive) = channel::<Write>();
        let failure = Arc::new(Mutex::new(None));
        let (root, failed) = (dir.to_path_buf(), failure.clone());
        let thread = std::thread::Builder::new()
            .name("prism-train-store".into())
            .spawn(move || {
                for write in receive {
                    let done = match write {
                        Write::Checkpoint(c) => write_checkpoint(&root, &c),
                        Write::Remove(path) => std::fs::remove_dir_all(&path)
                            .or_else(|e| match e.kind() {
                                std::io::ErrorKind::NotFound => Ok(()),
                                _ => Err(e),
                            })
                            .map_err(|e| io("cannot remove", &path, e)),
                        Write::History(history) => serde_json::to_vec(&history)
                            .map_err(|e| TrainError::Io(format!("the history: {e}")))
                            .and_then(|b| write_atomically(&root.join(HISTORY), &b)),
                    };
                    if let Err(e) = done {
                        failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            })
            .map_err(|e| TrainError::Io(format!("cannot start the checkpoint writer: {e}")))?;
        Ok(RunStore {
            dir: dir.to_path_buf(),
            send: Some(send),
            thread: Some(thread),
            failure,
        })
    }

    /// The run directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn send(&self, write: Write) {
        if let Some(send) = &self.send {
            // The thread only ends when `send` is dropped.
            let _ = send.send(write);
        }
    }

    /// Writes `checkpoint` (in the background).
    pub(super) fn checkpoint(&self, checkpoint: Checkpoint) {
        self.send(Write::Checkpoint(checkpoint));
    }

    /// Removes the checkpoint directory `path` (after the writes sent before).
    pub(super) fn remove(&self, path: PathBuf) {
        self.send(Write::Remove(path));
    }

    /// Writes the history so far.
    pub(super) fn history(&self, history: &[Metrics]) {
        self.send(Write::History(history.to_vec()));
    }

    /// Waits for every write sent so far; the first that failed, if any did.
    pub(super) fn finish(mut self) -> Result<()> {
        self.close();
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        failure.map_or(Ok(()), Err)
    }
}

impl RunStore {
    /// Ends the writer once it has done what it was sent.
    fn close(&mut self) {
        self.send = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_checkpoint(root: &Path, c: &Checkpoint) -> Result<()> {
    let done = checkpoint_dir(root, c.iteration);
    let tmp = root.join(format!(".{CHECKPOINT_PREFIX}{:06}.tmp", c.iteration));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io("cannot make", &tmp, e))?;
    std::fs::write(tmp.join(CHECKPOINT_DATA), &c.bytes).map_err(|e| io("cannot write", &tmp, e))?;
    let meta = serde_json::to_vec_pretty(&CheckpointMeta {
        iteration: c.iteration,
        metrics: c.metrics.clone(),
    })
    .map_err(|e| TrainError::Io(format!("a checkpoint's metrics: {e}")))?;
    std::fs::write(tmp.join(CHECKPOINT_META), meta).map_err(|e| io("cannot write", &tmp, e))?;
    // A checkpoint of the same iteration from an earlier attempt makes way.
    let _ = std::fs::remove_dir_all(&done);
    std::fs::rename(&tmp, &done).map_err(|e| io("cannot rename into", &done, e))
}

/// A run directory read back: its manifest, history and checkpoints (oldest first).
pub(super) struct Saved {
    pub(super) manifest: serde_json::Value,
    pub(super) history: Vec<Metrics>,
    pub(super) checkpoints: Vec<Checkpoint>,
}

/// Reads the run directory `dir`. Half-written checkpoints (a run killed while
/// writing one) are left out.
pub(super) fn read(dir: &Path) -> Result<Saved> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path)
        .map_err(|e| io("not a run directory (no manifest): cannot read", &path, e))?;
    let manifest = serde_json::from_slice(&text).map_err(|e| io("cannot parse", &path, e))?;
    let path = dir.join(HISTORY);
    let history = match std::fs::read(&path) {
        Ok(text) => serde_json::from_slice(&text).map_err(|e| io("cannot parse", &path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("cannot read", &path, e)),
    };
    let mut checkpoints = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(CHECKPOINT_PREFIX) {
            continue;
        }
        let path = entry.path();
        let meta =
            std::fs::read(path.join(CHECKPOINT_META)).map_err(|e| io("cannot read", &path, e))?;
        let meta: CheckpointMeta =
            serde_json::from_slice(&meta).map_err(|e| io("cannot parse", &path, e))?;
        let bytes =
            std::fs::read(path.join(CHECKPOINT_DATA)).map_err(|e| io("cannot read", &path, e))?;
        checkpoints.push(Checkpoint {
            iteration: meta.iteration,
            metrics: meta.metrics,
            bytes,
            path: Some(path),
        });
    }
    checkpoints.sort_by_key(|c| c.iteration);
    Ok(Saved {
        manifest,
        history,
        checkpoints,
    })
}
