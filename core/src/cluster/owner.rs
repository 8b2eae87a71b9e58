//! What a process owns in a cluster: the tasks it submitted, kept until their results
//! arrive so that they can be sent again when a worker dies; the lineage of the objects
//! it owns that live in other processes, so that an object lost with its node is made
//! again by running its task again (recursively through lost arguments, within
//! `max_retries`); and the announcement that an object was freed, so that its copies go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cluster::objects::{Location, Objects, Payload};
use crate::cluster::wire::{Msg, Outbox};
use crate::error::{Error, Result};
use crate::object::{AnyValue, Codec, Encoded, ObjectId, RefCount, Store, Waiter};
use crate::task::{EncodedArg, TaskSpec};

/// What a process owns in a cluster, shared by its client and the connections'
/// readers: the tasks it submitted (to send them again), how to rebuild the objects it
/// owns (their lineage), and its object server.
pub(crate) struct Owner {
    pub job: u32,
    pub outbox: Outbox,
    pub store: Arc<Store>,
    pub objects: Arc<Objects>,
    pub books: Mutex<Books>,
}

/// The tasks this process submitted, kept to run them again.
#[derive(Default)]
pub(crate) struct Books {
    /// Submitted, without a result yet: sent again if their worker dies.
    inflight: HashMap<ObjectId, Submitted>,
    /// Finished, their result kept in another process: run again if it is lost.
    lineage: HashMap<ObjectId, Submitted>,
}

/// A submitted task, the attempts made, and the objects its arguments refer to (kept
/// alive as long as the task may run again).
struct Submitted {
    spec: Arc<TaskSpec>,
    attempts: u32,
    _deps: Vec<Arc<RefCount>>,
}

impl Owner {
    /// Records a task sent to the cluster; `deps` are the objects its arguments refer to.
    pub fn track(&self, spec: &Arc<TaskSpec>, deps: Vec<Arc<RefCount>>) {
        self.books().inflight.insert(
            spec.task_id,
            Submitted {
                spec: spec.clone(),
                attempts: 0,
                _deps: deps,
            },
        );
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A task's result arrived.
    pub fn done(self: &Arc<Self>, id: ObjectId, result: Result<Payload>) {
        match &result {
            Err(Error::WorkerCrashed { .. }) => {
                if let Some((spec, attempt)) = self.retry(id) {
                    tracing::info!(task = %id, attempt, "retrying after a worker died");
                    let _ = self.outbox.send(Msg::SubmitTask {
                        job: self.job,
                        spec,
                    });
                    return;
                }
            }
            Err(Error::ObjectLost(dep))
                if *dep != id && self.books().inflight.contains_key(&id) =>
            {
                return self.rebuild_then_rerun(id, *dep);
            }
            _ => {}
        }
        let submitted = self.books().inflight.remove(&id);
        match result {
            Ok(Payload::Inline(bytes)) => {
                let size = bytes.len() as u64;
                self.store
                    .complete(id, Arc::new(Encoded(bytes)), size, Codec::encoded());
            }
            Ok(Payload::Held(loc)) => {
                // Its freeing is announced, so that the copy kept for it is dropped.
                self.store.mark_exported(id);
                if let Some(s) = submitted {
                    self.books().lineage.insert(id, s);
                }
                if !self.store.complete(id, Arc::new(loc), 0, Codec::encoded()) {
                    // Freed before its result arrived.
                    self.freed(id);
                }
            }
            Err(e) => {
                self.store.fail(id, e);
            }
        }
    }

    /// The task and its next attempt number, if its worker died and it has retries left.
    fn retry(&self, id: ObjectId) -> Option<(Arc<TaskSpec>, u32)> {
        let mut books = self.books();
        let s = books.inflight.get_mut(&id)?;
        if s.attempts >= s.spec.options.max_retries {
            return None;
        }
        s.attempts += 1;
        Some((s.spec.clone(), s.attempts))
    }

    /// Task `id` could not read its argument `dep`, which was lost: rebuild `dep`, then
    /// run the task again with the argument's new place.
    fn rebuild_then_rerun(self: &Arc<Self>, id: ObjectId, dep: ObjectId) {
        if let Err(e) = self.recover(dep) {
            self.books().inflight.remove(&id);
            self.store.fail(id, e);
            return;
        }
        let me = self.clone();
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rerun = move |failure: Option<&Error>| {
            if fired.swap(true, std::sync::atomic::Ordering::AcqRel) {
                return;
            }
            if let Some(e) = failure {
                me.books().inflight.remove(&id);
                me.store.fail(id, e.clone());
                return;
            }
            let spec = {
                let mut books = me.books();
                let Some(s) = books.inflight.get_mut(&id) else {
                    return;
                };
                s.spec = Arc::new(me.relocated(&s.spec));
                s.spec.clone()
            };
            let _ = me.outbox.send(Msg::SubmitTask { job: me.job, spec });
        };
        let rerun = Arc::new(rerun);
        match self
            .store
            .poll_value(dep, Some(Waiter::Dependent(rerun.clone())))
        {
            None => {}
            Some(Ok(_)) => rerun(None),
            Some(Err(e)) => rerun(Some(&e)),
        }
    }

    /// Starts rebuilding the lost object `id` by running the task that made it again.
    /// `Ok` if it is being rebuilt (or was never lost); [`Error::ObjectLost`] if it has
    /// no lineage here or its task has no retries left.
    fn recover(&self, id: ObjectId) -> Result<()> {
        match self.store.poll_value(id, None) {
            None => return Ok(()),
            Some(Err(e)) => return Err(e),
            Some(Ok(v)) if !v.is::<Location>() => return Ok(()),
            Some(Ok(_)) => {}
        }
        let mut books = self.books();
        let Some(s) = books.lineage.get(&id) else {
            return Err(Error::ObjectLost(id));
        };
        if s.attempts >= s.spec.options.max_retries {
            return Err(Error::ObjectLost(id));
        }
        if !self.store.reset(id) {
            return Ok(());
        }
        let Some(mut s) = books.lineage.remove(&id) else {
            return Err(Error::ObjectLost(id));
        };
        s.attempts += 1;
        s.spec = Arc::new(self.relocated(&s.spec));
        let spec = s.spec.clone();
        tracing::info!(object = %id, attempt = s.attempts, "rebuilding a lost object from its lineage");
        books.inflight.insert(id, s);
        drop(books);
        let _ = self.outbox.send(Msg::SubmitTask {
            job: self.job,
            spec,
        });
        Ok(())
    }

    /// `spec` with each reference argument pointing where its object is now.
    fn relocated(&self, spec: &TaskSpec) -> TaskSpec {
        let mut spec = spec.clone();
        for arg in &mut spec.args {
            if let EncodedArg::Ref { id, at } = arg {
                if let Some(Ok(v)) = self.store.poll_value(*id, None) {
                    *at = match v.downcast_ref::<Location>() {
                        Some(loc) => loc.at.clone(),
                        None => self.objects.address().to_string(),
                    };
                }
            }
        }
        spec
    }

    /// The value of `id`, whose store entry is a [`Location`]: pulled from there (and
    /// kept in the store in its place), or rebuilt from its lineage if it was lost.
    pub fn materialize(&self, id: ObjectId) -> Result<AnyValue> {
        loop {
            let v = match self.store.poll_value(id, None) {
                Some(v) => v?,
                None => {
                    crate::api::wait_settled(&self.store, &[id], None);
                    continue;
                }
            };
            let Some(loc) = v.downcast_ref::<Location>() else {
                return Ok(v);
            };
            match self.objects.pull(id, &loc.at) {
                Ok(bytes) => {
                    let size = bytes.len() as u64;
                    let value: AnyValue = Arc::new(Encoded(bytes));
                    self.store.replace(id, value.clone(), size);
                    return Ok(value);
                }
                Err(Error::ObjectLost(_)) => self.recover(id)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// An object whose copies live elsewhere was freed here: forget how to rebuild it and
    /// tell the nodes to drop the copies.
    pub fn freed(&self, id: ObjectId) {
        let lineage = self.books().lineage.remove(&id);
        drop(lineage);
        let _ = self.outbox.send(Msg::FreeObjects {
            job: self.job,
            ids: vec![id],
        });
    }
}
