//! The one error type of the core crate, and the one table of error kinds
//! that worker and client share.
//!
//! Every variant carries the path (UFS URL) it is about where there is one, so
//! that the Python layer can raise `FileNotFoundError(path)` and friends from a
//! single mapping.
//!
//! [`ErrorKind`] is the wire side: each kind has one HTTP status and one
//! stable machine-readable code (`not_found`, `is_a_directory`, ...) that the
//! worker writes into its JSON error body ([`crate::info::ErrorBody`]). The
//! worker maps its errors to a kind; the client maps (status, code) back to an
//! [`Error`] in [`Error::from_response`]. A body without a code (an older
//! worker, a proxy) maps by status alone, as before codes existed. Nothing else
//! in the workspace should hard-code statuses.

use std::time::Duration;

use crate::info::ErrorBody;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as worker and client agree on it over HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed request: bad range, bad page index, unparsable URL.
    InvalidArgument,
    /// A data read of a directory.
    IsADirectory,
    /// The request did not carry the worker's auth token.
    Unauthenticated,
    /// The URL is outside the mounts, or the UFS refused the credentials.
    PermissionDenied,
    /// No file or directory at this URL.
    NotFound,
    /// A path through a file (`a.bin/x`). The worker answers that as
    /// [`ErrorKind::NotFound`], as an object store does; the kind is here
    /// so that the core's [`Error::NotADirectory`] has a wire form.
    NotADirectory,
    /// Something already exists where it must not.
    AlreadyExists,
    /// The request conflicts with the cache's state (a free that would
    /// remove pinned pages). A client takes it as [`ErrorKind::AlreadyExists`],
    /// the other 409.
    Conflict,
    /// The object's version is not the one asked for.
    ObjectChanged,
    /// An unexpected fault of the worker (logged there).
    Internal,
    /// The UFS failed for this one path, in a way the worker could not map.
    UfsFailure,
    /// The UFS cannot be reached at all (connection refused or reset,
    /// timeouts, 5xx and throttling after retries), or the worker knows
    /// of an outage it is waiting out. Nothing better can come of asking
    /// the UFS again now: a client does not fall back to it.
    UfsUnreachable,
    /// The worker as a whole cannot serve (shutting down).
    Unavailable,
    /// A request did not finish in time (client side; a proxy's 504).
    Timeout,
    /// The request would exceed a storage quota (the pin quota).
    QuotaExceeded,
}

impl ErrorKind {
    /// Every kind, in the order [`ErrorKind::from_status`] prefers them
    /// (the first kind of a status is the one a code-less answer means).
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::InvalidArgument,
        ErrorKind::IsADirectory,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::NotADirectory,
        ErrorKind::AlreadyExists,
        ErrorKind::Conflict,
        ErrorKind::ObjectChanged,
        ErrorKind::Internal,
        ErrorKind::UfsFailure,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::QuotaExceeded,
        ErrorKind::UfsUnreachable,
    ];

    /// THE table: the HTTP status and the code of each kind.
    const fn wire(self) -> (u16, &'static str) {
        match self {
            ErrorKind::InvalidArgument => (400, "invalid_argument"),
            // 400 as before the code existed, so an older client still
            // sees a request fault (ValueError) and no worker fault.
            ErrorKind::IsADirectory => (400, "is_a_directory"),
            ErrorKind::Unauthenticated => (401, "unauthenticated"),
            ErrorKind::PermissionDenied => (403, "permission_denied"),
            ErrorKind::NotFound => (404, "not_found"),
            ErrorKind::NotADirectory => (404, "not_a_directory"),
            ErrorKind::AlreadyExists => (409, "already_exists"),
            ErrorKind::Conflict => (409, "conflict"),
            ErrorKind::ObjectChanged => (412, "object_changed"),
            ErrorKind::Internal => (500, "internal"),
            ErrorKind::UfsFailure => (502, "ufs_failure"),
            ErrorKind::Unavailable => (503, "unavailable"),
            ErrorKind::Timeout => (504, "timeout"),
            ErrorKind::QuotaExceeded => (507, "quota_exceeded"),
            // 502 as UfsFailure: an older client sees a fault of the UFS.
            ErrorKind::UfsUnreachable => (502, "ufs_unreachable"),
        }
    }

    /// The HTTP status of this kind.
    pub const fn status(self) -> u16 {
        self.wire().0
    }

    /// The stable machine-readable code of this kind (the `code` of the
    /// JSON error body).
    pub const fn code(self) -> &'static str {
        self.wire().1
    }

    /// The kind a code names; `None` for a code this client does not know
    /// (a newer worker), which then maps by status.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The kind an answer without a code means: the first kind of that
    /// status, 416 as a bad request, 408 and 429 (a proxy's) as an
    /// unavailable worker, any other 5xx as an internal fault; `None` for
    /// other statuses.
    pub fn from_status(status: u16) -> Option<ErrorKind> {
        if let Some(k) = ErrorKind::ALL.into_iter().find(|k| k.status() == status) {
            return Some(k);
        }
        match status {
            416 => Some(ErrorKind::InvalidArgument),
            408 | 429 => Some(ErrorKind::Unavailable),
            500..=599 => Some(ErrorKind::Internal),
            _ => None,
        }
    }
}

/// Errors of the client core (and the shared URL/info helpers).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No file or directory at this URL.
    #[error("{path}: not found")]
    NotFound {
        /// The UFS URL.
        path: String,
    },
    /// A data read of a directory.
    #[error("{path}: is a directory, not a file")]
    IsADirectory {
        /// The UFS URL.
        path: String,
    },
    /// A path through a file (`a.bin/x`).
    #[error("{path}: not a directory")]
    NotADirectory {
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
    /// The worker is up but the UFS failed for this one path (a 502 with the
    /// code `ufs_failure`). A worker fault for the read (the next replica,
    /// then the UFS serve it), but the worker is not skipped for other paths.
    #[error("worker {worker}: the UFS failed for {path}: {message}")]
    UfsFailure {
        /// `host:port` of the worker.
        worker: String,
        /// The UFS URL.
        path: String,
        /// What the worker said.
        message: String,
    },
    /// The worker is up but cannot reach the UFS (a 502 with the code
    /// `ufs_unreachable`): the next replica may still serve the read from
    /// its cache, but a client does not fall back to the UFS itself.
    #[error("worker {worker}: the UFS is unreachable for {path}: {message}")]
    UfsUnreachable {
        /// `host:port` of the worker.
        worker: String,
        /// The UFS URL.
        path: String,
        /// What the worker said.
        message: String,
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
    /// message (`std::io::Error` is not `Clone`; holding it in an `Arc` to
    /// derive this would change how every other module builds an `Io`).
    fn clone(&self) -> Self {
        match self {
            Error::NotFound { path } => Error::NotFound { path: path.clone() },
            Error::IsADirectory { path } => Error::IsADirectory { path: path.clone() },
            Error::NotADirectory { path } => Error::NotADirectory { path: path.clone() },
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
            Error::UfsFailure {
                worker,
                path,
                message,
            } => Error::UfsFailure {
                worker: worker.clone(),
                path: path.clone(),
                message: message.clone(),
            },
            Error::UfsUnreachable {
                worker,
                path,
                message,
            } => Error::UfsUnreachable {
                worker: worker.clone(),
                path: path.clone(),
                message: message.clone(),
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
    /// Map a worker's error answer to an error: `body` is the JSON error
    /// body ([`ErrorBody`]) or, from something that is not a worker, any
    /// text. The kind is the body's `code` when this client knows it, else
    /// the status's ([`ErrorKind::from_status`]). `path` is the UFS URL the
    /// request was about.
    pub fn from_response(worker: &str, status: u16, path: &str, body: &str) -> Error {
        let (message, code) = match serde_json::from_str::<ErrorBody>(body) {
            Ok(b) => (b.message, b.code),
            Err(_) => (body.trim().to_string(), None),
        };
        let kind = code.as_deref().and_then(ErrorKind::from_code);
        Error::from_kind(kind, worker, status, path, message)
    }

    /// Map an HTTP error answer without a code to an error (the body's
    /// message already extracted): [`Error::from_response`] for older
    /// workers.
    pub fn from_status(worker: &str, status: u16, path: &str, message: String) -> Error {
        Error::from_kind(None, worker, status, path, message)
    }

    /// The error of an answer of `kind` (`None`: by `status`), the inverse
    /// of [`Error::kind`].
    fn from_kind(
        kind: Option<ErrorKind>,
        worker: &str,
        status: u16,
        path: &str,
        message: String,
    ) -> Error {
        let path = path.to_string();
        // Only a worker that says so (the code) blames the UFS for this one
        // path; a bare 502 may be a proxy in front of a dead worker.
        if kind == Some(ErrorKind::UfsFailure) {
            return Error::UfsFailure {
                worker: worker.to_string(),
                path,
                message,
            };
        }
        if kind == Some(ErrorKind::UfsUnreachable) {
            return Error::UfsUnreachable {
                worker: worker.to_string(),
                path,
                message,
            };
        }
        let Some(kind) = kind.or_else(|| ErrorKind::from_status(status)) else {
            return Error::Http {
                worker: worker.to_string(),
                path,
                status,
                message,
            };
        };
        match kind {
            ErrorKind::InvalidArgument => Error::InvalidArgument(message),
            ErrorKind::IsADirectory => Error::IsADirectory { path },
            ErrorKind::NotADirectory => Error::NotADirectory { path },
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => Error::PermissionDenied {
                path,
                reason: message,
            },
            ErrorKind::NotFound => Error::NotFound { path },
            ErrorKind::AlreadyExists | ErrorKind::Conflict => Error::AlreadyExists { path },
            ErrorKind::ObjectChanged => Error::ObjectChanged {
                path,
                expected: String::new(),
                found: message,
            },
            // Any other 5xx is a fault of the worker: retried, the next
            // replica, then the UFS, and the worker skipped for a while.
            // (A code-less 502 lands here too: see above.)
            ErrorKind::Internal
            | ErrorKind::UfsFailure
            | ErrorKind::UfsUnreachable
            | ErrorKind::Unavailable
            | ErrorKind::Timeout
            | ErrorKind::QuotaExceeded => Error::WorkerUnavailable {
                worker: worker.to_string(),
                reason: format!("HTTP {status}: {message}"),
            },
        }
    }

    /// The kind of this error, as a worker would answer it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::IsADirectory { .. } => ErrorKind::IsADirectory,
            Error::NotADirectory { .. } => ErrorKind::NotADirectory,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::ObjectChanged { .. } => ErrorKind::ObjectChanged,
            Error::WorkerUnavailable { .. } | Error::NoWorkers(_) => ErrorKind::Unavailable,
            Error::UfsFailure { .. } => ErrorKind::UfsFailure,
            Error::UfsUnreachable { .. } => ErrorKind::UfsUnreachable,
            Error::Timeout(..) => ErrorKind::Timeout,
            Error::Http { status, .. } => {
                ErrorKind::from_status(*status).unwrap_or(ErrorKind::Internal)
            }
            Error::Io(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status a worker answers for this error (an [`Error::Http`]
    /// keeps the status it came with).
    pub fn status(&self) -> u16 {
        match self {
            Error::Http { status, .. } => *status,
            other => other.kind().status(),
        }
    }

    /// Whether a read that failed with this error should be retried on the
    /// next replica or answered from the UFS instead (the worker, not the
    /// request, is at fault).
    pub fn is_worker_fault(&self) -> bool {
        matches!(
            self,
            Error::WorkerUnavailable { .. }
                | Error::UfsFailure { .. }
                | Error::UfsUnreachable { .. }
                | Error::Timeout(..)
                | Error::NoWorkers(_)
        ) || matches!(self, Error::Http { status, .. } if *status >= 500)
    }

    /// Whether this worker fault is about the one path only (the worker's
    /// UFS failed for it): the next replica or the UFS serves the read, but
    /// the worker stays in use for other paths and is not retried for this
    /// one (it already retried its UFS).
    pub fn is_path_fault(&self) -> bool {
        matches!(
            self,
            Error::UfsFailure { .. } | Error::UfsUnreachable { .. }
        )
    }

    /// Whether a worker said it cannot reach the UFS: a read it left
    /// unserved is not tried at the UFS by the client either (it would
    /// only wait out the same outage).
    pub fn is_ufs_unreachable(&self) -> bool {
        matches!(self, Error::UfsUnreachable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: Option<ErrorKind>, message: &str) -> String {
        serde_json::to_string(&ErrorBody {
            message: message.to_string(),
            code: kind.map(|k| k.code().to_string()),
        })
        .unwrap()
    }

    #[test]
    fn codes_are_unique_and_every_kind_round_trips() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_code(k.code()), Some(k), "{k:?}");
            assert_eq!(
                ErrorKind::ALL
                    .iter()
                    .filter(|o| o.code() == k.code())
                    .count(),
                1
            );
        }
        assert_eq!(ErrorKind::from_code("from_a_newer_worker"), None);
    }

    #[test]
    fn status_and_from_response_are_inverses() {
        let w = "w:1";
        let p = "s3://b/k";
        let errors = [
            Error::NotFound { path: p.into() },
            Error::IsADirectory { path: p.into() },
            Error::NotADirectory { path: p.into() },
            Error::PermissionDenied {
                path: p.into(),
                reason: "outside the mounts".into(),
            },
            Error::InvalidArgument("bad range".into()),
            Error::AlreadyExists { path: p.into() },
            Error::ObjectChanged {
                path: p.into(),
                expected: String::new(),
                found: "v2".into(),
            },
            Error::WorkerUnavailable {
                worker: w.into(),
                reason: "HTTP 503: shutting down".into(),
            },
        ];
        for e in errors {
            let msg = match &e {
                Error::PermissionDenied { reason, .. } => reason.clone(),
                Error::InvalidArgument(m) => m.clone(),
                Error::ObjectChanged { found, .. } => found.clone(),
                Error::WorkerUnavailable { .. } => "shutting down".into(),
                other => other.to_string(),
            };
            let back = Error::from_response(w, e.status(), p, &body(Some(e.kind()), &msg));
            assert_eq!(back.kind(), e.kind(), "{e}");
            assert_eq!(back.to_string(), e.to_string());
        }
        // Every kind of the table comes back as itself or, for the kinds the
        // client does not tell apart, as the same client error.
        for k in ErrorKind::ALL {
            let back = Error::from_response(w, k.status(), p, &body(Some(k), "m"));
            let want = match k {
                ErrorKind::Unauthenticated => ErrorKind::PermissionDenied,
                ErrorKind::Conflict => ErrorKind::AlreadyExists,
                ErrorKind::Internal | ErrorKind::Timeout | ErrorKind::QuotaExceeded => {
                    ErrorKind::Unavailable
                }
                k => k,
            };
            assert_eq!(back.kind(), want, "{k:?}");
        }
    }

    #[test]
    fn an_answer_without_a_code_maps_by_status() {
        let w = "w:1";
        let p = "s3://b/k";
        let old = |status: u16| Error::from_response(w, status, p, r#"{"message": "m"}"#);
        assert!(matches!(old(400), Error::InvalidArgument(_)));
        assert!(matches!(old(416), Error::InvalidArgument(_)));
        assert!(matches!(old(401), Error::PermissionDenied { .. }));
        assert!(matches!(old(403), Error::PermissionDenied { .. }));
        assert!(matches!(old(404), Error::NotFound { .. }));
        assert!(matches!(old(409), Error::AlreadyExists { .. }));
        assert!(matches!(old(412), Error::ObjectChanged { .. }));
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(old(s).is_worker_fault(), "{s}");
            // Only a worker's own code blames the UFS for one path.
            assert!(!old(s).is_path_fault(), "{s}");
        }
        let coded = Error::from_response(w, 502, p, &body(Some(ErrorKind::UfsFailure), "m"));
        assert!(matches!(&coded, Error::UfsFailure { path, .. } if path == p));
        assert!(coded.is_worker_fault() && coded.is_path_fault());
        assert!(matches!(old(405), Error::Http { status: 405, .. }));
        // Not JSON at all (a proxy's page): the text is the message.
        let e = Error::from_response(w, 403, p, " denied by proxy\n");
        assert!(matches!(e, Error::PermissionDenied { reason, .. } if reason == "denied by proxy"));
        // An unknown code falls back on the status.
        let e = Error::from_response(w, 404, p, r#"{"message": "m", "code": "gone_fishing"}"#);
        assert!(matches!(e, Error::NotFound { .. }));
        // from_status is the same mapping for a message already extracted.
        assert!(matches!(
            Error::from_status(w, 400, p, "m".into()),
            Error::InvalidArgument(_)
        ));
    }
}
