//! The one error type of the core crate.
//!
//! Every variant carries the path (UFS URL) it is about where there is one, so
//! that the Python layer can raise `FileNotFoundError(path)` and friends from a
//! single mapping. HTTP statuses map to variants in [`Error::from_status`] and
//! back in [`Error::status`]; nothing else in the workspace should hard-code
//! that table.

use std::time::Duration;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the client core (and the shared URL/info helpers).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No file or directory at this URL.
    #[error("{path}: not found")]
    NotFound {
        /// The UFS URL.
        path: String,
    },
    /// The URL is outside the mounts, has dot segments, or the token is wrong.
    #[error("{path}: permission denied: {reason}")]
    PermissionDenied {
        /// The UFS URL (as given).
        path: String,
        /// Why access was refused.
        reason: String,
    },
    /// Malformed input: a URL that cannot be parsed, a bad range, bad options.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Something already exists where it must not.
    #[error("{path}: already exists")]
    AlreadyExists {
        /// The UFS URL.
        path: String,
    },
    /// The object changed (new ETag/mtime) while a reader had it open.
    #[error("{path}: object changed while open (expected version {expected}, found {found})")]
    ObjectChanged {
        /// The UFS URL.
        path: String,
        /// The version the reader started with.
        expected: String,
        /// The version now in the UFS (may be empty when unknown).
        found: String,
    },
    /// A worker could not be reached, broke off an answer, or answered 5xx
    /// (or 408, 429). Reads that hit this fall back to the next replica,
    /// then to the UFS.
    #[error("worker {worker} unavailable: {reason}")]
    WorkerUnavailable {
        /// `host:port` of the worker.
        worker: String,
        /// What went wrong.
        reason: String,
    },
    /// A worker request did not finish in time: the connection was not made
    /// within `connect_timeout` or the answer (body included) did not come
    /// within `request_timeout`. The limit, then what timed out (the worker's
    /// `host:port` first). A worker fault like [`Error::WorkerUnavailable`]:
    /// retried, then the next replica, then the UFS.
    #[error("timed out after {0:?}: {1}")]
    Timeout(Duration, String),
    /// No workers are configured or known.
    #[error("no cache workers available: {0}")]
    NoWorkers(String),
    /// Any other HTTP answer from a worker.
    #[error("worker {worker} answered {status}: {message}")]
    Http {
        /// `host:port` of the worker.
        worker: String,
        /// The UFS URL (or endpoint) the request was about.
        path: String,
        /// HTTP status code.
        status: u16,
        /// The `message` of the JSON error body, or the raw body.
        message: String,
    },
    /// Local I/O error.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Clone for Error {
    /// A copy for a second receiver (several inputs of one file, a fault
    /// remembered for a skipped worker). An [`Error::Io`] keeps its kind and
    /// message.
    fn clone(&self) -> Self {
        match self {
            Error::NotFound { path } => Error::NotFound { path: path.clone() },
            Error::PermissionDenied { path, reason } => Error::PermissionDenied {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::InvalidArgument(m) => Error::InvalidArgument(m.clone()),
            Error::AlreadyExists { path } => Error::AlreadyExists { path: path.clone() },
            Error::ObjectChanged {
                path,
                expected,
                found,
            } => Error::ObjectChanged {
                path: path.clone(),
                expected: expected.clone(),
                found: found.clone(),
            },
            Error::WorkerUnavailable { worker, reason } => Error::WorkerUnavailable {
                worker: worker.clone(),
                reason: reason.clone(),
            },
            Error::Timeout(d, m) => Error::Timeout(*d, m.clone()),
            Error::NoWorkers(m) => Error::NoWorkers(m.clone()),
            Error::Http {
                worker,
                path,
                status,
                message,
            } => Error::Http {
                worker: worker.clone(),
                path: path.clone(),
                status: *status,
                message: message.clone(),
            },
            Error::Io(io) => Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        }
    }
}

impl Error {
    /// Map an HTTP error answer of a worker to an error, the inverse of
    /// [`Error::status`]. `path` is the UFS URL the request was about.
    pub fn from_status(worker: &str, status: u16, path: &str, message: String) -> Error {
        match status {
            400 | 416 => Error::InvalidArgument(message),
            401 | 403 => Error::PermissionDenied {
                path: path.to_string(),
                reason: message,
            },
            404 => Error::NotFound {
                path: path.to_string(),
            },
            409 => Error::AlreadyExists {
                path: path.to_string(),
            },
            412 => Error::ObjectChanged {
                path: path.to_string(),
                expected: String::new(),
                found: message,
            },
            408 | 429 | 500..=599 => Error::WorkerUnavailable {
                worker: worker.to_string(),
                reason: format!("HTTP {status}: {message}"),
            },
            _ => Error::Http {
                worker: worker.to_string(),
                path: path.to_string(),
                status,
                message,
            },
        }
    }

    /// The HTTP status a worker answers for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::NotFound { .. } => 404,
            Error::PermissionDenied { .. } => 403,
            Error::InvalidArgument(_) => 400,
            Error::AlreadyExists { .. } => 409,
            Error::ObjectChanged { .. } => 412,
            Error::WorkerUnavailable { .. } | Error::NoWorkers(_) => 503,
            Error::Timeout(..) => 504,
            Error::Http { status, .. } => *status,
            Error::Io(_) => 500,
        }
    }

    /// Whether a read that failed with this error should be retried on the
    /// next replica or answered from the UFS instead (the worker, not the
    /// request, is at fault).
    pub fn is_worker_fault(&self) -> bool {
        matches!(
            self,
            Error::WorkerUnavailable { .. } | Error::Timeout(..) | Error::NoWorkers(_)
        ) || matches!(self, Error::Http { status, .. } if *status >= 500)
    }
}
