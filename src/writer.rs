//! `NativeWriter`: a write-through upload from Python (see
//! `alluxiofs_core::write`). Each call copies the caller's bytes once, then
//! waits with the GIL released while the chunk is queued for the request.

use std::sync::{Arc, Mutex};

use alluxiofs_core::client::Client;
use alluxiofs_core::write::{WriteResult, Writer};
use alluxiofs_core::Error;
use bytes::Bytes;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::runtime::run;

/// A file being written through a cache worker: `write(data)` streams,
/// `close()` completes the upload and returns the worker's answer,
/// `abort()` cuts it (nothing is written).
#[pyclass(module = "alluxiofs._alluxiofs", frozen)]
pub struct NativeWriter {
    writer: Mutex<Option<Writer>>,
    worker: String,
}

impl NativeWriter {
    /// Pick the owner worker of `url` (checking it answers) and start the
    /// upload. A worker fault raises `ConnectionError` (the caller falls
    /// back to the target filesystem).
    pub fn open(py: Python<'_>, client: Arc<Client>, url: String) -> PyResult<NativeWriter> {
        let writer = run(py, || async move {
            let owner = client.write_owner(&url).await?;
            Ok::<Writer, Error>(Writer::start(client.clone(), &url, owner))
        })?;
        Ok(NativeWriter {
            worker: writer.worker(),
            writer: Mutex::new(Some(writer)),
        })
    }
}

fn result_to_dict<'py>(py: Python<'py>, r: &WriteResult) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("path", &r.path)?;
    d.set_item("size", r.size)?;
    d.set_item("version", &r.version)?;
    d.set_item("populated", r.populated)?;
    d.set_item("pages_cached", r.pages_cached)?;
    d.set_item("reason", &r.reason)?;
    d.set_item("worker", &r.worker)?;
    Ok(d)
}

#[pymethods]
impl NativeWriter {
    /// `host:port` of the worker taking the write.
    #[getter]
    fn worker(&self) -> String {
        self.worker.clone()
    }

    /// Queue the bytes of `data` (any buffer); returns how many.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let buf = PyBuffer::<u8>::get(data)?;
        let bytes = Bytes::from(buf.to_vec(py)?);
        let n = bytes.len();
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let w = guard
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("I/O operation on closed writer"))?;
        if let Err(e) = run(py, || w.write(bytes)) {
            *guard = None;
            return Err(e);
        }
        Ok(n)
    }

    /// Complete the upload; returns the worker's answer (`path`, `size`,
    /// `version`, `populated`, `pages_cached`, `reason`, `worker`).
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let w = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| PyValueError::new_err("writer already closed"))?;
        let r = run(py, || w.finish())?;
        result_to_dict(py, &r)
    }

    /// Cut the upload: the worker aborts it and nothing is written.
    fn abort(&self) {
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.abort();
        }
    }
}
