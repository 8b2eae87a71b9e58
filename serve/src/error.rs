//! The errors: [`HttpError`], what a request ends with when it is not answered (with the
//! HTTP status it maps to), and [`ServeError`], what the serving API's calls fail with.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A request's failure, with the HTTP status the ingress answers it with: what a
/// handler returns to refuse a request, and what a handle's response fails with.
///
/// ```
/// let e = prism_serve::HttpError::bad_request("no features");
/// assert_eq!((e.status, e.message.as_str()), (400, "no features"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct HttpError {
    /// The HTTP status code.
    pub status: u16,
    /// Why, sent as the response body.
    pub message: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl HttpError {
    /// A failure with this status.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is wrong (its body does not parse, a value is out of range).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 404: no such deployment or handler.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// 500: the handler failed (or panicked).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// 503: no replica can take the request (too many queued, none running).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }

    /// 504: the request was not answered within its timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, message)
    }
}

impl From<String> for HttpError {
    /// A message alone is a 500.
    fn from(message: String) -> Self {
        HttpError::internal(message)
    }
}

impl From<&str> for HttpError {
    /// A message alone is a 500.
    fn from(message: &str) -> Self {
        HttpError::internal(message)
    }
}

/// What the serving API's calls fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    /// prism is not started, or the runtime failed under a call.
    #[error("prism: {0}")]
    Runtime(#[from] prism::Error),
    /// An option or argument is wrong: the message says which and why.
    #[error("{0}")]
    Config(String),
    /// No deployment of this name is running.
    #[error("no deployment is named {0:?}")]
    NoDeployment(String),
    /// The HTTP ingress could not be started.
    #[error("the HTTP ingress: {0}")]
    Http(String),
    /// A deployment's replicas did not start: the last one's reason.
    #[error("deployment {deployment}: {reason}")]
    ReplicaFailed {
        /// The deployment.
        deployment: String,
        /// Why its replica failed.
        reason: String,
    },
    /// Waited past a deadline: what for.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A request's own failure (from a handle).
    #[error("{0}")]
    Request(#[from] HttpError),
}

/// The result of the serving API's calls.
pub type Result<T, E = ServeError> = std::result::Result<T, E>;
