//! Filling the holes of a read (ranges no worker could serve) from the UFS,
//! through the Python target filesystem's read (`fallback(url, start, end)`).
//!
//! The core leaves holes rather than reading the UFS itself because the
//! target filesystem (s3fs, gcsfs, ...) with the user's credentials lives on
//! the Python side.

use std::ops::Range;

use alluxiofs_core::{Error, RangeResult};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::unserved;

/// Copy the bytes the UFS gives for each hole into `buf` (which starts at file
/// offset `base`). `fallback(url, start, end) -> bytes` is the Python target
/// filesystem's read.
///
/// Returns how many bytes of `buf` are valid: `core_filled` (what the core
/// reports: up to the end of file, or all of `buf` when no worker could say
/// where the file ends), cut where a hole's UFS read came back short, which
/// marks the end of the file.
///
/// Without a fallback, holes raise: `WorkerTimeoutError` when `fault` (why
/// the first hole was left) is a timeout, else `ConnectionError`. A hole a
/// worker left because the UFS is unreachable raises `UfsUnreachableError`
/// (a `ConnectionError`) at once, fallback or not.
pub(crate) fn fill_holes(
    fallback: Option<&Bound<'_, PyAny>>,
    url: &str,
    base: u64,
    holes: &[Range<u64>],
    fault: Option<&Error>,
    buf: &mut [u8],
    core_filled: usize,
) -> PyResult<usize> {
    if holes.is_empty() {
        return Ok(core_filled);
    }
    // The workers cannot reach the UFS: neither can this process, most
    // likely, and trying would only wait out the same outage.
    let fallback = fallback.filter(|_| !fault.is_some_and(Error::is_ufs_unreachable));
    let Some(fallback) = fallback else {
        let mut msg = format!(
            "{url}: no cache worker could serve bytes {}..{} and the UFS fallback is off",
            holes[0].start, holes[0].end
        );
        if let Some(f) = fault {
            msg.push_str(&format!(" ({f})"));
        }
        return Err(unserved(msg, fault));
    };
    for hole in holes {
        let from = usize::try_from(hole.start - base)
            .map_err(|_| PyValueError::new_err("hole outside the buffer"))?;
        if from >= buf.len() {
            break;
        }
        let want = ((hole.end - hole.start) as usize).min(buf.len() - from);
        let data = fallback.call1((url, hole.start, hole.start + want as u64))?;
        let data = data.cast::<PyBytes>()?.as_bytes();
        let n = data.len().min(want);
        buf[from..from + n].copy_from_slice(&data[..n]);
        if n < want {
            return Ok(core_filled.min(from + n));
        }
    }
    Ok(core_filled)
}

/// A core [`RangeResult`] (data starting at file offset `start`) as one
/// `bytes`, its holes filled from the UFS through `fallback`. `r.data` is
/// already cut at the end of file when a worker knew it; a short UFS answer
/// for a hole cuts it further.
pub(crate) fn range_to_bytes<'py>(
    py: Python<'py>,
    fallback: Option<&Bound<'py, PyAny>>,
    url: &str,
    start: u64,
    r: &RangeResult,
) -> PyResult<Bound<'py, PyBytes>> {
    if r.holes.is_empty() {
        return Ok(PyBytes::new(py, &r.data));
    }
    let len = r.data.len();
    let mut filled = len;
    let bytes = PyBytes::new_with(py, len, |buf| {
        buf.copy_from_slice(&r.data);
        filled = fill_holes(fallback, url, start, &r.holes, r.fault.as_ref(), buf, len)?;
        Ok(())
    })?;
    Ok(cut(py, bytes, filled))
}

/// `bytes` cut to its first `filled` bytes (a short read at end of file:
/// rare, so one copy is fine).
pub(crate) fn cut<'py>(
    py: Python<'py>,
    bytes: Bound<'py, PyBytes>,
    filled: usize,
) -> Bound<'py, PyBytes> {
    if filled < bytes.as_bytes().len() {
        PyBytes::new(py, &bytes.as_bytes()[..filled])
    } else {
        bytes
    }
}
