//! `alluxiofs._alluxiofs`: the PyO3 binding of the client core and the worker.
//!
//! Thin on purpose: every method converts its arguments, releases the GIL
//! around the call into the core (which runs on one shared tokio runtime per
//! process), and converts the result. The whole Rust → Python error mapping is
//! [`to_pyerr`]. The only `unsafe` lives in [`buffer`].

mod buffer;
mod load;
mod writer;

use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use alluxiofs_core::client::{Client, ClientConfig, RangeResult, Stats, WorkerAddr};
use alluxiofs_core::discovery::{discover, spawn_watch, EtcdConfig, WatchHandle};
use alluxiofs_core::info::FileInfo;
use alluxiofs_core::placement::Placement;
use alluxiofs_core::reader::Reader;
use alluxiofs_core::ring::{HashRing, WorkerIdentity};
use alluxiofs_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::{
    PyConnectionError, PyFileExistsError, PyFileNotFoundError, PyIsADirectoryError,
    PyNotADirectoryError, PyOSError, PyPermissionError, PyRuntimeError, PySystemExit,
    PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};

use buffer::WritableBuffer;

create_exception!(
    _alluxiofs,
    AlluxioError,
    PyOSError,
    "An alluxiofs failure that no builtin exception describes (carries the path and cause)."
);
create_exception!(
    _alluxiofs,
    ObjectChangedError,
    AlluxioError,
    "The object changed in the UFS (new ETag or mtime) while a file was open."
);

/// `WorkerTimeoutError`: a worker request timed out. A subclass of both
/// `TimeoutError` (what timed out) and `ConnectionError` (the worker could
/// not be used, as for a refused connection), so handlers of either see it.
/// Built once, when the module is imported.
static WORKER_TIMEOUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn worker_timeout_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    WORKER_TIMEOUT_ERROR
        .get_or_try_init(py, || {
            let bases = PyTuple::new(
                py,
                [
                    py.get_type::<PyTimeoutError>(),
                    py.get_type::<PyConnectionError>(),
                ],
            )?;
            let ns = PyDict::new(py);
            ns.set_item("__module__", "alluxiofs._alluxiofs")?;
            ns.set_item(
                "__doc__",
                "A cache worker did not answer within connect_timeout or request_timeout. \
                 Both a TimeoutError and a ConnectionError.",
            )?;
            let ty = py
                .get_type::<PyType>()
                .call1(("WorkerTimeoutError", bases, ns))?;
            Ok(ty.cast_into::<PyType>()?.unbind())
        })
        .map(|t| t.bind(py))
}

/// A `WorkerTimeoutError` with `msg`.
fn timeout_err(msg: String) -> PyErr {
    Python::attach(|py| match worker_timeout_error(py) {
        Ok(ty) => PyErr::from_type(ty.clone(), msg),
        Err(e) => e,
    })
}

/// `errno.EIO`: the errno of an `AlluxioError` about a worker's answer.
const EIO: i32 = 5;

/// The one mapping from core errors to Python exceptions (see the failure
/// table of `docs/semantics.md`).
fn to_pyerr(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::NotFound { path } => PyFileNotFoundError::new_err((2, msg, path)),
        Error::IsADirectory { path } => PyIsADirectoryError::new_err((21, msg, path)),
        Error::NotADirectory { path } => PyNotADirectoryError::new_err((20, msg, path)),
        Error::PermissionDenied { path, .. } => PyPermissionError::new_err((13, msg, path)),
        Error::InvalidArgument(_) => PyValueError::new_err(msg),
        Error::AlreadyExists { path } => PyFileExistsError::new_err((17, msg, path)),
        Error::ObjectChanged { path, .. } => ObjectChangedError::new_err((EIO, msg, path)),
        Error::Timeout(..) => timeout_err(msg),
        Error::WorkerUnavailable { .. } | Error::NoWorkers(_) => PyConnectionError::new_err(msg),
        Error::Io(e) => match e.raw_os_error() {
            Some(errno) => AlluxioError::new_err((errno, msg)),
            None => AlluxioError::new_err(msg),
        },
        Error::Http { path, .. } => AlluxioError::new_err((EIO, msg, path)),
    }
}

/// The shared tokio runtime of this process. Data loaders fork: a child
/// inherits the parent's runtime object but none of its threads, so the
/// runtime is keyed by PID and a child builds its own (the parent's copy is
/// leaked on purpose; dropping it would wait for threads that do not exist).
type ProcessRuntime = Option<(u32, Arc<tokio::runtime::Runtime>)>;

fn runtime() -> PyResult<Arc<tokio::runtime::Runtime>> {
    static RT: OnceLock<Mutex<ProcessRuntime>> = OnceLock::new();
    let cell = RT.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some((owner, rt)) = guard.as_ref() {
        if *owner == pid {
            return Ok(rt.clone());
        }
    }
    if let Some(old) = guard.take() {
        std::mem::forget(old);
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().clamp(2, 8))
        .unwrap_or(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("alluxiofs-io")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the I/O runtime: {e}")))?;
    let rt = Arc::new(rt);
    *guard = Some((pid, rt.clone()));
    Ok(rt)
}

fn info_to_dict<'py>(py: Python<'py>, info: &FileInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ufs_path", &info.ufs_path)?;
    d.set_item("size", info.length)?;
    d.set_item("type", if info.is_dir() { "directory" } else { "file" })?;
    d.set_item("mtime", info.mtime_ms as f64 / 1000.0)?;
    d.set_item(
        "etag",
        if info.content_hash.is_empty() {
            None
        } else {
            Some(info.content_hash.as_str())
        },
    )?;
    d.set_item("cached_percent", info.in_cache_percent)?;
    Ok(d)
}

fn stats_to_dict<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("bytes_read", s.bytes_read)?;
    d.set_item("worker_requests", s.worker_requests)?;
    d.set_item("retries", s.retries)?;
    d.set_item("fallbacks", s.fallbacks.clone())?;
    d.set_item("errors", s.errors.clone())?;
    Ok(d)
}

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
/// the first hole was left) is a timeout, else `ConnectionError`.
fn fill_holes(
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
    let Some(fallback) = fallback else {
        let mut msg = format!(
            "{url}: no cache worker could serve bytes {}..{} and the UFS fallback is off",
            holes[0].start, holes[0].end
        );
        if let Some(f) = fault {
            msg.push_str(&format!(" ({f})"));
        }
        return Err(match fault {
            Some(Error::Timeout(..)) => timeout_err(msg),
            _ => PyConnectionError::new_err(msg),
        });
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
fn range_to_bytes<'py>(
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
    if filled < len {
        return Ok(PyBytes::new(py, &bytes.as_bytes()[..filled]));
    }
    Ok(bytes)
}

/// A connection to the cache workers: the hash ring plus a pooled HTTP client.
/// Create one per process (see `alluxiofs.core`); it is not fork safe itself.
#[pyclass(module = "alluxiofs._alluxiofs", frozen)]
struct NativeClient {
    client: Arc<Client>,
    /// The etcd watch keeping the worker list current (etcd mode only);
    /// dropping the client stops it.
    watch: Option<WatchHandle>,
}

/// Client settings from the Python options (shared by both constructors).
#[allow(clippy::too_many_arguments)]
fn client_config(
    page_size: u64,
    vnodes: u32,
    replicas: usize,
    connect_timeout: f64,
    request_timeout: f64,
    retries: u32,
    max_chunk: u64,
    max_parallel: usize,
    coalesce_gap: u64,
    auth_token: Option<String>,
    readahead_initial: u64,
    readahead_max: u64,
    placement: Option<&str>,
) -> PyResult<ClientConfig> {
    let secs = |v: f64, what: &str| {
        Duration::try_from_secs_f64(v).map_err(|_| {
            PyValueError::new_err(format!(
                "{what} must be a positive number of seconds, got {v}"
            ))
        })
    };
    if page_size == 0 {
        return Err(PyValueError::new_err("page_size must be positive"));
    }
    let placement = match placement {
        Some(name) => Placement::parse(name, vnodes).map_err(to_pyerr)?,
        None => Placement::parse("alluxio", vnodes).map_err(to_pyerr)?,
    };
    Ok(ClientConfig {
        page_size,
        vnodes,
        replicas: replicas.max(1),
        connect_timeout: secs(connect_timeout, "connect_timeout")?,
        request_timeout: secs(request_timeout, "request_timeout")?,
        retries,
        max_chunk: max_chunk.max(page_size),
        max_parallel: max_parallel.max(1),
        coalesce_gap,
        auth_token,
        readahead_initial,
        readahead_max,
        placement,
        ..ClientConfig::default()
    })
}

#[pymethods]
impl NativeClient {
    /// Build a client for `workers` (a list of `(host, port)`).
    #[new]
    #[pyo3(signature = (workers, page_size=1048576, vnodes=5, replicas=1, connect_timeout=2.0,
        request_timeout=30.0, retries=2, max_chunk=8388608, max_parallel=16,
        coalesce_gap=1048576, auth_token=None, readahead_initial=1048576,
        readahead_max=67108864, placement=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        workers: Vec<(String, u16)>,
        page_size: u64,
        vnodes: u32,
        replicas: usize,
        connect_timeout: f64,
        request_timeout: f64,
        retries: u32,
        max_chunk: u64,
        max_parallel: usize,
        coalesce_gap: u64,
        auth_token: Option<String>,
        readahead_initial: u64,
        readahead_max: u64,
        placement: Option<String>,
    ) -> PyResult<Self> {
        let config = client_config(
            page_size,
            vnodes,
            replicas,
            connect_timeout,
            request_timeout,
            retries,
            max_chunk,
            max_parallel,
            coalesce_gap,
            auth_token,
            readahead_initial,
            readahead_max,
            placement.as_deref(),
        )?;
        let addrs = workers
            .iter()
            .map(|(h, p)| WorkerAddr::from_host_port(h, *p))
            .collect();
        let client = Client::new(config, addrs).map_err(to_pyerr)?;
        Ok(NativeClient {
            client: Arc::new(client),
            watch: None,
        })
    }

    /// Find the workers of `cluster` in etcd (`endpoints`: `http://host:port`
    /// URLs) and keep following them: a background watch applies every join
    /// and leave. The cluster's published placement is used; a different
    /// `placement` given here is an error.
    #[staticmethod]
    #[pyo3(signature = (endpoints, cluster="DefaultAlluxioCluster".to_string(), username=None,
        password=None, page_size=1048576, vnodes=5, replicas=1, connect_timeout=2.0,
        request_timeout=30.0, retries=2, max_chunk=8388608, max_parallel=16,
        coalesce_gap=1048576, auth_token=None, readahead_initial=1048576,
        readahead_max=67108864, placement=None))]
    #[allow(clippy::too_many_arguments)]
    fn from_etcd(
        py: Python<'_>,
        endpoints: Vec<String>,
        cluster: String,
        username: Option<String>,
        password: Option<String>,
        page_size: u64,
        vnodes: u32,
        replicas: usize,
        connect_timeout: f64,
        request_timeout: f64,
        retries: u32,
        max_chunk: u64,
        max_parallel: usize,
        coalesce_gap: u64,
        auth_token: Option<String>,
        readahead_initial: u64,
        readahead_max: u64,
        placement: Option<String>,
    ) -> PyResult<Self> {
        let mut config = client_config(
            page_size,
            vnodes,
            replicas,
            connect_timeout,
            request_timeout,
            retries,
            max_chunk,
            max_parallel,
            coalesce_gap,
            auth_token,
            readahead_initial,
            readahead_max,
            placement.as_deref(),
        )?;
        let etcd = EtcdConfig {
            endpoints,
            cluster,
            username,
            password,
            connect_timeout: config.connect_timeout.max(Duration::from_secs(1)),
        };
        let rt = runtime()?;
        let found = py
            .detach(|| rt.block_on(discover(&etcd)))
            .map_err(to_pyerr)?;
        if let Some(published) = found.placement {
            if placement.is_some() && published != config.placement {
                return Err(PyValueError::new_err(format!(
                    "placement {:?} differs from the one cluster {:?} publishes in etcd ({}); \
                     leave placement unset to use the cluster's",
                    placement.unwrap_or_default(),
                    etcd.cluster,
                    published.to_setting()
                )));
            }
            config.placement = published;
        }
        let client = Arc::new(Client::new(config, found.workers).map_err(to_pyerr)?);
        let watch = {
            let _in_runtime = rt.enter();
            spawn_watch(client.clone(), etcd, found.revision)
        };
        Ok(NativeClient {
            client,
            watch: Some(watch),
        })
    }

    /// The placement in effect, as published in etcd (`alluxio:5`, `rendezvous`).
    fn placement(&self) -> String {
        self.client.placement().to_setting()
    }

    /// Whether this client follows etcd (and its watch is running).
    fn is_watching(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| !w.is_finished())
    }

    /// `host:port` of every known worker.
    fn workers(&self) -> Vec<String> {
        self.client.workers().iter().map(|w| w.addr()).collect()
    }

    /// The preferred workers of `url`, best first.
    fn workers_for(&self, url: &str) -> Vec<String> {
        self.client
            .workers_for(url)
            .iter()
            .map(|w| w.addr())
            .collect()
    }

    /// File info of `url` as a dict (`ufs_path`, `size`, `type`, `mtime`, `etag`).
    fn info<'py>(&self, py: Python<'py>, url: String) -> PyResult<Bound<'py, PyDict>> {
        let rt = runtime()?;
        let client = self.client.clone();
        let info = py
            .detach(|| rt.block_on(client.info(&url)))
            .map_err(to_pyerr)?;
        info_to_dict(py, &info)
    }

    /// The children of directory `url` (or the file itself) as dicts.
    fn list<'py>(&self, py: Python<'py>, url: String) -> PyResult<Bound<'py, PyList>> {
        let rt = runtime()?;
        let client = self.client.clone();
        let infos = py
            .detach(|| rt.block_on(client.list(&url)))
            .map_err(to_pyerr)?;
        let out = PyList::empty(py);
        for info in &infos {
            out.append(info_to_dict(py, info)?)?;
        }
        Ok(out)
    }

    /// Forget what the workers cache about `url` (after a write).
    #[pyo3(signature = (url, recursive=false))]
    fn invalidate(&self, py: Python<'_>, url: String, recursive: bool) -> PyResult<()> {
        let rt = runtime()?;
        let client = self.client.clone();
        py.detach(|| rt.block_on(client.invalidate(&url, recursive)))
            .map_err(to_pyerr)
    }

    /// Bytes `[start, end)` of `url` as one `bytes` object built in place.
    /// Ranges no worker could serve are read with `fallback(url, start, end)`.
    #[pyo3(signature = (url, start, end, version=None, fallback=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        url: String,
        start: u64,
        end: u64,
        version: Option<String>,
        fallback: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if end < start {
            return Err(PyValueError::new_err(format!(
                "bad range: end {end} < start {start}"
            )));
        }
        let len = usize::try_from(end - start)
            .map_err(|_| PyValueError::new_err("range too large for this machine"))?;
        let rt = runtime()?;
        let client = self.client.clone();
        let mut filled = 0usize;
        let bytes = PyBytes::new_with(py, len, |buf| {
            let outcome = py
                .detach(|| rt.block_on(client.read_into(&url, version.as_deref(), start, buf)))
                .map_err(to_pyerr)?;
            filled = fill_holes(
                fallback.as_ref(),
                &url,
                start,
                &outcome.holes,
                outcome.fault.as_ref(),
                buf,
                outcome.filled,
            )?;
            Ok(())
        })?;
        if filled < len {
            // Short read at end of file (the caller asked past it): rare, copy once.
            return Ok(PyBytes::new(py, &bytes.as_bytes()[..filled]));
        }
        Ok(bytes)
    }

    /// Read bytes of `url` at `offset` straight into the writable buffer `buf`;
    /// returns the number of bytes written.
    #[pyo3(signature = (url, offset, buf, version=None, fallback=None))]
    fn read_into(
        &self,
        py: Python<'_>,
        url: String,
        offset: u64,
        buf: &Bound<'_, PyAny>,
        version: Option<String>,
        fallback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let mut target = WritableBuffer::get(buf)?;
        let rt = runtime()?;
        let client = self.client.clone();
        let slice = target.as_mut_slice();
        let outcome = py
            .detach(|| rt.block_on(client.read_into(&url, version.as_deref(), offset, slice)))
            .map_err(to_pyerr)?;
        fill_holes(
            fallback.as_ref(),
            &url,
            offset,
            &outcome.holes,
            outcome.fault.as_ref(),
            slice,
            outcome.filled,
        )
    }

    /// Many ranges at once (`cat_ranges`): one call, coalesced and parallel.
    /// Returns one `bytes` or exception object per range, in order.
    #[pyo3(signature = (urls, starts, ends, fallback=None))]
    fn read_ranges<'py>(
        &self,
        py: Python<'py>,
        urls: Vec<String>,
        starts: Vec<u64>,
        ends: Vec<u64>,
        fallback: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        if urls.len() != starts.len() || urls.len() != ends.len() {
            return Err(PyValueError::new_err(
                "urls, starts and ends must have the same length",
            ));
        }
        let mut reqs = Vec::with_capacity(urls.len());
        for ((u, s), e) in urls.into_iter().zip(starts).zip(ends) {
            if e < s {
                return Err(PyValueError::new_err(format!(
                    "bad range for {u}: end {e} < start {s}"
                )));
            }
            reqs.push((u, s, e));
        }
        let rt = runtime()?;
        let client = self.client.clone();
        let results = {
            let reqs = &reqs;
            py.detach(|| rt.block_on(client.read_ranges(reqs)))
        };
        let out = PyList::empty(py);
        for ((url, start, _end), res) in reqs.iter().zip(results) {
            match res {
                Ok(r) => out.append(range_to_bytes(py, fallback.as_ref(), url, *start, &r)?)?,
                Err(e) => out.append(to_pyerr(e).into_value(py))?,
            }
        }
        Ok(out)
    }

    /// Whole files, one request each where they fit in `max_chunk` (`cat`).
    /// Returns one `bytes` or exception object per URL, in order; a file no
    /// worker could serve at all is a `ConnectionError` (a
    /// `WorkerTimeoutError`, also a `ConnectionError`, when the last worker
    /// timed out) for the caller to read from the UFS.
    #[pyo3(signature = (urls, fallback=None))]
    fn read_files<'py>(
        &self,
        py: Python<'py>,
        urls: Vec<String>,
        fallback: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let rt = runtime()?;
        let client = self.client.clone();
        let results = {
            let urls = &urls;
            py.detach(|| rt.block_on(client.read_files(urls)))
        };
        let out = PyList::empty(py);
        for (url, res) in urls.iter().zip(results) {
            match res {
                Ok(r) => out.append(range_to_bytes(py, fallback.as_ref(), url, 0, &r)?)?,
                Err(e) => out.append(to_pyerr(e).into_value(py))?,
            }
        }
        Ok(out)
    }

    /// A sequential reader of `url` with readahead (for file objects); with
    /// `parquet_prefetch_depth` > 0 it also prefetches the read columns of
    /// the next row groups of a Parquet file.
    #[pyo3(signature = (url, size, version=None, parquet_prefetch_depth=0))]
    fn open_reader(
        &self,
        url: String,
        size: u64,
        version: Option<String>,
        parquet_prefetch_depth: usize,
    ) -> NativeReader {
        let reader = Reader::new(self.client.clone(), url.clone(), size, version)
            .with_parquet_prefetch(parquet_prefetch_depth);
        NativeReader {
            reader: Mutex::new(reader),
            url,
        }
    }

    /// GET a worker endpoint (e.g. `/metrics`) with the client's credentials.
    fn get_text(&self, py: Python<'_>, worker: String, path: String) -> PyResult<String> {
        let rt = runtime()?;
        let client = self.client.clone();
        let addr = client
            .workers()
            .into_iter()
            .find(|w| w.addr() == worker)
            .ok_or_else(|| PyValueError::new_err(format!("unknown worker {worker}")))?;
        py.detach(|| rt.block_on(client.get_text(&addr, &path)))
            .map_err(to_pyerr)
    }

    /// Counters of this client: bytes, requests, retries, fallbacks per worker.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_to_dict(py, &self.client.stats())
    }

    /// Preload `url` (a file, or everything under a directory) into the
    /// caches of its owner workers: `replicas` workers per file, at most
    /// `concurrency` requests per worker, `bandwidth` bytes/s in all.
    /// `progress(dict)` is called at most 10 times a second and at the end.
    /// Returns the summary dict (see `docs/load.md`).
    #[pyo3(signature = (url, recursive=true, replicas=1, concurrency=4, bandwidth=None,
        progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn load<'py>(
        &self,
        py: Python<'py>,
        url: String,
        recursive: bool,
        replicas: usize,
        concurrency: usize,
        bandwidth: Option<u64>,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let opts = alluxiofs_core::load::LoadOptions {
            recursive,
            replicas: replicas.max(1),
            concurrency: concurrency.max(1),
            bandwidth: bandwidth.filter(|b| *b > 0),
            ..Default::default()
        };
        load::run(py, self.client.clone(), url, opts, progress)
    }

    /// Start writing `url` through its owner worker, which uploads it to the
    /// UFS and caches its pages. `ConnectionError` when no worker can take it.
    fn open_writer(&self, py: Python<'_>, url: String) -> PyResult<writer::NativeWriter> {
        writer::NativeWriter::open(py, self.client.clone(), url)
    }

    /// Pin, unpin, set a TTL on or free `url` on every worker: `op` is
    /// `pin`, `unpin`, `ttl` (with `seconds`, 0 clears) or `free` (with
    /// `recursive`, `force`). Returns the summary as JSON text: per-worker
    /// answers and errors, summed pages and bytes.
    #[pyo3(signature = (op, url, seconds=0, recursive=true, force=false))]
    fn manage(
        &self,
        py: Python<'_>,
        op: &str,
        url: String,
        seconds: u64,
        recursive: bool,
        force: bool,
    ) -> PyResult<String> {
        use alluxiofs_core::manage::{manage, ManageOp};
        let op = match op {
            "pin" => ManageOp::Pin,
            "unpin" => ManageOp::Unpin,
            "ttl" => ManageOp::Ttl(seconds),
            "free" => ManageOp::Free { recursive, force },
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown operation {other:?} (pin, unpin, ttl, free)"
                )))
            }
        };
        let rt = runtime()?;
        let client = self.client.clone();
        let summary = py
            .detach(|| rt.block_on(manage(&client, &url, op)))
            .map_err(to_pyerr)?;
        serde_json::to_string(&summary).map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

/// A file reader with sequential readahead done in Rust.
#[pyclass(module = "alluxiofs._alluxiofs", frozen)]
struct NativeReader {
    reader: Mutex<Reader>,
    url: String,
}

#[pymethods]
impl NativeReader {
    /// File size the reader was opened with.
    #[getter]
    fn size(&self) -> u64 {
        self.reader.lock().unwrap_or_else(|p| p.into_inner()).size()
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
        let rt = runtime()?;
        let mut filled = 0usize;
        let bytes = PyBytes::new_with(py, length, |buf| {
            let outcome = py
                .detach(|| {
                    let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
                    rt.block_on(reader.read_at(offset, buf))
                })
                .map_err(to_pyerr)?;
            filled = fill_holes(
                fallback.as_ref(),
                &self.url,
                offset,
                &outcome.holes,
                outcome.fault.as_ref(),
                buf,
                outcome.filled,
            )?;
            Ok(())
        })?;
        if filled < length {
            return Ok(PyBytes::new(py, &bytes.as_bytes()[..filled]));
        }
        Ok(bytes)
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
        let rt = runtime()?;
        let slice = target.as_mut_slice();
        let outcome = py
            .detach(|| {
                let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
                rt.block_on(reader.read_at(offset, slice))
            })
            .map_err(to_pyerr)?;
        fill_holes(
            fallback.as_ref(),
            &self.url,
            offset,
            &outcome.holes,
            outcome.fault.as_ref(),
            slice,
            outcome.filled,
        )
    }
}

/// The Alluxio-compatible consistent hash ring (for inspection and tests).
#[pyclass(module = "alluxiofs._alluxiofs", frozen, name = "HashRing")]
struct PyHashRing {
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
fn worker_identity(hostname: &str) -> String {
    WorkerIdentity::from_hostname(hostname).hex()
}

/// Normalize a UFS URL (see `docs/semantics.md`).
#[pyfunction]
fn normalize_url(url: &str) -> PyResult<String> {
    alluxiofs_core::path::normalize_url(url).map_err(to_pyerr)
}

/// The Alluxio `path_id` (hex SHA-256) of a normalized URL.
#[pyfunction]
fn path_id(url: &str) -> String {
    alluxiofs_core::path::path_id(url)
}

/// Run the cache worker with command line `argv` (argv[0] is the program
/// name) until SIGTERM or SIGINT. Releases the GIL for the whole run.
///
/// As the standalone binary does: a command-line error prints the usage
/// message and exits with status 2 (`SystemExit(2)`); any other failure
/// (a configuration error) raises `RuntimeError`, for exit status 1.
#[pyfunction]
fn run_worker(py: Python<'_>, argv: Vec<String>) -> PyResult<()> {
    match py.detach(|| alluxiofs_worker::run_cli(argv)) {
        Ok(()) => Ok(()),
        Err(alluxiofs_worker::WorkerError::Cli(e)) => {
            let _ = e.print();
            Err(PySystemExit::new_err(e.exit_code()))
        }
        Err(e) => Err(PyRuntimeError::new_err(format!("worker failed: {e}"))),
    }
}

#[pymodule]
fn _alluxiofs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("AlluxioError", py.get_type::<AlluxioError>())?;
    m.add("ObjectChangedError", py.get_type::<ObjectChangedError>())?;
    m.add("WorkerTimeoutError", worker_timeout_error(py)?)?;
    m.add_class::<NativeClient>()?;
    m.add_class::<NativeReader>()?;
    m.add_class::<writer::NativeWriter>()?;
    m.add_class::<PyHashRing>()?;
    m.add_function(wrap_pyfunction!(worker_identity, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_url, m)?)?;
    m.add_function(wrap_pyfunction!(path_id, m)?)?;
    m.add_function(wrap_pyfunction!(run_worker, m)?)?;
    Ok(())
}
