//! Worker mode: a job's own executable, started by a node, running that job's tasks.
//!
//! `prism::init()` checks the environment first; in a process started as a worker it
//! never returns: it connects to the node, runs every task the node sends on the
//! process's pool of threads (found by name in the compile-time registry), sends the
//! results back, and exits when the node goes away.

use std::sync::Arc;

use crate::cluster::client::Client;
use crate::cluster::node::{ENV_JOB, ENV_NODE, ENV_TOKEN};
use crate::cluster::wire::Msg;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::object::ObjectId;
use crate::runtime;
use crate::sched::{Demand, Job};

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
    let pool = rt.clone();
    let run = Box::new(
        move |spec: crate::task::TaskSpec, reply: crate::cluster::wire::Outbox| {
            // The node only sends what fits its resources, so the pool runs it at once.
            pool.sched.submit(Job {
                demand: Demand::default(),
                keep: false,
                run: Box::new(move |grant| {
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
                }),
            });
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
        hook_client.send(if waiting {
            Msg::Blocked { task_id }
        } else {
            Msg::Unblocked { task_id }
        });
        true
    }));
    runtime::attach_client(client);
    Ok(())
}
