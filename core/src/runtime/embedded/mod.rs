//! The embedded backend: the whole system in this process. A task is queued on the
//! pool once its reference arguments are final and runs on a pool thread with the
//! shared values themselves (no serialization); actors live in mailboxes here
//! (`actors`).

pub(crate) mod actors;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::object::Held;
use crate::sched::{Demand, Grant, Work};
use crate::task::{refs_of, Arg, ArgKind, LocalArgs, RemoteFunction, TaskOptions};

use super::context::{with_running, Running};
use super::{deps, Runtime};

/// The embedded backend's own state: its actors.
pub(crate) struct Embedded {
    pub(super) actors: Arc<actors::Directory>,
}

/// A task of the embedded runtime.
struct LocalTask {
    id: ObjectId,
    function: &'static RemoteFunction,
    args: Vec<Arg>,
    options: TaskOptions,
    demand: Demand,
    attempt: u32,
}

impl Embedded {
    pub fn new() -> Embedded {
        Embedded {
            actors: Arc::new(actors::Directory::default()),
        }
    }

    /// Runs a task of `function` once its arguments are ready; its result will be the
    /// object `id`.
    pub fn submit_task(
        &self,
        rt: &Arc<Runtime>,
        id: ObjectId,
        function: &'static RemoteFunction,
        args: Vec<Arg>,
        options: TaskOptions,
    ) {
        let demand = match rt.feasible_demand(&options) {
            Ok(d) => d,
            Err(e) => {
                rt.store.fail(id, e);
                return;
            }
        };
        let task = LocalTask {
            id,
            function,
            args,
            options,
            demand,
            attempt: 0,
        };
        let rt = rt.clone();
        deps::when_ready(refs_of(&task.args), move |ready| match ready {
            Ok(()) => enqueue(&rt, task),
            Err(e) => {
                rt.store.fail(task.id, e);
            }
        });
    }

    /// Ends every actor: their pending calls fail with [`Error::Shutdown`].
    pub fn shut_down(&self) {
        self.actors.shut_down();
    }
}

fn enqueue(rt: &Arc<Runtime>, task: LocalTask) {
    let me = rt.clone();
    let (store, id) = (rt.store.clone(), task.id);
    rt.pool.submit(Work {
        demand: task.demand.clone(),
        keep: false,
        run: Box::new(move |grant| run_task(&me, task, grant)),
        abandon: Some(Box::new(move |e| {
            store.fail(id, e);
        })),
    });
}

fn run_task(rt: &Arc<Runtime>, mut task: LocalTask, grant: &Grant) {
    if rt.store.is_cancelled(task.id) {
        return;
    }
    let retry_left = task.options.retry_on_panic && task.attempt < task.options.max_retries;
    let args = match resolve(&mut task.args, !retry_left) {
        Ok(a) => a,
        Err(e) => {
            rt.store.fail(task.id, e);
            return;
        }
    };
    let running = Running {
        task_id: Some(task.id),
        actor_id: None,
        function: task.function.name,
        grant: grant.clone(),
    };
    let f = task.function;
    let outcome = with_running(running, || {
        crate::task::panic::catch(move || (f.run_local)(args))
    });
    match outcome {
        Ok(out) => {
            let size = out.size();
            rt.store.complete(task.id, out.value, size, out.codec);
        }
        Err(message) if retry_left => {
            tracing::debug!(function = f.name, attempt = task.attempt, %message, "retrying after a panic");
            task.attempt += 1;
            enqueue(rt, task);
        }
        Err(message) => {
            let function = task
                .options
                .name
                .clone()
                .unwrap_or_else(|| f.name.to_string());
            rt.store
                .fail(task.id, crate::task::panic::failure(function, message));
        }
    }
}

/// Resolves the arguments of a call: shared values, reference arguments read from the
/// store (all final by now). With `take`, the call's own copies are dropped so that a
/// value passed by the caller reaches an owned parameter without a copy.
pub(crate) fn resolve(args: &mut Vec<Arg>, take: bool) -> Result<LocalArgs> {
    let mut values = Vec::with_capacity(args.len());
    for arg in args.iter() {
        match &arg.0 {
            ArgKind::Value(v, _) => values.push(Some(v.clone())),
            ArgKind::Ref(c) => match c.store()?.poll(c.id, None) {
                Some(Ok(Held::Here(v))) => values.push(Some(v)),
                Some(Ok(Held::Elsewhere(_))) | None => return Err(Error::ObjectLost(c.id)),
                Some(Err(e)) => return Err(e),
            },
        }
    }
    if take {
        args.clear();
    }
    Ok(LocalArgs { values })
}
