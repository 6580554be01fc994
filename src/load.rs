//! `NativeClient.load`: preloading from Python (see `docs/load.md`).
//!
//! The load runs on the shared runtime; the calling thread waits for it with
//! the GIL released, waking every 100 ms to call the Python progress
//! callback (GIL held) and to notice Ctrl-C, which stops the load.

use std::sync::Arc;
use std::time::Duration;

use alluxiofs_core::client::Client;
use alluxiofs_core::load::{load, LoadCounters, LoadOptions, LoadProgress, LoadSummary};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::error::to_pyerr;
use crate::runtime::{runtime, wait};

/// How often the progress callback runs at most.
const TICK: Duration = Duration::from_millis(100);

fn progress_dict<'py>(py: Python<'py>, p: &LoadProgress) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("files_total", p.files_total)?;
    d.set_item("files_done", p.files_done)?;
    d.set_item("files_failed", p.files_failed)?;
    d.set_item("bytes_total", p.bytes_total)?;
    d.set_item("bytes_done", p.bytes_done)?;
    d.set_item("bytes_loaded", p.bytes_loaded)?;
    d.set_item("bytes_skipped", p.bytes_skipped)?;
    d.set_item("listed", p.listed)?;
    Ok(d)
}

fn summary_dict<'py>(py: Python<'py>, s: &LoadSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("files_total", s.files_total)?;
    d.set_item("files_loaded", s.files_loaded)?;
    d.set_item("files_skipped", s.files_skipped)?;
    d.set_item("files_failed", s.files_failed)?;
    d.set_item("bytes_total", s.bytes_total)?;
    d.set_item("bytes_loaded", s.bytes_loaded)?;
    d.set_item("bytes_skipped", s.bytes_skipped)?;
    d.set_item("cancelled", s.cancelled)?;
    d.set_item("seconds", s.seconds)?;
    let failures = PyList::empty(py);
    for f in &s.failures {
        let e = PyDict::new(py);
        e.set_item("path", &f.path)?;
        e.set_item("reason", &f.reason)?;
        failures.append(e)?;
    }
    d.set_item("failures", failures)?;
    Ok(d)
}

/// Load `url` with `opts`, calling `progress(dict)` at most every 100 ms
/// and once at the end. Returns the summary dict.
pub(crate) fn run<'py>(
    py: Python<'py>,
    client: Arc<Client>,
    url: String,
    opts: LoadOptions,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let rt = runtime()?;
    let counters = Arc::new(LoadCounters::default());
    let c = counters.clone();
    let mut task = rt.spawn(async move { load(&client, &url, &opts, c).await });
    let outcome = loop {
        let waited = wait(py, || tokio::time::timeout(TICK, &mut task))?;
        match waited {
            Ok(joined) => break joined,
            Err(_) => {
                let callback = progress
                    .as_ref()
                    .map(|cb| cb.call1((progress_dict(py, &counters.snapshot())?,)))
                    .transpose();
                let stop = callback.and_then(|_| py.check_signals());
                if let Err(e) = stop {
                    counters.cancel();
                    task.abort();
                    return Err(e);
                }
            }
        }
    };
    let summary = outcome
        .map_err(|e| PyRuntimeError::new_err(format!("load task failed: {e}")))?
        .map_err(to_pyerr)?;
    if let Some(cb) = &progress {
        cb.call1((progress_dict(py, &counters.snapshot())?,))?;
    }
    summary_dict(py, &summary)
}
