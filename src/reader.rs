//! `NativeReader`: a core [`Reader`] (sequential readahead in Rust) for
//! Python file objects.
//!
//! The reader is behind an async mutex taken with the GIL released (inside
//! [`crate::runtime::run`]), so a file object shared by threads never holds
//! up other Python threads while one waits for bytes.

use alluxiofs_core::Reader;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::Mutex;

use crate::buffer::WritableBuffer;
use crate::holes::{cut, fill_holes};
use crate::runtime::run;

/// A file reader with sequential readahead done in Rust.
#[pyclass(module = "alluxiofs._alluxiofs", frozen)]
pub(crate) struct NativeReader {
    reader: Mutex<Reader>,
    /// The reader's file size, fixed at open: read without the lock, so
    /// `size` never waits for another thread's read.
    size: u64,
    url: String,
}

impl NativeReader {
    /// A Python reader of `url` around `reader`.
    pub(crate) fn new(reader: Reader, url: String) -> Self {
        NativeReader {
            size: reader.size(),
            reader: Mutex::new(reader),
            url,
        }
    }

    /// Read at `offset` into `buf`, holes filled through `fallback`;
    /// returns how many bytes of `buf` are valid.
    fn read_into(
        &self,
        py: Python<'_>,
        offset: u64,
        buf: &mut [u8],
        fallback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let target = &mut *buf;
        let outcome = run(py, || async move {
            let mut reader = self.reader.lock().await;
            reader.read_at(offset, target).await
        })?;
        fill_holes(
            fallback,
            &self.url,
            offset,
            &outcome.holes,
            outcome.fault.as_ref(),
            buf,
            outcome.filled,
        )
    }
}

#[pymethods]
impl NativeReader {
    /// File size the reader was opened with.
    #[getter]
    fn size(&self) -> u64 {
        self.size
    }

    /// Up to `length` bytes at `offset` (short at end of file).
    #[pyo3(signature = (offset, length, fallback=None))]
    fn read_at<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        length: usize,
        fallback: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut filled = 0usize;
        let bytes = PyBytes::new_with(py, length, |buf| {
            filled = self.read_into(py, offset, buf, fallback.as_ref())?;
            Ok(())
        })?;
        Ok(cut(py, bytes, filled))
    }

    /// Read at `offset` straight into the writable buffer `buf`; returns bytes written.
    #[pyo3(signature = (offset, buf, fallback=None))]
    fn readinto_at(
        &self,
        py: Python<'_>,
        offset: u64,
        buf: &Bound<'_, PyAny>,
        fallback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let mut target = WritableBuffer::get(buf)?;
        self.read_into(py, offset, target.as_mut_slice(), fallback.as_ref())
    }
}
