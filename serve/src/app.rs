//! [`Serve`]: the running application of this process: its HTTP ingress, its
//! deployments and the controller thread that keeps them at their replicas.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::controller::{DeploymentStatus, Managed, START_ATTEMPTS};
use crate::deployment::{self, Deployment};
use crate::directory::{self, Directory};
use crate::error::{Result, ServeError};
use crate::handle::DeploymentHandle;
use crate::ingress::{self, Ingress, Route};
use crate::options::{DeploymentOptions, HttpOptions};
use crate::record;
use crate::replica::{NodeIngress, NodeIngressHandle};

/// How long [`Serve::deploy`] waits for its replicas to serve.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

/// How often the controller looks at every deployment.
const TICK: Duration = Duration::from_millis(20);

struct App {
    ingress: Arc<Ingress>,
    address: SocketAddr,
    version: AtomicU64,
    /// Tells the controller to end.
    stopping: AtomicBool,
    /// `stop` ran (or runs).
    ended: AtomicBool,
    /// This application's record in the session directory, for `prism serve`.
    record: Option<std::path::PathBuf>,
    /// The ingresses on the nodes (`HttpOptions::every_node`) and where they listen.
    nodes: Mutex<Vec<(NodeIngressHandle, SocketAddr)>>,
    /// Set once the application is shut down (or asked to be, by Ctrl-C).
    stopped: (Mutex<bool>, Condvar),
    /// What ends the HTTP ingress, and its task.
    http: Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        )>,
    >,
    controller: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The serving application of this process: an HTTP ingress and the deployments it
/// routes to. Embedded, replicas are actors of this process; on a cluster, actors on
/// any node, with the ingress in this process.
///
/// ```no_run
/// # use prism_serve::{Deployment, DeploymentOptions, Handlers, HttpError, HttpOptions, Serve};
/// # struct Echo;
/// # impl Deployment for Echo {
/// #     type Config = ();
/// #     fn new(_: ()) -> Result<Self, String> { Ok(Echo) }
/// #     fn handlers(h: &mut Handlers<Self>) { h.call(|_: &Echo, v: serde_json::Value| Ok::<_, HttpError>(v)); }
/// # }
/// # prism_serve::register_deployment!(Echo);
/// prism::init().unwrap();
/// let serve = Serve::start(HttpOptions::default()).unwrap();
/// serve.deploy::<Echo>(DeploymentOptions::new("echo"), ()).unwrap();
/// // POST http://127.0.0.1:8000/echo answers with its body
/// serve.wait(); // until Ctrl-C
/// ```
pub struct Serve {
    app: Arc<App>,
}

impl Serve {
    /// Starts the HTTP ingress (on 127.0.0.1:8000 by default) and the controller.
    /// prism must be started first.
    pub fn start(http: HttpOptions) -> Result<Serve> {
        if !prism::is_initialized() {
            return Err(ServeError::Runtime(prism::Error::NotInitialized));
        }
        let token = prism::session::new_token()?;
        let ingress = Arc::new(Ingress::new(token.clone()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (address, http_task) = ingress::start(ingress.clone(), http.address, async move {
            let _ = stop_rx.await;
        })
        .map_err(|e| ServeError::Http(format!("cannot listen on {}: {e}", http.address)))?;
        let app = Arc::new(App {
            ingress,
            address,
            version: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            record: record::write(address, &token),
            nodes: Mutex::new(Vec::new()),
            stopped: (Mutex::new(false), Condvar::new()),
            http: Mutex::new(Some((stop_tx, http_task))),
            controller: Mutex::new(None),
        });
        let weak = Arc::downgrade(&app);
        app.ingress.on_shutdown(Box::new(move || {
            // From a thread of its own: the request that asked is answered first.
            if let Some(app) = weak.upgrade() {
                std::thread::spawn(move || app.stop());
            }
        }));
        let weak = Arc::downgrade(&app);
        let controller = std::thread::Builder::new()
            .name("prism-serve-controller".into())
            .spawn(move || {
                while let Some(app) = weak.upgrade() {
                    if app.stopping.load(Ordering::Acquire) {
                        break;
                    }
                    app.tick();
                    drop(app);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| ServeError::Config(format!("cannot start the controller: {e}")))?;
        *lock(&app.controller) = Some(controller);
        if http.every_node {
            app.start_node_ingresses(address.port(), &token)?;
        }
        tracing::info!("prism-serve listening on http://{address}");
        Ok(Serve { app })
    }

    /// Where the ingress listens.
    pub fn address(&self) -> SocketAddr {
        self.app.address
    }

    /// Where the ingresses on the nodes listen (`HttpOptions::every_node` on a
    /// cluster; empty otherwise).
    pub fn node_addresses(&self) -> Vec<SocketAddr> {
        lock(&self.app.nodes).iter().map(|(_, a)| *a).collect()
    }

    /// The ingress's URL of a path, `http://ip:port/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.address)
    }

    /// Deploys `D` under `options` with its user config, and waits until its replicas
    /// serve. Deploying a name that runs again takes the new options (replica count,
    /// limits, route) and applies a changed config to its replicas without a restart.
    /// A new deployment whose replicas fail to start, or do not serve within two
    /// minutes, is deleted again (requests that waited for it are answered 503).
    pub fn deploy<D: Deployment>(
        &self,
        options: DeploymentOptions,
        config: D::Config,
    ) -> Result<()> {
        options.check().map_err(ServeError::Config)?;
        let class = std::any::type_name::<D>();
        deployment::lookup(class).map_err(ServeError::Config)?;
        let config = serde_json::to_string(&config)
            .map_err(|e| ServeError::Config(format!("the user config does not encode: {e}")))?;
        let name = options.name.clone();
        if let Some(p) = &options.route_prefix {
            if let Some(other) = self.app.ingress.taken(p, &name) {
                return Err(ServeError::Config(format!(
                    "route prefix {p} is deployment {other}'s already"
                )));
            }
        }
        let existing = self.find(&name);
        let fresh = existing.is_none();
        let managed = match existing {
            Some(m) if m.class != class => {
                return Err(ServeError::Config(format!(
                    "deployment {name} runs {}, not {class}: delete it first",
                    m.class
                )))
            }
            Some(m) => {
                m.update(options.clone());
                self.apply_config(&m, config)?;
                m
            }
            None => {
                let m = Managed::new(class, deployment::kinds::<D>(), options.clone(), config);
                directory::own(m.router.clone());
                lock_w(&self.app.ingress.deployments).push(m.clone());
                m
            }
        };
        match &options.route_prefix {
            Some(prefix) => self.app.ingress.set_route(Route {
                prefix: prefix.clone(),
                router: managed.router.clone(),
                timeout: options.request_timeout,
            }),
            None => self.app.ingress.remove_route(&name),
        }
        let deadline = Instant::now() + DEPLOY_TIMEOUT;
        loop {
            let (running, target, failure, failures) = managed.progress();
            if running >= target {
                return Ok(());
            }
            if failures >= START_ATTEMPTS && running == 0 {
                let reason = failure.unwrap_or_default();
                if fresh {
                    let _ = self.delete(&name);
                }
                return Err(ServeError::ReplicaFailed {
                    deployment: name,
                    reason,
                });
            }
            if Instant::now() >= deadline {
                // A new deployment that never served goes, so that requests do not
                // wait on it for ever.
                if fresh {
                    let _ = self.delete(&name);
                }
                return Err(ServeError::Timeout(format!(
                    "deployment {name}: {running} of {target} replicas serve after {DEPLOY_TIMEOUT:?}{}",
                    failure.map(|f| format!("; last failure: {f}")).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Applies a new user config to the running replicas of `name` (each takes it
    /// once its requests in flight are done), and to those started later.
    pub fn reconfigure<C: Serialize>(&self, name: &str, config: &C) -> Result<()> {
        let m = self
            .find(name)
            .ok_or_else(|| ServeError::NoDeployment(name.to_string()))?;
        let config = serde_json::to_string(config)
            .map_err(|e| ServeError::Config(format!("the user config does not encode: {e}")))?;
        self.apply_config(&m, config)
    }

    fn apply_config(&self, m: &Managed, config: String) -> Result<()> {
        m.set_config(config.clone());
        let calls: Vec<_> = m
            .running()
            .iter()
            .map(|r| r.reconfigure(config.clone()))
            .collect();
        for c in calls {
            prism::get(&c)?.map_err(|reason| ServeError::ReplicaFailed {
                deployment: m.name.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// A handle on deployment `name` (see [`DeploymentHandle`]).
    pub fn handle(&self, name: &str) -> DeploymentHandle {
        DeploymentHandle::new(name)
    }

    /// Every deployment's replicas, their states and queues.
    pub fn status(&self) -> Vec<DeploymentStatus> {
        lock_r(&self.app.ingress.deployments)
            .iter()
            .map(|d| d.status())
            .collect()
    }

    /// Stops deployment `name`: its route goes at once, its replicas finish the
    /// requests in flight (up to the graceful shutdown timeout) and end.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.app.delete(name)
    }

    /// Blocks until the application is shut down (by `prism serve shutdown`) or
    /// Ctrl-C is pressed; dropping the `Serve` then shuts it down.
    pub fn wait(&self) {
        let app = self.app.clone();
        crate::tokio().spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let (m, cv) = &app.stopped;
                *lock(m) = true;
                cv.notify_all();
            }
        });
        let (m, cv) = &self.app.stopped;
        let mut stopped = lock(m);
        while !*stopped {
            stopped = cv.wait(stopped).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Drains and ends every deployment, then stops the ingress.
    pub fn shutdown(self) {
        self.app.stop();
    }

    fn find(&self, name: &str) -> Option<Arc<Managed>> {
        self.app.find(name)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.app.stop();
    }
}

impl App {
    /// An ingress on every live node of a cluster, on the node's IP and `port`.
    fn start_node_ingresses(&self, port: u16, token: &str) -> Result<()> {
        let directory = self.directory(&lock_r(&self.ingress.deployments));
        let mut started = Vec::new();
        for node in prism::nodes()?.into_iter().filter(|n| n.alive) {
            // Embedded, the one node is this process: its ingress is the one above.
            let Some((ip, _)) = node.address.rsplit_once(':') else {
                continue;
            };
            let handle = NodeIngress::options()
                .scheduling(prism::Strategy::NodeAffinity {
                    node_id: node.node_id.clone(),
                    soft: false,
                })
                .max_concurrency(2)
                .remote();
            let listening =
                handle.listen(ip.to_string(), port, token.to_string(), directory.clone());
            let at = prism::get_timeout(&listening, Duration::from_secs(60))?
                .map_err(|e| ServeError::Http(format!("node {}: {e}", node.node_id)))?;
            let at: SocketAddr = at
                .parse()
                .map_err(|e| ServeError::Http(format!("node {}: {at}: {e}", node.node_id)))?;
            tracing::info!(
                "prism-serve listening on http://{at} (node {})",
                node.node_id
            );
            started.push((handle, at));
        }
        *lock(&self.nodes) = started;
        Ok(())
    }

    fn find(&self, name: &str) -> Option<Arc<Managed>> {
        lock_r(&self.ingress.deployments)
            .iter()
            .find(|d| d.name == name)
            .cloned()
    }

    fn delete(&self, name: &str) -> Result<()> {
        let m = self
            .find(name)
            .ok_or_else(|| ServeError::NoDeployment(name.to_string()))?;
        self.ingress.remove_route(name);
        m.delete();
        let grace = m.options().graceful_shutdown_timeout + Duration::from_secs(5);
        let deadline = Instant::now() + grace;
        while !m.gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        lock_w(&self.ingress.deployments).retain(|d| d.name != name);
        directory::disown(name);
        Ok(())
    }

    /// Drains and ends every deployment, then the controller and the ingress; once.
    fn stop(&self) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        let names: Vec<String> = lock_r(&self.ingress.deployments)
            .iter()
            .map(|d| d.name.clone())
            .collect();
        for n in names {
            let _ = self.delete(&n);
        }
        self.stopping.store(true, Ordering::Release);
        // The nodes' ingresses answer 404 from now on, and their actors end (their
        // listeners with their worker processes).
        let last = Directory {
            version: self.version.fetch_add(1, Ordering::AcqRel) + 1,
            deployments: Vec::new(),
        };
        for (n, _) in lock(&self.nodes).drain(..) {
            let _ = prism::get_timeout(&n.set_directory(last.clone()), Duration::from_secs(5));
            prism::kill(&n);
        }
        if let Some(c) = lock(&self.controller).take() {
            let _ = c.join();
        }
        if let Some((tx, task)) = lock(&self.http).take() {
            let _ = tx.send(());
            let _ = crate::tokio()
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
        }
        record::remove(&self.record);
        let (m, cv) = &self.stopped;
        *lock(m) = true;
        cv.notify_all();
    }

    fn tick(&self) {
        let all: Vec<Arc<Managed>> = lock_r(&self.ingress.deployments).clone();
        let directory = self.directory(&all);
        let mut changed = false;
        for d in &all {
            changed |= d.tick(&directory);
        }
        if changed {
            self.version.fetch_add(1, Ordering::AcqRel);
            let directory = self.directory(&all);
            for d in &all {
                for r in d.all_handles() {
                    // Fire and forget: a replica that misses one takes the next.
                    let _ = r.set_directory(directory.clone());
                }
            }
            for (n, _) in lock(&self.nodes).iter() {
                let _ = n.set_directory(directory.clone());
            }
        }
    }

    fn directory(&self, all: &[Arc<Managed>]) -> Directory {
        Directory {
            version: self.version.load(Ordering::Acquire),
            deployments: all.iter().map(|d| d.entry()).collect(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_r<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn lock_w<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}
