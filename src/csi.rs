//! `csi_serve`: the CSI node plugin (`alluxiofs_csi`) for the `alluxiofs
//! csi` command. It serves on this process's runtime until `stop()`; the
//! Python caller waits in short slices (GIL released) so that signals reach
//! it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use alluxiofs_csi::{Cluster, Options};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use tokio::sync::oneshot;

use crate::runtime::runtime;

/// The running plugin.
#[pyclass(module = "alluxiofs._alluxiofs", frozen)]
pub(crate) struct NativeCsi {
    stop: Mutex<Option<oneshot::Sender<()>>>,
    done: Mutex<Option<std::sync::mpsc::Receiver<Result<(), String>>>>,
}

#[pymethods]
impl NativeCsi {
    /// Wait up to `timeout` seconds for the server to end; returns whether
    /// it has. A server that failed raises `OSError` here.
    fn wait(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let mut guard = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rx) = guard.take() else {
            return Ok(true);
        };
        let (rx, r) = py.detach(move || {
            let r = rx.recv_timeout(Duration::from_secs_f64(timeout.max(0.0)));
            (rx, r)
        });
        match r {
            Ok(result) => result.map(|()| true).map_err(PyOSError::new_err),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                *guard = Some(rx);
                Ok(false)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Ok(true),
        }
    }

    /// Stop serving (the mounts stay).
    fn stop(&self) {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }
}

/// Start the CSI node plugin on `endpoint` (`unix:///csi/csi.sock`).
/// `launcher` is the command that runs `alluxiofs` for the mounts;
/// `etcd_hosts` / `worker_hosts` the cluster of volumes that name none.
#[pyfunction]
#[pyo3(signature = (endpoint, node_id, driver_name, state_dir, launcher, etcd_hosts=None, worker_hosts=None, mount_timeout_s=120))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn csi_serve(
    endpoint: &str,
    node_id: String,
    driver_name: String,
    state_dir: PathBuf,
    launcher: Vec<String>,
    etcd_hosts: Option<String>,
    worker_hosts: Option<String>,
    mount_timeout_s: u64,
) -> PyResult<NativeCsi> {
    let socket =
        alluxiofs_csi::socket_path(endpoint).map_err(|e| PyValueError::new_err(e.to_string()))?;
    if node_id.is_empty() {
        return Err(PyValueError::new_err("the node id is empty"));
    }
    if launcher.is_empty() {
        return Err(PyValueError::new_err("the launcher is empty"));
    }
    let default_cluster = match (etcd_hosts, worker_hosts) {
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err(
                "give either etcd hosts or worker hosts, not both",
            ))
        }
        (Some(h), None) => Some(Cluster::Etcd(h)),
        (None, Some(h)) => Some(Cluster::Workers(h)),
        (None, None) => None,
    };
    let opts = Options {
        socket,
        node_id,
        driver_name,
        state_dir,
        launcher,
        default_cluster,
        mount_timeout_s,
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    runtime()?.spawn(async move {
        let r = alluxiofs_csi::serve(opts, async {
            let _ = stop_rx.await;
        })
        .await
        .map_err(|e| e.to_string());
        let _ = done_tx.send(r);
    });
    Ok(NativeCsi {
        stop: Mutex::new(Some(stop_tx)),
        done: Mutex::new(Some(done_rx)),
    })
}
