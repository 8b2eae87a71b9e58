//! The controller: keeps each deployment at its wanted replicas. Every tick it moves
//! starting replicas to serving once they answer `ready`, replaces those that died or
//! failed a health check, starts or drains replicas toward the target (fixed, or the
//! autoscaler's), and sends every replica the new [`Directory`] when the serving set
//! changes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::deployment::HandlerKind;
use crate::directory::{Directory, Entry};
use crate::error::HttpError;
use crate::options::{Autoscaling, DeploymentOptions};
use crate::replica::{Replica, ReplicaHandle, ReplicaInfo};
use crate::router::Router;

/// Replicas that fail to start in a row before the deployment counts as failed:
/// [`crate::Serve::deploy`] gives up and requests waiting for a replica are answered.
pub(crate) const START_ATTEMPTS: u32 = 3;

/// A replica's state, as [`crate::Serve::status`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    /// Built, not yet answering.
    Starting,
    /// Taking requests.
    Running,
    /// Finishing its requests in flight before it ends.
    Stopping,
}

/// One replica, as [`crate::Serve::status`] shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Its id in the deployment.
    pub id: u64,
    /// Its state.
    pub state: ReplicaState,
    /// Where it runs, once it runs.
    pub info: Option<ReplicaInfo>,
    /// Requests in flight on it.
    pub ongoing: usize,
}

/// One deployment, as [`crate::Serve::status`] shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentStatus {
    /// Its name.
    pub name: String,
    /// Its route, if it has one.
    pub route_prefix: Option<String>,
    /// The replicas wanted now.
    pub target_replicas: usize,
    /// Each replica.
    pub replicas: Vec<ReplicaStatus>,
    /// Requests waiting for a replica.
    pub queued: usize,
    /// Requests answered so far, and of those the failed ones.
    pub requests: u64,
    /// Of `requests`, those answered with a status of 400 or above.
    pub errors: u64,
    /// Why the last replica that failed did (to start, or a health check).
    pub last_failure: Option<String>,
}

struct Record {
    id: u64,
    handle: ReplicaHandle,
    state: ReplicaState,
    since: Instant,
    ready: Option<prism::ObjectRef<Result<ReplicaInfo, String>>>,
    info: Option<ReplicaInfo>,
    /// The health check in flight and when it was sent.
    health: Option<(prism::ObjectRef<Result<(), String>>, Instant)>,
    last_health: Instant,
}

/// What the autoscaler remembers.
#[derive(Default)]
struct Scaler {
    samples: VecDeque<(Instant, f64)>,
    /// Since when more (or fewer) replicas than now have been wanted.
    up_since: Option<Instant>,
    down_since: Option<Instant>,
}

/// One deployment the controller runs.
pub(crate) struct Managed {
    pub(crate) name: String,
    pub(crate) class: String,
    pub(crate) router: Arc<Router>,
    inner: Mutex<Inner>,
}

struct Inner {
    options: DeploymentOptions,
    config: String,
    target: usize,
    replicas: Vec<Record>,
    next_id: u64,
    scaler: Scaler,
    last_failure: Option<String>,
    /// Replicas that failed to start in a row, and when the next may start.
    failures: u32,
    not_before: Instant,
    /// Deleted: drain everything, start nothing.
    deleting: bool,
}

/// Whether `r` is ready, without waiting.
fn poll<T: prism::Value + Clone>(r: &prism::ObjectRef<T>) -> Option<prism::Result<T>> {
    match prism::wait(std::slice::from_ref(r), 1, Some(Duration::ZERO)) {
        Ok((ready, _)) if !ready.is_empty() => Some(prism::get(r)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    }
}

impl Managed {
    pub(crate) fn new(
        class: &str,
        kinds: std::collections::BTreeMap<String, HandlerKind>,
        options: DeploymentOptions,
        config: String,
    ) -> Arc<Managed> {
        let router = Router::new(
            &options.name,
            kinds,
            options.max_ongoing_requests,
            options.max_queued_requests,
        );
        Arc::new(Managed {
            name: options.name.clone(),
            class: class.to_string(),
            router,
            inner: Mutex::new(Inner {
                target: initial_target(&options),
                options,
                config,
                replicas: Vec::new(),
                next_id: 1,
                scaler: Scaler::default(),
                last_failure: None,
                failures: 0,
                not_before: Instant::now(),
                deleting: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn options(&self) -> DeploymentOptions {
        self.lock().options.clone()
    }

    /// Takes new options (a redeploy under the same name).
    pub(crate) fn update(&self, options: DeploymentOptions) {
        let mut inner = self.lock();
        self.router
            .limits(options.max_ongoing_requests, options.max_queued_requests);
        if options.autoscaling.is_none() || inner.options.autoscaling.is_none() {
            inner.target = initial_target(&options);
        }
        inner.options = options;
    }

    /// The config new replicas are built with.
    pub(crate) fn set_config(&self, config: String) {
        self.lock().config = config;
    }

    /// The serving replicas' handles.
    pub(crate) fn running(&self) -> Vec<ReplicaHandle> {
        self.lock()
            .replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Running)
            .map(|r| r.handle.clone())
            .collect()
    }

    /// Every replica's handle, starting and stopping ones too.
    pub(crate) fn all_handles(&self) -> Vec<ReplicaHandle> {
        self.lock()
            .replicas
            .iter()
            .map(|r| r.handle.clone())
            .collect()
    }

    /// Starts draining every replica: the deployment is deleted.
    pub(crate) fn delete(&self) {
        self.lock().deleting = true;
        self.router
            .close(format!("deployment {} was deleted", self.name));
    }

    /// Whether a deleted deployment's replicas are all gone.
    pub(crate) fn gone(&self) -> bool {
        let inner = self.lock();
        inner.deleting && inner.replicas.is_empty()
    }

    /// Serving replicas, those wanted, and the last failure.
    pub(crate) fn progress(&self) -> (usize, usize, Option<String>, u32) {
        let inner = self.lock();
        let running = inner
            .replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Running)
            .count();
        (
            running,
            inner.target,
            inner.last_failure.clone(),
            inner.failures,
        )
    }

    pub(crate) fn status(&self) -> DeploymentStatus {
        let inner = self.lock();
        let (_, queued) = self.router.load();
        let (requests, errors) = self.router.metrics.totals();
        DeploymentStatus {
            name: self.name.clone(),
            route_prefix: inner.options.route_prefix.clone(),
            target_replicas: inner.target,
            replicas: inner
                .replicas
                .iter()
                .map(|r| ReplicaStatus {
                    id: r.id,
                    state: r.state,
                    info: r.info.clone(),
                    ongoing: self.router.ongoing(r.id),
                })
                .collect(),
            queued,
            requests,
            errors,
            last_failure: inner.last_failure.clone(),
        }
    }

    /// The directory entry of this deployment.
    pub(crate) fn entry(&self) -> Entry {
        let inner = self.lock();
        Entry {
            name: self.name.clone(),
            kinds: self.router.kinds.clone(),
            max_ongoing_requests: inner.options.max_ongoing_requests,
            max_queued_requests: inner.options.max_queued_requests,
            replicas: inner
                .replicas
                .iter()
                .filter(|r| r.state == ReplicaState::Running)
                .map(|r| (r.id, r.handle.clone()))
                .collect(),
            route_prefix: inner.options.route_prefix.clone(),
            request_timeout: inner.options.request_timeout,
        }
    }

    /// One step toward the wanted state. Returns whether the serving set changed.
    pub(crate) fn tick(&self, directory: &Directory) -> bool {
        let now = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut changed = false;
        let dead = self.router.take_dead();
        let opts = inner.options.clone();
        let mut i = 0;
        while i < inner.replicas.len() {
            let r = &mut inner.replicas[i];
            let mut drop_it: Option<String> = None;
            match r.state {
                ReplicaState::Starting => {
                    if let Some(res) = r.ready.as_ref().and_then(poll) {
                        r.ready = None;
                        match res.map_err(|e| e.to_string()).and_then(|x| x) {
                            Ok(info) => {
                                r.info = Some(info);
                                r.state = ReplicaState::Running;
                                r.since = now;
                                r.last_health = now;
                                self.router.add(r.id, r.handle.clone());
                                changed = true;
                                inner.failures = 0;
                            }
                            Err(why) => {
                                drop_it = Some(format!("a replica did not start: {why}"));
                                inner.failures += 1;
                                let backoff =
                                    Duration::from_millis(100u64 << inner.failures.min(6));
                                inner.not_before = now + backoff;
                            }
                        }
                    }
                }
                ReplicaState::Running => {
                    if dead.contains(&r.id) {
                        drop_it = Some(format!("replica {} is gone", r.id));
                    } else if let Some((check, sent)) = &r.health {
                        match poll(check) {
                            Some(Ok(Ok(()))) => {
                                r.health = None;
                                r.last_health = now;
                            }
                            Some(Ok(Err(why))) => {
                                drop_it =
                                    Some(format!("replica {} failed its health check: {why}", r.id))
                            }
                            Some(Err(e)) => {
                                drop_it =
                                    Some(format!("replica {} failed its health check: {e}", r.id))
                            }
                            None if now.duration_since(*sent) > opts.health_check_timeout => {
                                drop_it = Some(format!(
                                    "replica {} did not answer its health check within {:?}",
                                    r.id, opts.health_check_timeout
                                ))
                            }
                            None => {}
                        }
                    } else if now.duration_since(r.last_health) >= opts.health_check_period {
                        r.health = Some((r.handle.check_health(), now));
                    }
                }
                ReplicaState::Stopping => {
                    let drained = self.router.ongoing(r.id) == 0;
                    if drained || now.duration_since(r.since) > opts.graceful_shutdown_timeout {
                        drop_it = Some(String::new());
                    }
                }
            }
            if let Some(why) = drop_it {
                let r = inner.replicas.remove(i);
                if r.state == ReplicaState::Running {
                    changed = true;
                }
                self.router.remove(r.id);
                prism::kill(&r.handle);
                if !why.is_empty() {
                    tracing::warn!(deployment = %self.name, "{why}");
                    inner.last_failure = Some(why);
                }
            } else {
                i += 1;
            }
        }
        if inner.deleting {
            for r in &mut inner.replicas {
                if r.state != ReplicaState::Stopping {
                    changed |= self.drain(r, now);
                }
            }
            return changed;
        }
        if let Some(a) = opts.autoscaling {
            let (ongoing, queued) = self.router.load();
            let load = (ongoing + queued) as f64;
            inner.target = scale(&mut inner.scaler, &a, load, inner.target, now);
        }
        // Toward the target: start, or drain the starting ones first, then the serving
        // ones with the least in flight.
        let live: Vec<usize> = (0..inner.replicas.len())
            .filter(|i| inner.replicas[*i].state != ReplicaState::Stopping)
            .collect();
        if live.len() < inner.target {
            if now >= inner.not_before {
                for _ in live.len()..inner.target {
                    let rec = self.start(inner, directory);
                    inner.replicas.push(rec);
                }
            }
        } else if live.len() > inner.target {
            let extra = live.len() - inner.target;
            let mut order = live;
            order.sort_by_key(|i| {
                let r = &inner.replicas[*i];
                (r.state == ReplicaState::Running, self.router.ongoing(r.id))
            });
            for &i in order.iter().take(extra) {
                changed |= self.drain(&mut inner.replicas[i], now);
            }
        }
        // No replica serves and the last ones failed to start: waiting requests would
        // wait for nothing.
        let serving = inner
            .replicas
            .iter()
            .any(|r| r.state == ReplicaState::Running);
        if !serving && inner.failures >= START_ATTEMPTS {
            if let Some(why) = &inner.last_failure {
                self.router.fail_waiting(HttpError::unavailable(format!(
                    "deployment {} has no replica serving: {why}",
                    self.name
                )));
            }
        }
        changed
    }

    /// Sets a replica draining: no new requests, ended once those in flight are done.
    /// Whether it was serving.
    fn drain(&self, r: &mut Record, now: Instant) -> bool {
        let was_running = r.state == ReplicaState::Running;
        r.state = ReplicaState::Stopping;
        r.since = now;
        self.router.stop_sending(r.id);
        was_running
    }

    fn start(&self, inner: &mut Inner, directory: &Directory) -> Record {
        let id = inner.next_id;
        inner.next_id += 1;
        let o = &inner.options;
        let handle = Replica::options()
            .num_cpus(o.num_cpus)
            .num_gpus(o.num_gpus)
            .resources(o.resources.clone())
            // Requests, plus room for a health check and a config update beside them.
            .max_concurrency(o.max_ongoing_requests + 2)
            .remote(self.name.clone(), self.class.clone(), inner.config.clone());
        let ready = handle.ready(directory.clone());
        let now = Instant::now();
        Record {
            id,
            handle,
            state: ReplicaState::Starting,
            since: now,
            ready: Some(ready),
            info: None,
            health: None,
            last_health: now,
        }
    }
}

fn initial_target(o: &DeploymentOptions) -> usize {
    match &o.autoscaling {
        Some(a) => a.min_replicas,
        None => o.num_replicas,
    }
}

/// The autoscaler's step: the replicas wanted now, given the load just seen and the
/// count running.
fn scale(s: &mut Scaler, a: &Autoscaling, load: f64, current: usize, now: Instant) -> usize {
    s.samples.push_back((now, load));
    while s
        .samples
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > a.look_back)
    {
        s.samples.pop_front();
    }
    let mean = s.samples.iter().map(|(_, l)| l).sum::<f64>() / s.samples.len() as f64;
    let wanted =
        ((mean / a.target_ongoing_requests).ceil() as usize).clamp(a.min_replicas, a.max_replicas);
    if wanted > current {
        s.down_since = None;
        let since = *s.up_since.get_or_insert(now);
        if now.duration_since(since) >= a.upscale_delay {
            s.up_since = None;
            return wanted;
        }
    } else if wanted < current {
        s.up_since = None;
        let since = *s.down_since.get_or_insert(now);
        if now.duration_since(since) >= a.downscale_delay {
            s.down_since = None;
            return wanted;
        }
    } else {
        s.up_since = None;
        s.down_since = None;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_autoscaler_waits_its_delays_and_stays_in_bounds() {
        let a = Autoscaling::new(1, 3)
            .target_ongoing_requests(2.0)
            .upscale_delay(Duration::from_secs(1))
            .downscale_delay(Duration::from_secs(2))
            .look_back(Duration::from_millis(100));
        let mut s = Scaler::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Load 10 wants 5, capped at 3, only once wanted for the upscale delay.
        assert_eq!(scale(&mut s, &a, 10.0, 1, at(0)), 1);
        assert_eq!(scale(&mut s, &a, 10.0, 1, at(900)), 1);
        assert_eq!(scale(&mut s, &a, 10.0, 1, at(1000)), 3);
        // The load stops: fewer are wanted, after the downscale delay.
        assert_eq!(scale(&mut s, &a, 0.0, 3, at(1200)), 3);
        assert_eq!(scale(&mut s, &a, 0.0, 3, at(3100)), 3);
        assert_eq!(scale(&mut s, &a, 0.0, 3, at(3300)), 1);
        // A burst shorter than the delay changes nothing.
        assert_eq!(scale(&mut s, &a, 6.0, 1, at(4000)), 1);
        assert_eq!(scale(&mut s, &a, 0.0, 1, at(4500)), 1);
        assert_eq!(scale(&mut s, &a, 6.0, 1, at(4600)), 1);
        assert_eq!(scale(&mut s, &a, 6.0, 1, at(5500)), 1);
    }
}
