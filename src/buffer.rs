//! The one module of the workspace that uses `unsafe`: writable access to a
//! Python buffer (`bytearray`, `memoryview`, `numpy` array, `mmap`) so that
//! `readinto` writes bytes from the network straight into the caller's memory.
//!
//! Review notes, for anyone changing this file:
//! - The `PyBuffer` is held for as long as the slice lives. While a buffer
//!   export is held, CPython's exporters (bytearray, array, numpy, mmap) refuse
//!   to resize or free the memory (`BufferError`), so the pointer stays valid
//!   even with the GIL released.
//! - We only hand out a slice for a C-contiguous, writable, byte-itemsize
//!   buffer; everything else is rejected with a Python exception before any
//!   pointer is touched.
//! - Another Python thread may write the same memory concurrently; that is a
//!   data race in the *caller's* program exactly as with any C extension's
//!   `readinto` (e.g. `socket.recv_into`); we never read the memory, only write.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::prelude::*;

/// A writable, contiguous view of a Python buffer, valid while this value lives.
pub struct WritableBuffer {
    buf: PyBuffer<u8>,
}

impl WritableBuffer {
    /// Acquire a writable byte buffer from `obj`.
    pub fn get(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let buf: PyBuffer<u8> = PyBuffer::get(obj)
            .map_err(|e| PyTypeError::new_err(format!("readinto needs a byte buffer: {e}")))?;
        if buf.readonly() {
            return Err(PyTypeError::new_err(
                "readinto needs a writable buffer (got a read-only one, e.g. bytes)",
            ));
        }
        if !buf.is_c_contiguous() {
            return Err(PyBufferError::new_err(
                "readinto needs a C-contiguous buffer",
            ));
        }
        Ok(WritableBuffer { buf })
    }

    /// The buffer's memory as a mutable byte slice.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.buf.len_bytes();
        if len == 0 {
            return &mut [];
        }
        // SAFETY: `get` checked that the buffer is writable, C-contiguous and
        // of `u8` items, so `buf_ptr()` points at `len_bytes()` writable bytes.
        // The export is held by `self.buf` for at least the lifetime of the
        // returned borrow of `self`, which keeps the memory alive and unmoved
        // (see the module notes). We hand out at most one `&mut` at a time
        // because this method takes `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.buf.buf_ptr().cast::<u8>(), len) }
    }
}
