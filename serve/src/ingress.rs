//! The HTTP ingress, on axum: each request's path picks a deployment (the longest
//! route prefix that matches) and a handler (the rest of the path), its body goes to
//! the deployment's router as it is, and the answer's JSON comes back with the status
//! of its typed error when it failed. Beside the routes: `/-/healthz`, `/-/routes`,
//! `/-/status` and `/metrics`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;

use crate::controller::Managed;
use crate::error::HttpError;
use crate::metrics::{Gauges, HEADER};
use crate::router::Router;

/// One route: a prefix and the deployment it leads to.
#[derive(Clone)]
pub(crate) struct Route {
    pub prefix: String,
    pub router: Arc<Router>,
    pub timeout: Option<Duration>,
}

/// A callback run once.
type OnShutdown = Box<dyn Fn() + Send + Sync>;

/// What the ingress serves from: the routes, longest prefix first, the deployments
/// (for the status and metrics pages), and the token `POST /-/shutdown` must carry.
pub(crate) struct Ingress {
    routes: RwLock<Vec<Route>>,
    pub(crate) deployments: RwLock<Vec<Arc<Managed>>>,
    token: String,
    shutdown: std::sync::OnceLock<OnShutdown>,
}

/// The header that carries the application's token.
pub const TOKEN_HEADER: &str = "x-prism-token";

impl Ingress {
    pub(crate) fn new(token: String) -> Ingress {
        Ingress {
            routes: RwLock::default(),
            deployments: RwLock::default(),
            token,
            shutdown: std::sync::OnceLock::new(),
        }
    }

    /// What `POST /-/shutdown` runs.
    pub(crate) fn on_shutdown(&self, f: OnShutdown) {
        let _ = self.shutdown.set(f);
    }

    /// Adds (or replaces) the route of a deployment.
    pub(crate) fn set_route(&self, route: Route) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|r| r.router.name != route.router.name);
        routes.push(route);
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    }

    /// The deployment, other than `except`, that already answers under `prefix`.
    pub(crate) fn taken(&self, prefix: &str, except: &str) -> Option<String> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes
            .iter()
            .find(|r| r.prefix == prefix && r.router.name != except)
            .map(|r| r.router.name.clone())
    }

    /// Replaces every route.
    fn replace_routes(&self, mut routes: Vec<Route>) {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = routes;
    }

    /// Removes a deployment's route.
    pub(crate) fn remove_route(&self, name: &str) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|r| r.router.name != name);
    }

    /// The deployment, its timeout and the handler a path leads to.
    fn resolve(&self, path: &str) -> Option<(Arc<Router>, Option<Duration>, String)> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes.iter().find_map(|r| {
            let rest = if r.prefix == "/" {
                Some(&path[1..])
            } else {
                path.strip_prefix(r.prefix.as_str())
                    .and_then(|rest| match rest {
                        "" => Some(""),
                        _ => rest.strip_prefix('/'),
                    })
            }?;
            Some((
                r.router.clone(),
                r.timeout,
                rest.trim_end_matches('/').to_string(),
            ))
        })
    }

    fn metrics(&self) -> String {
        let mut out = String::from(HEADER);
        for d in self
            .deployments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let status = d.status();
            let gauges = Gauges {
                replicas: status
                    .replicas
                    .iter()
                    .filter(|r| r.state == crate::ReplicaState::Running)
                    .count(),
                ongoing: status.replicas.iter().map(|r| r.ongoing).sum(),
                queued: status.queued,
            };
            d.router.metrics.render(&mut out, &d.name, &gauges);
        }
        out
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("a valid response")
}

fn error_response(e: &HttpError) -> Response {
    let body =
        serde_json::to_vec(&serde_json::json!({ "error": e.message })).expect("a string encodes");
    json_response(e.status, body)
}

/// The lines of a streamed response, as they come from the task that pulls them.
struct Lines(tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>);

impl futures_core::Stream for Lines {
    type Item = std::io::Result<Vec<u8>>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// An error as the last line of a stream whose status was sent already.
fn error_line(e: &HttpError) -> Vec<u8> {
    let mut line =
        serde_json::to_vec(&serde_json::json!({ "error": e.message, "status": e.status }))
            .expect("a string encodes");
    line.push(b'\n');
    line
}

/// A streaming handler's answer: each value a JSON line of a chunked response, sent
/// as the replica yields it. An error before the first value is the response's status;
/// one after is the stream's last line.
async fn stream(router: Arc<Router>, handler: String, body: Vec<u8>) -> Response {
    let since = std::time::Instant::now();
    let (slot, replica) = match router.start_stream() {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let opened = match replica.stream_open(handler, body).await {
        Ok(r) => r,
        Err(e) => Err(router.failed(slot, e)),
    };
    let id = match opened {
        Ok(id) => id,
        Err(e) => {
            router.end_stream(slot, e.status, since);
            return error_response(&e);
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    crate::tokio().spawn(async move {
        let status = 'pull: loop {
            let chunk = match replica.stream_next(id).await {
                Ok(c) => c,
                Err(e) => Err(router.failed(slot, e)),
            };
            match chunk {
                Ok((items, ended)) => {
                    for mut item in items {
                        item.push(b'\n');
                        if tx.send(Ok(item)).await.is_err() {
                            // The client left: end the stream on the replica too.
                            let _ = replica.stream_close(id);
                            break 'pull 499;
                        }
                    }
                    if ended {
                        break 200;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Ok(error_line(&e))).await;
                    break e.status;
                }
            }
        };
        router.end_stream(slot, status, since);
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(Lines(rx)))
        .expect("a valid response")
}

async fn request(State(ingress): State<Arc<Ingress>>, uri: Uri, body: Bytes) -> Response {
    let Some((router, timeout, handler)) = ingress.resolve(uri.path()) else {
        return error_response(&HttpError::not_found(format!(
            "no deployment answers {}",
            uri.path()
        )));
    };
    if router.kind(&handler) == Some(crate::HandlerKind::Stream) {
        return stream(router, handler, Vec::from(body)).await;
    }
    let pending = match router.call(&handler, Vec::from(body)) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let answer = match timeout {
        Some(t) => match tokio::time::timeout(t, pending).await {
            Ok(a) => a,
            Err(_) => {
                router.metrics.answered(504, t.as_secs_f64() * 1e3);
                return error_response(&HttpError::timeout(format!(
                    "deployment {} did not answer within {t:?}",
                    router.name
                )));
            }
        },
        None => pending.await,
    };
    match answer {
        Ok(bytes) => json_response(200, bytes),
        Err(e) => error_response(&e),
    }
}

/// Binds `address` and serves until `stop` resolves; returns the bound address.
pub(crate) fn start(
    ingress: Arc<Ingress>,
    address: SocketAddr,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = crate::tokio().block_on(tokio::net::TcpListener::bind(address))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/-/healthz", get(|| async { "ok" }))
        .route(
            "/-/routes",
            get(|State(i): State<Arc<Ingress>>| async move {
                let routes = i.routes.read().unwrap_or_else(|p| p.into_inner());
                let map: serde_json::Map<String, serde_json::Value> = routes
                    .iter()
                    .map(|r| (r.prefix.clone(), r.router.name.clone().into()))
                    .collect();
                json_response(200, serde_json::to_vec(&map).expect("encodes"))
            }),
        )
        .route(
            "/-/status",
            get(|State(i): State<Arc<Ingress>>| async move {
                let all: Vec<_> = i
                    .deployments
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|d| d.status())
                    .collect();
                json_response(200, serde_json::to_vec(&all).expect("encodes"))
            }),
        )
        .route(
            "/-/shutdown",
            axum::routing::post(
                |State(i): State<Arc<Ingress>>, headers: axum::http::HeaderMap| async move {
                    // A node's ingress has no application of its own to stop.
                    let Some(stop) = i.shutdown.get() else {
                        return error_response(&HttpError::not_found(
                            "this is a node's ingress: shut the application down where it runs",
                        ));
                    };
                    let given = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
                    if given != Some(i.token.as_str()) {
                        return error_response(&HttpError::new(
                            401,
                            format!("a shutdown needs the application's token in {TOKEN_HEADER}"),
                        ));
                    }
                    stop();
                    json_response(200, br#"{"shutting_down":true}"#.to_vec())
                },
            ),
        )
        .route(
            "/metrics",
            get(|State(i): State<Arc<Ingress>>| async move {
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(Body::from(i.metrics()))
                    .expect("a valid response")
            }),
        )
        .fallback(request)
        .with_state(ingress);
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        // Answers are small and each waits for its request: never hold one back.
        let _ = tcp.set_nodelay(true);
    });
    let task = crate::tokio().spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await;
        if let Err(e) = served {
            tracing::error!("the HTTP ingress stopped: {e}");
        }
    });
    Ok((bound, task))
}

/// The ingress this process runs for its node (`HttpOptions::every_node`), if any.
static NODE_INGRESS: std::sync::OnceLock<(Arc<Ingress>, SocketAddr)> = std::sync::OnceLock::new();

/// Gives this process's node ingress, if it runs one, the routes of a new directory.
pub(crate) fn node_routes(routes: Vec<Route>) {
    if let Some((ingress, _)) = NODE_INGRESS.get() {
        ingress.replace_routes(routes);
    }
}

/// Starts this process's node ingress on `ip:port` (once; later calls give the address
/// of the first). It routes by the directory this process holds and lives as long
/// as the process.
pub(crate) fn start_node_ingress(ip: &str, port: u16, token: String) -> Result<SocketAddr, String> {
    if let Some((_, at)) = NODE_INGRESS.get() {
        return Ok(*at);
    }
    let address: SocketAddr = format!("{ip}:{port}")
        .parse()
        .map_err(|e| format!("the node's address {ip}:{port}: {e}"))?;
    let ingress = Arc::new(Ingress::new(token));
    let (bound, _task) = start(ingress.clone(), address, std::future::pending())
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let _ = NODE_INGRESS.set((ingress, bound));
    Ok(NODE_INGRESS.get().map_or(bound, |(_, at)| *at))
}
