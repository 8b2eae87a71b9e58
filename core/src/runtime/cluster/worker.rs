//! The worker side of a cluster process: the tasks a node sends this worker, run on
//! the process's pool of threads (found by name in the compile-time registry), and the
//! actors it hosts.
//!
//! A task can be queued behind another of this worker (pipelining): it runs on its
//! predecessor's thread as soon as the predecessor ends, or when the node releases it
//! (its predecessor waits). The node decides, the worker follows, so the two never
//! disagree on which tasks hold resources.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::direct::Reply;
use super::host::Host;
use super::link::Link;
use super::objects::Objects;
use crate::id::ObjectId;
use crate::sched::{Demand, Grant, Pool, Work};
use crate::state;
use crate::sync::lock;
use crate::task::TaskSpec;
use crate::wire::Msg;

use super::super::context::{running_task, with_running, Running};

#[derive(Default)]
struct PipelineState {
    /// Tasks started, or queued to start right after another.
    running: HashSet<ObjectId>,
    /// Tasks to run right after the task they are keyed by.
    waiting: HashMap<ObjectId, (TaskSpec, Reply)>,
    /// Tasks a driver sent on a lease, with the lease.
    leased: HashMap<ObjectId, ObjectId>,
}

/// What a worker process runs for its node: tasks, and the actors it hosts.
pub(crate) struct Worker {
    pool: Arc<Pool>,
    objects: Arc<Objects>,
    link: Arc<Link>,
    pub host: Arc<Host>,
    state: Mutex<PipelineState>,
}

impl Worker {
    pub fn new(pool: Arc<Pool>, objects: Arc<Objects>, link: Arc<Link>) -> Arc<Worker> {
        Arc::new(Worker {
            host: Host::new(pool.clone(), objects.clone(), link.clone()),
            pool,
            objects,
            link,
            state: Mutex::new(PipelineState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PipelineState> {
        lock(&self.state)
    }

    /// Takes what a node, or a caller connected straight here, sends this worker.
    pub fn deliver(self: &Arc<Self>, msg: Msg, reply: Reply) {
        match msg {
            Msg::RunTask {
                spec,
                after,
                lease,
                gpu_ids,
            } => self.arrived(spec, after, lease, gpu_ids.unwrap_or_default(), reply),
            Msg::Release { task_id } => self.release(task_id),
            m @ (Msg::CreateActor { .. } | Msg::ToActor { .. }) => self.host.deliver(m, reply),
            other => tracing::warn!("a worker was sent {}", other.name()),
        }
    }

    /// Runs `f`, a wait in a task of this worker, with the task's CPUs lent meanwhile:
    /// the node holds them, so the node is told.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(task) = running_task() else {
            return f();
        };
        // A task on a lease lends the lease's CPUs: the node knows the lease, not it.
        let task_id = self.lock().leased.get(&task).copied().unwrap_or(task);
        let _ = self.link.send(Msg::Blocked { task_id });
        let out = f();
        let _ = self.link.send(Msg::Unblocked { task_id });
        out
    }

    fn arrived(
        self: &Arc<Self>,
        spec: TaskSpec,
        after: Option<ObjectId>,
        lease: Option<ObjectId>,
        gpu_ids: Vec<usize>,
        reply: Reply,
    ) {
        let mut st = self.lock();
        st.running.insert(spec.task_id);
        if let Some(lease) = lease {
            st.leased.insert(spec.task_id, lease);
        }
        if let Some(pred) = after.filter(|p| st.running.contains(p)) {
            // It runs on its predecessor's resources, GPUs included.
            if let Some((earlier, r)) = st.waiting.insert(pred, (spec, reply)) {
                tracing::error!(task = %earlier.task_id, "two tasks queued behind one");
                drop(st);
                self.start(earlier, r, Vec::new());
            }
            return;
        }
        drop(st);
        self.start(spec, reply, gpu_ids);
    }

    /// The node let a queued task go: start it now unless it already started.
    fn release(self: &Arc<Self>, task: ObjectId) {
        let mut st = self.lock();
        let pred = st
            .waiting
            .iter()
            .find(|(_, (spec, _))| spec.task_id == task)
            .map(|(p, _)| *p);
        let Some((spec, reply)) = pred.and_then(|p| st.waiting.remove(&p)) else {
            return;
        };
        drop(st);
        // Released early, it runs on CPUs its predecessor lends: no GPUs of its own.
        self.start(spec, reply, Vec::new());
    }

    fn start(self: &Arc<Self>, spec: TaskSpec, reply: Reply, gpu_ids: Vec<usize>) {
        let me = self.clone();
        // The node only sends what its resources allow, so the pool runs it at once.
        self.pool.submit(Work {
            demand: Demand::default(),
            keep: false,
            run: Box::new(move |_| me.run_chain(spec, reply, gpu_ids)),
            abandon: None,
        });
    }

    /// Runs a task, then each task queued right behind it (on its resources, so with
    /// its GPUs), until none is.
    fn run_chain(&self, mut spec: TaskSpec, mut reply: Reply, gpu_ids: Vec<usize>) {
        loop {
            let result = match spec.function() {
                Ok(f) => {
                    // What the node holds for the task, as the task sees it.
                    let grant = Grant {
                        demand: Demand::of(&spec.options).unwrap_or_default(),
                        gpu_ids: gpu_ids.clone(),
                    };
                    let running = Running {
                        task_id: Some(spec.task_id),
                        actor_id: None,
                        function: f.name,
                        grant,
                    };
                    let (id, job) = (spec.task_id, self.link.job);
                    let started_us = state::started(id, job, f.name);
                    let result = with_running(running, || {
                        spec.run_as(f, |arg, param| self.objects.arg(arg, param))
                            .and_then(|out| self.objects.keep(spec.task_id, out))
                    });
                    let error = result.as_ref().err().map(ToString::to_string);
                    state::ended(id, job, f.name, started_us, error);
                    result
                }
                Err(e) => Err(e),
            };
            reply.send(Msg::TaskDone {
                task_id: spec.task_id,
                result,
            });
            let mut st = self.lock();
            st.running.remove(&spec.task_id);
            st.leased.remove(&spec.task_id);
            match st.waiting.remove(&spec.task_id) {
                Some((next, next_reply)) => (spec, reply) = (next, next_reply),
                None => return,
            }
        }
    }
}
