//! [`DeploymentHandle`]: calls to a deployment from code (the driver, or another
//! deployment's handler), routed by this process's router as HTTP requests are.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::directory;
use crate::error::HttpError;
use crate::router::Pending;

/// A handle on a deployment of the running application, by name: usable in the
/// driver and inside any deployment's handlers, on any node. Its calls go through the
/// same routing as HTTP requests (power of two choices, `max_ongoing_requests`,
/// batching) and answer with a [`Response`] to `.await` or [`get`](Response::get).
///
/// ```no_run
/// # use prism_serve::{DeploymentHandle, HttpError};
/// # #[derive(serde::Serialize)] struct Features { features: Vec<f32> }
/// # #[derive(serde::Deserialize)] struct Digit { digit: usize }
/// let model = DeploymentHandle::new("digits");
/// let d: Result<Digit, HttpError> = model.call(&Features { features: vec![0.0; 64] }).get();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentHandle {
    deployment: String,
    handler: String,
}

impl DeploymentHandle {
    /// A handle on the deployment `name`, calling its default handler.
    pub fn new(name: impl Into<String>) -> Self {
        DeploymentHandle {
            deployment: name.into(),
            handler: String::new(),
        }
    }

    /// The same deployment, calling its handler `name` instead.
    pub fn method(&self, name: &str) -> Self {
        DeploymentHandle {
            deployment: self.deployment.clone(),
            handler: name.to_string(),
        }
    }

    /// The deployment's name.
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// Sends `request`; the response comes as a [`Response`].
    pub fn call<Req: Serialize, Resp: DeserializeOwned>(&self, request: &Req) -> Response<Resp> {
        let sent = serde_json::to_vec(request)
            .map_err(|e| HttpError::bad_request(format!("the request does not encode: {e}")))
            .and_then(|body| self.send(body));
        Response {
            state: sent,
            _type: PhantomData,
        }
    }

    fn send(&self, body: Vec<u8>) -> Result<Pending, HttpError> {
        let router = directory::lookup(&self.deployment).ok_or_else(|| {
            HttpError::not_found(format!(
                "no deployment named {:?} is known in this process",
                self.deployment
            ))
        })?;
        router.call(&self.handler, body)
    }
}

/// The answer of a [`DeploymentHandle::call`]: a future, or [`get`](Response::get) to
/// block for it.
pub struct Response<T> {
    state: Result<Pending, HttpError>,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Response<T> {
    /// Blocks until the answer comes (lending the CPUs of the task or actor that
    /// waits, as `prism::get` does).
    pub fn get(self) -> Result<T, HttpError> {
        prism::block_on(self)
    }

    /// Blocks until the answer comes or `timeout` passes (then 504).
    pub fn get_timeout(self, timeout: Duration) -> Result<T, HttpError> {
        // The timer belongs to the serving runtime, whichever thread waits.
        let timed = {
            let _runtime = crate::tokio().enter();
            tokio::time::timeout(timeout, self)
        };
        prism::block_on(timed)
            .unwrap_or_else(|_| Err(HttpError::timeout(format!("no answer within {timeout:?}"))))
    }
}

impl<T: DeserializeOwned> Future for Response<T> {
    type Output = Result<T, HttpError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let pending = match &mut self.state {
            Ok(p) => p,
            Err(e) => return Poll::Ready(Err(e.clone())),
        };
        match Pin::new(pending).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(reply) => Poll::Ready(reply.and_then(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| {
                    HttpError::internal(format!("the response does not parse as asked: {e}"))
                })
            })),
        }
    }
}
