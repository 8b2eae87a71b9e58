//! Worker mode: a job's own executable, started by a node, running that job's tasks.
//!
//! `prism::init()` checks the environment first; in a process started as a worker it
//! never returns: it connects to the node, runs every task the node sends on the
//! process's pool of threads (found by name in the compile-time registry), sends the
//! results back, and exits when the node goes away.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::cluster::client::{Client, Delivery};
use crate::cluster::direct::Reply;
use crate::cluster::node::{ENV_JOB, ENV_NODE, ENV_SPILL, ENV_STORE, ENV_TOKEN};
use crate::cluster::wire::Msg;
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
    let mut config = Config::default();
    if let Some(cap) = std::env::var(ENV_STORE).ok().and_then(|v| v.parse().ok()) {
        config = config.object_store_memory(cap);
    }
    if let Some(dir) = std::env::var_os(ENV_SPILL) {
        config = config.spill_dir(dir);
    }
    let rt = runtime::start_local(config, crate::cluster::session::random_u32())?;
    let p = Arc::new(Pipeline {
        pool: rt.clone(),
        state: Mutex::new(PipelineState::default()),
    });
    let hooked = p.clone();
    let host = crate::actor::Host::new(rt.clone());
    let run = Arc::new(move |delivery: Delivery, reply: Reply| match delivery {
        Delivery::Run(spec, after, lease) => {
            if let Some(lease) = lease {
                p.lock().leased.insert(spec.task_id, lease);
            }
            p.arrived(spec, after, reply)
        }
        Delivery::Release(task) => p.release(task),
        Delivery::Actor(msg) => host.deliver(msg, reply),
    });
    let head = std::env::var(crate::cluster::node::ENV_HEAD).unwrap_or_default();
    let client = Arc::new(Client::connect_worker(
        &head,
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
        // A task on a lease lends the lease's CPUs: the node knows the lease, not it.
        let task_id = hooked
            .lock()
            .leased
            .get(&task_id)
            .copied()
            .unwrap_or(task_id);
        hook_client.send(if waiting {
            Msg::Blocked { task_id }
        } else {
            Msg::Unblocked { task_id }
        });
        true
    }));
    runtime::attach_client(client.clone());
    client.send(Msg::WorkerListening {
        address: client.address().to_string(),
    });
    client.start();
    Ok(())
}

#[derive(Default)]
struct PipelineState {
    /// Tasks started, or queued to start right after another.
    running: HashSet<ObjectId>,
    /// Tasks to run right after the task they are keyed by.
    waiting: HashMap<ObjectId, (TaskSpec, Reply)>,
    /// Tasks a driver sent on a lease, with the lease.
    leased: HashMap<ObjectId, ObjectId>,
}

/// The tasks of this worker and the ones the node queued right behind them. A queued
/// task runs on its predecessor's thread as soon as the predecessor ends, or when the
/// node releases it (its predecessor waits): the node decides, the worker follows, so
/// the two never disagree on which tasks hold resources.
struct Pipeline {
    pool: Arc<runtime::Runtime>,
    state: Mutex<PipelineState>,
}

impl Pipeline {
    fn lock(&self) -> std::sync::MutexGuard<'_, PipelineState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arrived(self: &Arc<Self>, spec: TaskSpec, after: Option<ObjectId>, reply: Reply) {
        let mut st = self.lock();
        st.running.insert(spec.task_id);
        if let Some(pred) = after.filter(|p| st.running.contains(p)) {
            if let Some((earlier, r)) = st.waiting.insert(pred, (spec, reply)) {
                tracing::error!(task = %earlier.task_id, "two tasks queued behind one");
                drop(st);
                self.start(earlier, r);
            }
            return;
        }
        drop(st);
        self.start(spec, reply);
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
        self.start(spec, reply);
    }

    fn start(self: &Arc<Self>, spec: TaskSpec, reply: Reply) {
        let me = self.clone();
        // The node only sends what its resources allow, so the pool runs it at once.
        self.pool.sched.submit(Job {
            demand: Demand::default(),
            keep: false,
            run: Box::new(move |grant| me.run_chain(spec, reply, grant)),
        });
    }

    fn client(&self) -> Result<&Arc<Client>> {
        self.pool
            .client()
            .ok_or_else(|| Error::Cluster("the worker is not connected".into()))
    }

    fn run_chain(&self, mut spec: TaskSpec, mut reply: Reply, grant: &crate::sched::Grant) {
        loop {
            let running = runtime::Running {
                task_id: Some(spec.task_id),
                actor_id: None,
                function: crate::task::lookup(&spec.function).map_or("?", |f| f.name),
                grant: grant.clone(),
            };
            let result = runtime::with_running(running, || {
                spec.execute(|id, at| self.client()?.fetch(id, at))
            });
            let result = self.client().and_then(|c| c.payload(spec.task_id, result));
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
