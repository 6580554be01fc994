//! `alluxiofs._alluxiofs`: the PyO3 binding of the client core and the worker.
//!
//! Thin on purpose: every method converts its arguments
//! ([`conversions`]), calls the core with the GIL released on one shared
//! tokio runtime per process ([`runtime::run`]), and converts the result.
//! The whole Rust → Python error mapping is [`error::to_pyerr`]. The only
//! `unsafe` lives in [`buffer`]. This file only declares the module.
//!
//! - [`error`]: the exception types and the error mapping.
//! - [`runtime`]: the per-process runtime and `run`.
//! - [`conversions`]: dicts <-> file info, stats and the client settings.
//! - [`client`]: `NativeClient`; [`reader`]: `NativeReader`;
//!   [`writer`]: `NativeWriter`; [`load`]: `NativeClient.load`.
//! - [`holes`]: filling unserved ranges through the Python UFS fallback.
//! - [`ring`]: the hash ring and path helpers; [`worker`]: `run_worker`.
//! - [`mount`]: the FUSE mount (`mount`, `unmount`, `NativeMount`).
//! - [`csi`]: the CSI node plugin (`csi_serve`, `NativeCsi`).

mod buffer;
mod client;
mod conversions;
mod csi;
mod error;
mod holes;
mod load;
mod mount;
mod reader;
mod ring;
mod runtime;
mod worker;
mod writer;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Every client option `NativeClient` takes in `options`, with its default
/// (`placement`: `None`, unset).
#[pyfunction]
fn client_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    conversions::client_defaults(py)
}

#[pymodule]
fn _alluxiofs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "DEFAULT_WORKER_PORT",
        alluxiofs_core::protocol::DEFAULT_WORKER_PORT,
    )?;
    m.add("AlluxioError", py.get_type::<error::AlluxioError>())?;
    m.add(
        "ObjectChangedError",
        py.get_type::<error::ObjectChangedError>(),
    )?;
    m.add("WorkerTimeoutError", error::worker_timeout_error(py)?)?;
    m.add(
        "UfsUnreachableError",
        py.get_type::<error::UfsUnreachableError>(),
    )?;
    m.add_class::<client::NativeClient>()?;
    m.add_class::<reader::NativeReader>()?;
    m.add_class::<writer::NativeWriter>()?;
    m.add_class::<ring::PyHashRing>()?;
    m.add_function(wrap_pyfunction!(ring::worker_identity, m)?)?;
    m.add_function(wrap_pyfunction!(ring::normalize_url, m)?)?;
    m.add_function(wrap_pyfunction!(ring::path_id, m)?)?;
    m.add_function(wrap_pyfunction!(worker::run_worker, m)?)?;
    m.add_function(wrap_pyfunction!(client_defaults, m)?)?;
    m.add_class::<mount::NativeMount>()?;
    m.add_function(wrap_pyfunction!(mount::mount, m)?)?;
    m.add_function(wrap_pyfunction!(mount::unmount, m)?)?;
    m.add_function(wrap_pyfunction!(mount::mount_state, m)?)?;
    m.add_function(wrap_pyfunction!(mount::init_logging, m)?)?;
    m.add_class::<csi::NativeCsi>()?;
    m.add_function(wrap_pyfunction!(csi::csi_serve, m)?)?;
    Ok(())
}
