//! Actors of the embedded runtime: each a mailbox in this process whose calls run with
//! the shared argument values themselves; the directory of the live ones by id and by
//! name; and the counted handles that retire an unnamed actor when the last one goes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::actor::{ActorOptions, Constructor, Method};
use crate::error::{Error, Result};
use crate::id::{ActorId, ObjectId};
use crate::object::{ObjectRef, Store};
use crate::sync::lock;
use crate::task::{refs_of, Arg};

use super::super::mailbox::{Call, Mailbox, Receiver};
use super::super::{deps, Runtime};
use super::resolve;

/// One live actor of this process.
pub(crate) struct LocalActor {
    mailbox: Arc<Mailbox<LocalCall>>,
    class: &'static str,
    name: Option<String>,
    handles: AtomicUsize,
    rt: Weak<Runtime>,
    dir: Weak<Directory>,
}

/// The live actors of the embedded runtime, by id and by name.
#[derive(Default)]
pub(crate) struct Directory {
    by_id: Mutex<HashMap<ActorId, Weak<LocalActor>>>,
    by_name: Mutex<HashMap<String, Arc<LocalActor>>>,
}

impl Directory {
    fn find(&self, id: ActorId) -> Option<Arc<LocalActor>> {
        lock(&self.by_id).get(&id).and_then(Weak::upgrade)
    }

    /// Forgets an actor that ended or was killed.
    fn forget(&self, id: ActorId, name: Option<&str>) {
        lock(&self.by_id).remove(&id);
        if let Some(name) = name {
            let mut names = lock(&self.by_name);
            if names.get(name).is_some_and(|a| a.mailbox.id() == id) {
                names.remove(name);
            }
        }
    }

    /// Ends the actors that hold resources named with `prefix` (a removed placement
    /// group's), dead with `why`.
    pub fn end_group(&self, prefix: &str, why: &Error) {
        let actors: Vec<Arc<LocalActor>> = lock(&self.by_id)
            .values()
            .filter_map(Weak::upgrade)
            .filter(|a| a.mailbox.holds(prefix))
            .collect();
        for a in actors {
            self.forget(a.mailbox.id(), a.name.as_deref());
            a.mailbox.die(Error::ActorDied {
                actor: a.mailbox.describe().to_string(),
                reason: why.to_string(),
            });
        }
    }

    /// Ends every actor.
    pub fn shut_down(&self) {
        let actors: Vec<Arc<LocalActor>> = lock(&self.by_id)
            .drain()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        lock(&self.by_name).clear();
        for a in actors {
            a.mailbox.die(Error::Shutdown);
        }
    }
}

/// A counted handle on a local actor: the last one dropped retires an unnamed actor.
pub(crate) struct LocalHandle(Arc<LocalActor>);

impl LocalHandle {
    fn new(actor: Arc<LocalActor>) -> LocalHandle {
        actor.handles.fetch_add(1, Ordering::AcqRel);
        LocalHandle(actor)
    }

    pub fn id(&self) -> ActorId {
        self.0.mailbox.id()
    }

    pub fn class(&self) -> &'static str {
        self.0.class
    }

    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// Queues a call of `method`; its result arrives as the returned object.
    pub fn call<R>(&self, name: &'static str, args: Vec<Arg>, method: Method) -> ObjectRef<R> {
        let Some(rt) = self.0.rt.upgrade() else {
            return ObjectRef::failed(self.id().object(), Error::Shutdown);
        };
        let (out, r) = rt.new_object::<R>();
        self.0.mailbox.enqueue(LocalCall {
            out,
            name,
            class: self.0.class,
            args,
            method,
            resolved: None,
        });
        r
    }

    /// Kills the actor: queued and later calls fail; a running call finishes first.
    pub fn kill(&self) {
        if let Some(dir) = self.0.dir.upgrade() {
            dir.forget(self.id(), self.name());
        }
        self.0.mailbox.die(Error::ActorDied {
            actor: self.0.mailbox.describe().to_string(),
            reason: "killed with prism::kill".into(),
        });
    }
}

impl Drop for LocalHandle {
    fn drop(&mut self) {
        if self.0.handles.fetch_sub(1, Ordering::AcqRel) == 1 && self.0.name.is_none() {
            self.0.mailbox.retire();
        }
    }
}

/// Starts an actor in this process.
pub(crate) fn spawn(
    rt: &Arc<Runtime>,
    dir: &Arc<Directory>,
    class: &'static str,
    options: ActorOptions,
    args: Vec<Arg>,
    construct: Constructor,
) -> LocalHandle {
    let id = ActorId::from(rt.next_id());
    let describe = match &options.name {
        Some(n) => format!("{class} {id} ({n:?})"),
        None => format!("{class} {id}"),
    };
    let (forget, name) = (Arc::downgrade(dir), options.name.clone());
    let mailbox = Mailbox::new(
        id,
        describe,
        options.max_concurrency,
        rt.pool.clone(),
        rt.store.clone(),
        Box::new(move |_why| {
            if let Some(dir) = forget.upgrade() {
                dir.forget(id, name.as_deref());
            }
        }),
    );
    let actor = Arc::new(LocalActor {
        mailbox: mailbox.clone(),
        class,
        name: options.name.clone(),
        handles: AtomicUsize::new(0),
        rt: Arc::downgrade(rt),
        dir: Arc::downgrade(dir),
    });
    let handle = LocalHandle::new(actor.clone());
    if let Some(name) = &options.name {
        let mut names = lock(&dir.by_name);
        if names.contains_key(name) {
            drop(names);
            mailbox.die(Error::Config(format!(
                "an actor named {name:?} already exists: use prism::get_actor to reach it"
            )));
            return handle;
        }
        names.insert(name.clone(), actor.clone());
    }
    lock(&dir.by_id).insert(id, Arc::downgrade(&actor));
    let demand = match rt.feasible_demand(&options.task) {
        Ok(d) => d,
        Err(e) => {
            mailbox.die(Error::ActorDied {
                actor: mailbox.describe().to_string(),
                reason: e.to_string(),
            });
            return handle;
        }
    };
    let deps = refs_of(&args);
    deps::when_ready(deps, move |ready| match ready {
        Ok(()) => {
            let describe = mailbox.describe().to_string();
            let mut args = args;
            mailbox.construct(demand, true, move |_grant| {
                let failed = |e: Error| Error::ActorDied {
                    actor: describe.clone(),
                    reason: format!("its constructor failed: {e}"),
                };
                let a = resolve(&mut args, true).map_err(failed)?;
                crate::task::panic::catch(move || construct(a)).map_err(|message| {
                    failed(crate::task::panic::failure(
                        format!("{class}::new"),
                        message,
                    ))
                })
            })
        }
        Err(e) => mailbox.die(Error::ActorDied {
            actor: mailbox.describe().to_string(),
            reason: format!("a constructor argument failed: {e}"),
        }),
    });
    handle
}

/// A named actor of type `class`.
pub(crate) fn find(dir: &Directory, name: &str, class: &str) -> Result<LocalHandle> {
    let actor = lock(&dir.by_name)
        .get(name)
        .cloned()
        .ok_or_else(|| Error::ActorNotFound(name.to_string()))?;
    if actor.class != class {
        return Err(Error::ActorNotFound(format!(
            "{name} (it is a {}, not a {class})",
            actor.class
        )));
    }
    Ok(LocalHandle::new(actor))
}

/// A handle on a live actor of this process, from its id (a deserialized handle).
pub(crate) fn attach(dir: &Directory, id: ActorId) -> Result<LocalHandle> {
    dir.find(id)
        .map(LocalHandle::new)
        .ok_or_else(|| Error::ActorDied {
            actor: id.to_string(),
            reason: "it no longer exists".into(),
        })
}

/// A call of a local actor: shared argument values, the result into the store.
pub(crate) struct LocalCall {
    out: ObjectId,
    name: &'static str,
    class: &'static str,
    args: Vec<Arg>,
    method: Method,
    resolved: Option<crate::task::LocalArgs>,
}

impl Call for LocalCall {
    /// The store the results go into.
    type Context = Arc<Store>;

    fn function(&self) -> &'static str {
        self.name
    }

    fn exclusive(&self) -> bool {
        matches!(self.method, Method::Exclusive(_))
    }

    fn prepare(&mut self, store: &Arc<Store>) -> Result<()> {
        // A call whose arguments are not ready waits at the head of the mailbox, so it
        // keeps its place in the order.
        let deps: Vec<ObjectId> = refs_of(&self.args).iter().map(|c| c.id).collect();
        if !deps.is_empty() {
            deps::wait_settled(store, &deps, None);
        }
        self.resolved = Some(resolve(&mut self.args, true)?);
        Ok(())
    }

    fn run(self, state: Receiver<'_>, store: &Arc<Store>) {
        let Some(args) = self.resolved else {
            // Not prepared: never the case, as the mailbox prepares every call it runs.
            store.fail(self.out, Error::ObjectLost(self.out));
            return;
        };
        let outcome = match (self.method, state) {
            (Method::Shared(f), Receiver::Shared(s)) => crate::task::panic::catch(|| f(s, args)),
            (Method::Shared(f), Receiver::Exclusive(s)) => {
                crate::task::panic::catch(|| f(&*s, args))
            }
            (Method::Exclusive(f), Receiver::Exclusive(s)) => {
                crate::task::panic::catch(|| f(s, args))
            }
            (Method::Exclusive(_), Receiver::Shared(_)) => {
                Err("a `&mut self` method was given shared state".to_string())
            }
        };
        match outcome {
            Ok(out) => {
                let size = out.size();
                store.complete(self.out, out.value, size, out.codec);
            }
            Err(message) => {
                let function = format!("{}::{}", self.class, self.name);
                store.fail(self.out, crate::task::panic::failure(function, message));
            }
        }
    }

    fn fail(self, err: Error, store: &Arc<Store>) {
        store.fail(self.out, err);
    }
}
