//! The shared tokio runtime of this process, and [`run`]: the one way the
//! binding calls into the core (release the GIL, block on the runtime, map
//! the error).
//!
//! Data loaders fork: a child inherits the parent's runtime object but none
//! of its threads, so the runtime is keyed by PID and a child builds its own
//! (the parent's copy is leaked on purpose; dropping it would wait for
//! threads that do not exist).

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::error::to_pyerr;

type ProcessRuntime = Option<(u32, Arc<tokio::runtime::Runtime>)>;

/// The runtime of this process (built on first use, again after a fork).
pub(crate) fn runtime() -> PyResult<Arc<tokio::runtime::Runtime>> {
    static RT: OnceLock<Mutex<ProcessRuntime>> = OnceLock::new();
    let cell = RT.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some((owner, rt)) = guard.as_ref() {
        if *owner == pid {
            return Ok(rt.clone());
        }
    }
    if let Some(old) = guard.take() {
        std::mem::forget(old);
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().clamp(2, 8))
        .unwrap_or(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("alluxiofs-io")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the I/O runtime: {e}")))?;
    let rt = Arc::new(rt);
    *guard = Some((pid, rt.clone()));
    Ok(rt)
}

/// Block on the future `make` returns, with the GIL released. `make` runs
/// without the GIL and on the runtime too, so the future need not be `Send`.
pub(crate) fn wait<T, F>(py: Python<'_>, make: impl FnOnce() -> F + Send) -> PyResult<T>
where
    F: Future<Output = T>,
    T: Send,
{
    let rt = runtime()?;
    // `make` runs inside the runtime's context: a future that needs the
    // runtime when made (a `tokio::time::timeout`) finds it.
    Ok(py.detach(|| rt.block_on(async move { make().await })))
}

/// [`wait`] for a core call, its error mapped by [`to_pyerr`].
pub(crate) fn run<T, F>(py: Python<'_>, make: impl FnOnce() -> F + Send) -> PyResult<T>
where
    F: Future<Output = alluxiofs_core::Result<T>>,
    T: Send,
{
    wait(py, make)?.map_err(to_pyerr)
}
