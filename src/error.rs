//! The exception types of `alluxiofs._alluxiofs` and the one mapping from
//! core errors to Python exceptions ([`to_pyerr`]).
//!
//! Every error about a path becomes the builtin `OSError` subclass Python
//! code already handles (`FileNotFoundError`, `IsADirectoryError`, ...) with
//! `errno` and `filename` (the UFS URL) set, so the Python package never
//! re-maps or guesses: what the worker said (its error code, see
//! `alluxiofs_core::error::ErrorKind`) is what the caller sees. The failure
//! table of `docs/semantics.md` describes the result.

use alluxiofs_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::{
    PyConnectionError, PyFileExistsError, PyFileNotFoundError, PyIsADirectoryError,
    PyNotADirectoryError, PyOSError, PyPermissionError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

create_exception!(
    _alluxiofs,
    AlluxioError,
    PyOSError,
    "An alluxiofs failure that no builtin exception describes (carries the path and cause)."
);
create_exception!(
    _alluxiofs,
    UfsUnreachableError,
    PyConnectionError,
    "The workers cannot reach the UFS (an outage), and nothing they hold could serve the request; the UFS is not tried from here either."
);
create_exception!(
    _alluxiofs,
    ObjectChangedError,
    AlluxioError,
    "The object changed in the UFS (new ETag or mtime) while a file was open."
);

/// `WorkerTimeoutError`: a worker request timed out. A subclass of both
/// `TimeoutError` (what timed out) and `ConnectionError` (the worker could
/// not be used, as for a refused connection), so handlers of either see it.
/// Built once, when the module is imported.
static WORKER_TIMEOUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The `WorkerTimeoutError` type (built on first use).
pub(crate) fn worker_timeout_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    WORKER_TIMEOUT_ERROR
        .get_or_try_init(py, || {
            let bases = PyTuple::new(
                py,
                [
                    py.get_type::<PyTimeoutError>(),
                    py.get_type::<PyConnectionError>(),
                ],
            )?;
            let ns = PyDict::new(py);
            ns.set_item("__module__", "alluxiofs._alluxiofs")?;
            ns.set_item(
                "__doc__",
                "A cache worker did not answer within connect_timeout or request_timeout. \
                 Both a TimeoutError and a ConnectionError.",
            )?;
            let ty = py
                .get_type::<PyType>()
                .call1(("WorkerTimeoutError", bases, ns))?;
            Ok(ty.cast_into::<PyType>()?.unbind())
        })
        .map(|t| t.bind(py))
}

/// A `WorkerTimeoutError` with `msg`.
fn timeout_err(msg: String) -> PyErr {
    Python::attach(|py| match worker_timeout_error(py) {
        Ok(ty) => PyErr::from_type(ty.clone(), msg),
        Err(e) => e,
    })
}

// The errno values of the exceptions below: the same on Linux, macOS and
// Windows (the Python `errno` module's values there).
const ENOENT: i32 = 2;
/// `errno.EIO`: the errno of an `AlluxioError` about a worker's answer.
const EIO: i32 = 5;
const EACCES: i32 = 13;
const EEXIST: i32 = 17;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;

/// The one mapping from core errors to Python exceptions (see the failure
/// table of `docs/semantics.md`).
pub(crate) fn to_pyerr(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::NotFound { path } => PyFileNotFoundError::new_err((ENOENT, msg, path)),
        Error::IsADirectory { path } => PyIsADirectoryError::new_err((EISDIR, msg, path)),
        Error::NotADirectory { path } => PyNotADirectoryError::new_err((ENOTDIR, msg, path)),
        Error::PermissionDenied { path, .. } => PyPermissionError::new_err((EACCES, msg, path)),
        Error::InvalidArgument(_) => PyValueError::new_err(msg),
        Error::AlreadyExists { path } => PyFileExistsError::new_err((EEXIST, msg, path)),
        Error::ObjectChanged { path, .. } => ObjectChangedError::new_err((EIO, msg, path)),
        Error::Timeout(..) => timeout_err(msg),
        Error::WorkerUnavailable { .. } | Error::NoWorkers(_) => PyConnectionError::new_err(msg),
        Error::UfsFailure { path, .. } => PyConnectionError::new_err((EIO, msg, path)),
        Error::UfsUnreachable { path, .. } => UfsUnreachableError::new_err((EIO, msg, path)),
        Error::Io(e) => match e.raw_os_error() {
            Some(errno) => AlluxioError::new_err((errno, msg)),
            None => AlluxioError::new_err(msg),
        },
        Error::Http { path, .. } => AlluxioError::new_err((EIO, msg, path)),
    }
}

/// The exception for holes no worker could fill when there is no UFS
/// fallback: `WorkerTimeoutError` when `fault` (why the first hole was
/// left) is a timeout, else `ConnectionError`.
pub(crate) fn unserved(msg: String, fault: Option<&Error>) -> PyErr {
    match fault {
        Some(Error::Timeout(..)) => timeout_err(msg),
        Some(Error::UfsUnreachable { .. }) => UfsUnreachableError::new_err(msg),
        _ => PyConnectionError::new_err(msg),
    }
}
