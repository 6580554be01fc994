//! `mount`, `unmount`, `mount_state` and `NativeMount`: the FUSE mount
//! (`alluxiofs_fuse`) for the `alluxiofs mount` command.
//!
//! The mount serves from fuser's threads and this process's runtime; the
//! Python caller only waits ([`NativeMount::wait`], GIL released, in short
//! slices so that signals reach Python) and unmounts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alluxiofs_fuse::{MountOptions, MountRoot, MountState, Mounted};
use alluxiofs_worker::config::{MountConfig, WorkerConfig};
use alluxiofs_worker::metrics::Metrics;
use alluxiofs_worker::ufs::Ufs;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::client::NativeClient;
use crate::runtime::runtime;

/// A live FUSE mount. `unmount()` (or the process ending) unmounts it.
#[pyclass(module = "alluxiofs._alluxiofs", frozen)]
pub(crate) struct NativeMount {
    inner: Mutex<Option<Mounted>>,
    mountpoint: PathBuf,
    /// The counters at the unmount.
    last: Mutex<Vec<(&'static str, u64)>>,
}

#[pymethods]
impl NativeMount {
    /// Wait up to `timeout` seconds for the mount to end (someone
    /// unmounted it); returns whether it has ended.
    fn wait(&self, py: Python<'_>, timeout: f64) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
        py.detach(|| loop {
            let running = self
                .inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|m| m.is_running());
            if !running {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        })
    }

    /// Unmount (detached at once) and wait up to `wait` seconds for the
    /// files still open to be closed; returns whether they all were (the
    /// reads of those left fail once this process exits). Unmounting twice
    /// does nothing.
    #[pyo3(signature = (wait=2.0))]
    fn unmount(&self, py: Python<'_>, wait: f64) -> PyResult<bool> {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(m) = m {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = m.counters().snapshot();
            let all_closed = py
                .detach(|| m.unmount(Duration::from_secs_f64(wait.max(0.0))))
                .map_err(|e| {
                    PyOSError::new_err(format!("unmount {}: {e}", self.mountpoint.display()))
                })?;
            return Ok(all_closed);
        }
        Ok(true)
    }

    /// The mount's counters (lookups, opens, reads, bytes, UFS bytes, ...).
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let now = match self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(m) => m.counters().snapshot(),
            None => self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        for (k, v) in now {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// The mount point.
    #[getter]
    fn mountpoint(&self) -> PathBuf {
        self.mountpoint.clone()
    }
}

/// Mount `urls` (`URL` or `NAME=URL`) at `mountpoint` through `client`.
/// With `fallback`, what no worker serves is read from the UFS directly
/// (`ufs_options`: object_store options, e.g. `endpoint`, `region`); with
/// `write`, new files are written whole through the workers and unlink,
/// mkdir, rmdir and rename change the UFS.
#[pyfunction]
#[pyo3(signature = (client, mountpoint, urls, fallback=true, ufs_options=None,
    attr_timeout=60.0, entry_timeout=60.0, kernel_cache=true, threads=16, allow_other=false, write=false,
    readahead_kib=4096))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn mount(
    py: Python<'_>,
    client: &NativeClient,
    mountpoint: PathBuf,
    urls: Vec<String>,
    fallback: bool,
    ufs_options: Option<BTreeMap<String, String>>,
    attr_timeout: f64,
    entry_timeout: f64,
    kernel_cache: bool,
    threads: usize,
    allow_other: bool,
    write: bool,
    readahead_kib: u32,
) -> PyResult<NativeMount> {
    let roots = MountRoot::from_args(&urls).map_err(PyValueError::new_err)?;
    let secs = |name: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(Duration::from_secs_f64(v))
        } else {
            Err(PyValueError::new_err(format!(
                "{name} must be a number of seconds >= 0"
            )))
        }
    };
    let opts = MountOptions {
        attr_timeout: secs("attr_timeout", attr_timeout)?,
        entry_timeout: secs("entry_timeout", entry_timeout)?,
        kernel_cache,
        threads: threads.clamp(1, 256),
        allow_other,
        fallback,
        write,
        readahead: readahead_kib.min(1 << 20).saturating_mul(1024),
    };
    let ufs = if fallback || write {
        let config = WorkerConfig {
            mounts: roots
                .iter()
                .map(|r| MountConfig::new(r.url.clone()))
                .collect(),
            ufs_options: ufs_options.unwrap_or_default(),
            ..WorkerConfig::default()
        };
        let ufs = Ufs::new(&config, Arc::new(Metrics::new()))
            .map_err(|e| PyValueError::new_err(format!("UFS access: {e}")))?;
        Some(Arc::new(ufs))
    } else {
        None
    };
    let rt = runtime()?;
    let core = client.core();
    let handle = rt.handle().clone();
    let mp = mountpoint.clone();
    let mounted = py
        .detach(|| alluxiofs_fuse::mount(&mp, roots, core, ufs, handle, opts))
        .map_err(|e| PyOSError::new_err(e.to_string()))?;
    Ok(NativeMount {
        inner: Mutex::new(Some(mounted)),
        mountpoint,
        last: Mutex::new(Vec::new()),
    })
}

/// Unmount the FUSE mount at `path` (also one whose daemon died); returns
/// whether something was mounted there.
#[pyfunction]
pub(crate) fn unmount(path: PathBuf) -> PyResult<bool> {
    alluxiofs_fuse::unmount(&path)
        .map_err(|e| PyOSError::new_err(format!("unmount {}: {e}", path.display())))
}

/// What is mounted at `path`: `"none"`, `"mounted"` (a FUSE mount that
/// answers) or `"stale"` (its daemon is gone).
#[pyfunction]
pub(crate) fn mount_state(path: PathBuf) -> &'static str {
    match alluxiofs_fuse::mount_state(&path) {
        MountState::NotMounted => "none",
        MountState::Mounted => "mounted",
        MountState::Stale => "stale",
    }
}

/// Log the mount's events to stderr at `level` (`error`, `warn`, `info`,
/// `debug`, or a tracing filter), as a worker logs.
#[pyfunction]
pub(crate) fn init_logging(level: &str) {
    alluxiofs_worker::server::init_logging(&WorkerConfig {
        log_level: level.to_string(),
        ..WorkerConfig::default()
    });
}
