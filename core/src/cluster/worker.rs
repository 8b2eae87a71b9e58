//! Worker mode: a job's own executable, started by a node, running that job's tasks.
//!
//! `prism::init()` checks the environment first; in a process started as a worker it
//! never returns: it connects to the node, runs every task the node sends on the
//! process's pool of threads (found by name in the compile-time registry), sends the
//! results back, and exits when the node goes away.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::cluster::client::Client;
use crate::cluster::node::{ENV_JOB, ENV_NODE, ENV_TOKEN};
use crate::cluster::wire::{Msg, Outbox};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::object::ObjectId;
use crate::runtime;
use crate::sched::{Demand, Job};
use crate::task::TaskSpec;

/// Whether this process was started as a worker.
pub fn is_worker() -> bool {
    std::env::var_os(ENV_NODE).is_some()
}

/// In a worker process, serves tasks until the node goes away and then exits; anywhere
/// else, returns at once. `prism::init()` calls it first; a test harness that starts a
/// cluster before calling `init` calls it before anything else.
pub fn enter_if_worker() {
    if !is_worker() {
        return;
    }
    if let Err(e) = serve() {
        eprintln!("prism worker: {e}");
        std::process::exit(2);
    }
    // The connection's reader exits the process when the node goes away.
    loop {
        std::thread::park();
    }
}

fn serve() -> Result<()> {
    let node =
        std::env::var(ENV_NODE).map_err(|_| Error::Config(format!("{ENV_NODE} is not set")))?;
    let token =
        std::env::var(ENV_TOKEN).map_err(|_| Error::Config(format!("{ENV_TOKEN} is not set")))?;
    let job: u32 = std::env::var(ENV_JOB)
        .ok()
        .and_then(|j| j.parse().ok())
        .ok_or_else(|| Error::Config(format!("{ENV_JOB} is not a job id")))?;
    let rt = runtime::start_local(Config::default(), crate::cluster::session::random_u32())?;
    let pipeline = Arc::new(Pipeline {
        pool: rt.clone(),
        state: Mutex::new(PipelineState::default()),
    });
    let p = pipeline.clone();
    let run = Box::new(
        move |spec: TaskSpec, after: Option<(ObjectId, u32)>, reply: Outbox| {
            p.arrived(spec, after, reply);
        },
    );
    let client = Arc::new(Client::connect_worker(
        &node,
        &token,
        job,
        rt.store.clone(),
        run,
    )?);
    let hook_client = client.clone();
    crate::sched::set_block_hook(Box::new(move |waiting| {
        let Some(task_id) = runtime::running().and_then(|r| r.task_id) else {
            return false;
        };
        // Node and worker must agree on which tasks wait. Waiting: the node hears of it
        // before anything the released successor sends. Resuming: the worker marks it
        // before the node, told, can queue a new successor behind the task.
        if waiting {
            hook_client.send(Msg::Blocked { task_id });
            pipeline.blocked(task_id, true);
        } else {
            pipeline.blocked(task_id, false);
            hook_client.send(Msg::Unblocked { task_id });
        }
        true
    }));
    runtime::attach_client(client);
    Ok(())
}

#[derive(Default)]
struct PipelineState {
    /// Tasks started, or queued to start right after another.
    running: HashSet<ObjectId>,
    blocked: HashSet<ObjectId>,
    /// How many times each running task has started waiting.
    waits: HashMap<ObjectId, u32>,
    /// Tasks to run right after the task they are keyed by.
    waiting: HashMap<ObjectId, (TaskSpec, Outbox)>,
}

/// The tasks of this worker and the ones queued right behind them: a successor runs on
/// the same thread as soon as its predecessor ends, or at once if the predecessor waits.
struct Pipeline {
    pool: Arc<runtime::Runtime>,
    state: Mutex<PipelineState>,
}

impl Pipeline {
    fn lock(&self) -> std::sync::MutexGuard<'_, PipelineState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arrived(self: &Arc<Self>, spec: TaskSpec, after: Option<(ObjectId, u32)>, reply: Outbox) {
        let mut st = self.lock();
        if let Some((pred, waits)) = after {
            // The node decided with all of pred's waits in view, and pred runs: queue
            // behind it. Otherwise pred waited since (the node let this task go when it
            // heard) or ended: start now.
            let seen = st.waits.get(&pred).copied().unwrap_or(0);
            if st.running.contains(&pred) && seen == waits && !st.blocked.contains(&pred) {
                // Queued counts as running: the node counts it so, and a task sent to run
                // after this one must wait for it, not take its absence for its end.
                st.running.insert(spec.task_id);
                if let Some((earlier, r)) = st.waiting.insert(pred, (spec, reply)) {
                    tracing::error!(task = %earlier.task_id, "two successors queued behind one task");
                    st.running.insert(earlier.task_id);
                    drop(st);
                    self.start(earlier, r);
                }
                return;
            }
        }
        st.running.insert(spec.task_id);
        drop(st);
        self.start(spec, reply);
    }

    fn blocked(self: &Arc<Self>, task: ObjectId, waiting: bool) {
        let mut st = self.lock();
        if !waiting {
            st.blocked.remove(&task);
            return;
        }
        st.blocked.insert(task);
        *st.waits.entry(task).or_insert(0) += 1;
        if let Some((next, reply)) = st.waiting.remove(&task) {
            st.running.insert(next.task_id);
            drop(st);
            self.start(next, reply);
        }
    }

    fn start(self: &Arc<Self>, spec: TaskSpec, reply: Outbox) {
        let me = self.clone();
        // The node only sends what its resources allow, so the pool runs it at once.
        self.pool.sched.submit(Job {
            demand: Demand::default(),
            keep: false,
            run: Box::new(move |grant| me.run_chain(spec, reply, grant)),
        });
    }

    fn run_chain(&self, mut spec: TaskSpec, mut reply: Outbox, grant: &crate::sched::Grant) {
        loop {
            let running = runtime::Running {
                task_id: Some(spec.task_id),
                actor_id: None,
                function: crate::task::lookup(&spec.function).map_or("?", |f| f.name),
                grant: grant.clone(),
            };
            let result = runtime::with_running(running, || {
                spec.execute(|id: ObjectId| Err(Error::ObjectLost(id)))
            });
            let _ = reply.send(Msg::TaskDone {
                task_id: spec.task_id,
                result,
            });
            let mut st = self.lock();
            st.running.remove(&spec.task_id);
            st.blocked.remove(&spec.task_id);
            st.waits.remove(&spec.task_id);
            match st.waiting.remove(&spec.task_id) {
                Some((next, next_reply)) => {
                    st.running.insert(next.task_id);
                    (spec, reply) = (next, next_reply);
                }
                None => return,
            }
        }
    }
}
