//! Placement helpers for inspection and tests: the Alluxio-compatible hash
//! ring (`HashRing`), worker identities, URL normalization and `path_id`.

use alluxiofs_core::{HashRing, WorkerIdentity};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::to_pyerr;

/// The Alluxio-compatible consistent hash ring (for inspection and tests).
#[pyclass(module = "alluxiofs._alluxiofs", frozen, name = "HashRing")]
pub(crate) struct PyHashRing {
    ring: HashRing,
}

#[pymethods]
impl PyHashRing {
    /// Build the ring from worker host names (static lists) or from identities
    /// given as 32-hex strings (version 1).
    #[new]
    #[pyo3(signature = (hostnames=None, identities=None, vnodes=5))]
    fn new(
        hostnames: Option<Vec<String>>,
        identities: Option<Vec<String>>,
        vnodes: u32,
    ) -> PyResult<Self> {
        let ids: Vec<WorkerIdentity> = match (hostnames, identities) {
            (Some(h), None) => h.iter().map(|h| WorkerIdentity::from_hostname(h)).collect(),
            (None, Some(ids)) => ids
                .iter()
                .map(|s| WorkerIdentity::parse_hex(1, s))
                .collect::<Result<_, _>>()
                .map_err(to_pyerr)?,
            _ => {
                return Err(PyValueError::new_err(
                    "give exactly one of hostnames= or identities=",
                ))
            }
        };
        if vnodes == 0 {
            return Err(PyValueError::new_err("vnodes must be at least 1"));
        }
        Ok(PyHashRing {
            ring: HashRing::new(&ids, vnodes),
        })
    }

    /// Ring points as `(signed int32, identity hex)`, sorted.
    fn points(&self) -> Vec<(i32, String)> {
        self.ring
            .points()
            .into_iter()
            .map(|(p, id)| (p, id.hex()))
            .collect()
    }

    /// The `n` preferred workers of `key` (a normalized UFS URL), best first.
    fn get_multiple(&self, key: &str, n: usize) -> Vec<String> {
        self.ring
            .get_multiple(key, n)
            .into_iter()
            .map(|id| id.hex())
            .collect()
    }
}

/// Identity (32 hex) Alluxio derives for a worker host name in static lists.
#[pyfunction]
pub(crate) fn worker_identity(hostname: &str) -> String {
    WorkerIdentity::from_hostname(hostname).hex()
}

/// Normalize a UFS URL (see `docs/semantics.md`).
#[pyfunction]
pub(crate) fn normalize_url(url: &str) -> PyResult<String> {
    alluxiofs_core::path::normalize_url(url).map_err(to_pyerr)
}

/// The Alluxio `path_id` (hex SHA-256) of a normalized URL.
#[pyfunction]
pub(crate) fn path_id(url: &str) -> String {
    alluxiofs_core::path::path_id(url)
}
