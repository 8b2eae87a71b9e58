//! The routers of this process, by deployment name: those the controller owns (in the
//! process that runs the application) and those made from the [`Directory`] the
//! controller sends every replica, so that a handle inside a replica routes on its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};

use crate::deployment::HandlerKind;
use crate::replica::ReplicaHandle;
use crate::router::Router;

/// Where every deployment's replicas are: what a replica's handles route by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Directory {
    /// Grows with every change; an older directory than the one held is ignored.
    pub version: u64,
    /// Each deployment.
    pub deployments: Vec<Entry>,
}

/// One deployment in a [`Directory`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its handlers.
    pub kinds: BTreeMap<String, HandlerKind>,
    /// Requests (or batches) one replica takes at once.
    pub max_ongoing_requests: usize,
    /// Requests that may wait.
    pub max_queued_requests: Option<usize>,
    /// Its serving replicas, by id.
    pub replicas: Vec<(u64, ReplicaHandle)>,
    /// Its HTTP route, for the ingresses on the nodes.
    pub route_prefix: Option<String>,
    /// Its request timeout.
    pub request_timeout: Option<std::time::Duration>,
}

#[derive(Default)]
struct Routers {
    by_name: HashMap<String, Arc<Router>>,
    /// Names whose router a controller in this process owns: a directory never
    /// replaces them.
    owned: Vec<String>,
    version: u64,
    /// Each deployment of the last directory: its name, route and timeout.
    listed: Vec<(String, Option<String>, Option<std::time::Duration>)>,
}

fn routers() -> MutexGuard<'static, Routers> {
    static ROUTERS: OnceLock<Mutex<Routers>> = OnceLock::new();
    ROUTERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The router of deployment `name` in this process, if it knows one.
pub(crate) fn lookup(name: &str) -> Option<Arc<Router>> {
    routers().by_name.get(name).cloned()
}

/// Files the router of a deployment this process's controller runs.
pub(crate) fn own(router: Arc<Router>) {
    let mut r = routers();
    if !r.owned.contains(&router.name) {
        r.owned.push(router.name.clone());
    }
    r.by_name.insert(router.name.clone(), router);
}

/// Forgets a deployment this process's controller ran.
pub(crate) fn disown(name: &str) {
    let mut r = routers();
    r.owned.retain(|n| n != name);
    r.by_name.remove(name);
}

/// Takes a newer directory: makes, updates or closes the routers it does not own.
pub(crate) fn adopt(directory: Directory) {
    let mut r = routers();
    if directory.version <= r.version {
        return;
    }
    r.version = directory.version;
    r.listed = directory
        .deployments
        .iter()
        .map(|e| (e.name.clone(), e.route_prefix.clone(), e.request_timeout))
        .collect();
    let stale: Vec<String> = r
        .by_name
        .keys()
        .filter(|n| !r.listed.iter().any(|(l, ..)| l == *n) && !r.owned.contains(n))
        .cloned()
        .collect();
    for name in stale {
        if let Some(router) = r.by_name.remove(&name) {
            router.close(format!("deployment {name} was deleted"));
        }
    }
    for e in directory.deployments {
        if r.owned.contains(&e.name) {
            continue;
        }
        let router = r
            .by_name
            .entry(e.name.clone())
            .or_insert_with(|| {
                Router::new(
                    &e.name,
                    e.kinds.clone(),
                    e.max_ongoing_requests,
                    e.max_queued_requests,
                )
            })
            .clone();
        router.limits(e.max_ongoing_requests, e.max_queued_requests);
        router.set(e.replicas);
    }
    drop(r);
    push_routes();
}

/// Gives this process's node ingress (if it runs one) the routes of the directory held.
pub(crate) fn push_routes() {
    let r = routers();
    let routes = r
        .listed
        .iter()
        .filter_map(|(name, prefix, timeout)| {
            Some(crate::ingress::Route {
                prefix: prefix.clone()?,
                router: r.by_name.get(name)?.clone(),
                timeout: *timeout,
            })
        })
        .collect();
    drop(r);
    crate::ingress::node_routes(routes);
}
