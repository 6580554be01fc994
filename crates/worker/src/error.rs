//! The one error type of the worker crate, and its HTTP answer.
//!
//! [`WorkerError::status`] is the single table from error to HTTP status;
//! [`IntoResponse`] answers that status with `{"message": ...}` and logs
//! the details of server-side faults (5xx) where only the operator sees them.

use alluxiofs_core::info::ErrorBody;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Errors of the cache worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Invalid configuration (missing mount, bad size, unreadable file).
    #[error("configuration error: {0}")]
    Config(String),
    /// The command line could not be parsed (also `--help`/`--version`,
    /// which [`crate::run_cli`] prints and treats as success).
    #[error("{0}")]
    Cli(#[from] clap::Error),
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong bearer token.
    #[error("missing or invalid auth token")]
    Unauthorized,
    /// The URL is outside the mounts or not allowed.
    #[error("{path}: permission denied: {reason}")]
    Forbidden {
        /// The URL as given.
        path: String,
        /// Why.
        reason: String,
    },
    /// Nothing at this URL (or an unknown `path_id`).
    #[error("{path}: not found{hint}")]
    NotFound {
        /// The URL or path id.
        path: String,
        /// Extra advice for the caller (may be empty).
        hint: String,
    },
    /// The object changed: its version is not the one asked for.
    #[error("{path}: object changed (expected version {expected}, found {found})")]
    Changed {
        /// The UFS URL.
        path: String,
        /// The version the request named.
        expected: String,
        /// The version now in the UFS.
        found: String,
    },
    /// The UFS answered with an error.
    #[error("{path}: UFS error: {source}")]
    Ufs {
        /// The UFS URL.
        path: String,
        /// What `object_store` reported.
        #[source]
        source: object_store::Error,
    },
    /// Local I/O failed (cache directory, ready file, socket).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The request conflicts with the cache's state (a free that would
    /// remove pinned pages).
    #[error("{0}")]
    Conflict(String),
    /// The request would exceed a storage quota (the pin quota).
    #[error("{0}")]
    QuotaExceeded(String),
    /// The worker is shutting down.
    #[error("worker unavailable: {0}")]
    Unavailable(String),
    /// An unexpected internal fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// One error shared by every request waiting on the same UFS fetch.
    #[error("{0}")]
    Shared(Arc<WorkerError>),
}

/// Result alias of the worker crate.
pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

impl WorkerError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            WorkerError::Config(_) | WorkerError::Cli(_) | WorkerError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            WorkerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WorkerError::Unauthorized => StatusCode::UNAUTHORIZED,
            WorkerError::Forbidden { .. } => StatusCode::FORBIDDEN,
            WorkerError::NotFound { .. } => StatusCode::NOT_FOUND,
            WorkerError::Changed { .. } => StatusCode::PRECONDITION_FAILED,
            WorkerError::Ufs { source, .. } => match source {
                object_store::Error::NotFound { .. } => StatusCode::NOT_FOUND,
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => StatusCode::FORBIDDEN,
                object_store::Error::Precondition { .. } => StatusCode::PRECONDITION_FAILED,
                object_store::Error::InvalidPath { .. } => StatusCode::BAD_REQUEST,
                // A path through a file (`dir/file.bin/x`) on a local UFS: nothing
                // is there, as on an object store. Not a fault of the UFS, so not
                // a 5xx that would make clients skip this worker.
                other if io_kind(other) == Some(std::io::ErrorKind::NotADirectory) => {
                    StatusCode::NOT_FOUND
                }
                _ => StatusCode::BAD_GATEWAY,
            },
            WorkerError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            WorkerError::Conflict(_) => StatusCode::CONFLICT,
            WorkerError::QuotaExceeded(_) => StatusCode::INSUFFICIENT_STORAGE,
            WorkerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WorkerError::Shared(inner) => inner.status(),
        }
    }

    /// Whether this is "the object changed under us" (a failed precondition
    /// or a version mismatch), which a read answers by refreshing metadata.
    pub fn is_changed(&self) -> bool {
        match self {
            WorkerError::Changed { .. } => true,
            WorkerError::Ufs {
                source: object_store::Error::Precondition { .. },
                ..
            } => true,
            WorkerError::Shared(inner) => inner.is_changed(),
            _ => false,
        }
    }

    /// Shorthand for [`WorkerError::Io`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        WorkerError::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for a 404 without a hint.
    pub fn not_found(path: impl Into<String>) -> Self {
        WorkerError::NotFound {
            path: path.into(),
            hint: String::new(),
        }
    }
}

/// The kind of the first `std::io::Error` in `err`'s chain of sources, if any.
fn io_kind(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = e.source();
    }
    None
}

impl From<alluxiofs_core::Error> for WorkerError {
    fn from(e: alluxiofs_core::Error) -> Self {
        use alluxiofs_core::Error as E;
        match e {
            E::NotFound { path } => WorkerError::not_found(path),
            E::PermissionDenied { path, reason } => WorkerError::Forbidden { path, reason },
            E::InvalidArgument(m) => WorkerError::BadRequest(m),
            E::ObjectChanged {
                path,
                expected,
                found,
            } => WorkerError::Changed {
                path,
                expected,
                found,
            },
            E::Io(source) => WorkerError::io("I/O", source),
            other => WorkerError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for WorkerError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = ?self, "request failed: {message}");
        } else {
            tracing::debug!(status = status.as_u16(), "request refused: {message}");
        }
        let body = serde_json::to_vec(&ErrorBody { message }).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ufs(source: std::io::Error) -> WorkerError {
        WorkerError::Ufs {
            path: "file:///data/a.bin/x".into(),
            source: object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(source),
            },
        }
    }

    #[test]
    fn a_path_through_a_file_is_not_found_not_a_gateway_fault() {
        let e = ufs(std::io::Error::from(std::io::ErrorKind::NotADirectory));
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let shared = WorkerError::Shared(Arc::new(e));
        assert_eq!(shared.status(), StatusCode::NOT_FOUND);
        let other = ufs(std::io::Error::other("disk on fire"));
        assert_eq!(other.status(), StatusCode::BAD_GATEWAY);
    }
}
