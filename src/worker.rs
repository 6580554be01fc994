//! `run_worker`: the cache worker inside the Python process (the
//! `alluxiofs worker` command and the embedded local worker), behaving as
//! the standalone binary does.

use pyo3::exceptions::{PyRuntimeError, PySystemExit};
use pyo3::prelude::*;

/// Run the cache worker with command line `argv` (argv[0] is the program
/// name) until SIGTERM or SIGINT. Releases the GIL for the whole run.
///
/// As the standalone binary does: a command-line error prints the usage
/// message and exits with status 2 (`SystemExit(2)`); any other failure
/// (a configuration error) raises `RuntimeError`, for exit status 1.
#[pyfunction]
pub(crate) fn run_worker(py: Python<'_>, argv: Vec<String>) -> PyResult<()> {
    match py.detach(|| alluxiofs_worker::run_cli(argv)) {
        Ok(()) => Ok(()),
        Err(alluxiofs_worker::WorkerError::Cli(e)) => {
            let _ = e.print();
            Err(PySystemExit::new_err(e.exit_code()))
        }
        Err(e) => Err(PyRuntimeError::new_err(format!("worker failed: {e}"))),
    }
}
