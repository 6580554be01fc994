//! The one error type of the worker crate, and its HTTP answer.
//!
//! [`WorkerError::kind`] maps each error to an [`ErrorKind`] of the core's
//! one table (crates/core/src/error.rs), which gives its HTTP status and
//! code: the worker has no status table of its own. [`IntoResponse`] answers
//! `{"message": ..., "code": ...}` with that status and logs the details of
//! server-side faults (5xx) where only the operator sees them.

use alluxiofs_core::error::ErrorKind;
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
    /// A data read of a directory.
    #[error("{path}: is a directory, not a file")]
    IsADirectory {
        /// The UFS URL.
        path: String,
    },
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
    /// The UFS could not be reached, or is in an outage the worker is
    /// waiting out ([`crate::outage`]).
    #[error("{path}: the UFS is unreachable: {reason}")]
    UfsUnreachable {
        /// The UFS URL.
        path: String,
        /// What failed, and for how long.
        reason: String,
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
    /// The kind of this error in the core's table.
    pub fn kind(&self) -> ErrorKind {
        match self {
            WorkerError::Config(_)
            | WorkerError::Cli(_)
            | WorkerError::Internal(_)
            | WorkerError::Io { .. } => ErrorKind::Internal,
            WorkerError::BadRequest(_) => ErrorKind::InvalidArgument,
            WorkerError::IsADirectory { .. } => ErrorKind::IsADirectory,
            WorkerError::Unauthorized => ErrorKind::Unauthenticated,
            WorkerError::Forbidden { .. } => ErrorKind::PermissionDenied,
            WorkerError::NotFound { .. } => ErrorKind::NotFound,
            WorkerError::Changed { .. } => ErrorKind::ObjectChanged,
            WorkerError::Ufs { source, .. } => match source {
                object_store::Error::NotFound { .. } => ErrorKind::NotFound,
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => ErrorKind::PermissionDenied,
                object_store::Error::Precondition { .. } => ErrorKind::ObjectChanged,
                object_store::Error::InvalidPath { .. } => ErrorKind::InvalidArgument,
                // A path through a file (`dir/file.bin/x`) on a local UFS: nothing
                // is there, as on an object store. Not a fault of the UFS, so not
                // a 5xx that would make clients skip this worker.
                other if io_kind(other) == Some(std::io::ErrorKind::NotADirectory) => {
                    ErrorKind::NotFound
                }
                // What the request asked of a local UFS cannot be: not a fault
                // of the UFS either.
                other => match client_kind_of(other) {
                    Some(kind) => kind,
                    // This one path's UFS failure (502), told apart by its code
                    // from a worker that cannot serve at all (503).
                    None => ErrorKind::UfsFailure,
                },
            },
            WorkerError::UfsUnreachable { .. } => ErrorKind::UfsUnreachable,
            WorkerError::Conflict(_) => ErrorKind::Conflict,
            WorkerError::QuotaExceeded(_) => ErrorKind::QuotaExceeded,
            WorkerError::Unavailable(_) => ErrorKind::Unavailable,
            WorkerError::Shared(inner) => inner.kind(),
        }
    }

    /// The HTTP status this error answers with (its kind's).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
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

/// The error kind of a local UFS's I/O error that the request caused (a
/// write over a directory, a name too long for the filesystem, a file where
/// a directory would go), if it is one.
pub(crate) fn client_kind(io: std::io::ErrorKind) -> Option<ErrorKind> {
    use std::io::ErrorKind as Io;
    match io {
        Io::IsADirectory => Some(ErrorKind::IsADirectory),
        Io::InvalidFilename => Some(ErrorKind::InvalidArgument),
        Io::AlreadyExists => Some(ErrorKind::AlreadyExists),
        Io::DirectoryNotEmpty => Some(ErrorKind::Conflict),
        _ => None,
    }
}

/// Whether `e` is a UFS error that the request caused ([`client_kind`]):
/// not counted as a UFS failure.
pub(crate) fn caused_by_request(e: &object_store::Error) -> bool {
    client_kind_of(e).is_some()
}

/// The [`client_kind`] of the first I/O error in `err`'s chain of sources
/// that has one (an upload's error wraps the store's error in an I/O error
/// of kind `Other`, which wraps the local one).
pub(crate) fn client_kind_of(err: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(kind) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| client_kind(io.kind()))
        {
            return Some(kind);
        }
        cur = e.source();
    }
    None
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
            E::IsADirectory { path } => WorkerError::IsADirectory { path },
            // Answered as not found, as the worker answers a path through a
            // file itself (see `kind`).
            E::NotADirectory { path } => WorkerError::not_found(path),
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
        let kind = self.kind();
        let status = self.status();
        let message = self.to_string();
        if kind == ErrorKind::UfsUnreachable {
            // Logged once per outage by crate::ufs; every request of it
            // would flood the log.
            tracing::debug!(status = status.as_u16(), "request failed: {message}");
        } else if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = ?self, "request failed: {message}");
        } else {
            tracing::debug!(status = status.as_u16(), "request refused: {message}");
        }
        let body = serde_json::to_vec(&ErrorBody {
            message,
            code: Some(kind.code().to_string()),
        })
        .unwrap_or_default();
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
        assert_eq!(other.kind(), ErrorKind::UfsFailure);
    }

    #[tokio::test]
    async fn the_answer_carries_the_code_the_client_maps_back() {
        let cases = [
            (
                WorkerError::IsADirectory {
                    path: "s3://b/d".into(),
                },
                400,
                "is_a_directory",
            ),
            (
                WorkerError::BadRequest("bad range".into()),
                400,
                "invalid_argument",
            ),
            (WorkerError::Unauthorized, 401, "unauthenticated"),
            (WorkerError::not_found("s3://b/x"), 404, "not_found"),
            (
                WorkerError::Unavailable("stopping".into()),
                503,
                "unavailable",
            ),
            (
                ufs(std::io::Error::other("disk on fire")),
                502,
                "ufs_failure",
            ),
        ];
        for (e, status, code) in cases {
            let resp = e.into_response();
            assert_eq!(resp.status().as_u16(), status);
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body.code.as_deref(), Some(code));
        }
        let answer = WorkerError::IsADirectory {
            path: "s3://b/d".into(),
        }
        .into_response();
        let bytes = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let back = alluxiofs_core::Error::from_response("w:1", 400, "s3://b/d", &text);
        assert!(matches!(back, alluxiofs_core::Error::IsADirectory { .. }));
    }
}
