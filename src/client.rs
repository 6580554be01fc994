//! `NativeClient`: the core [`Client`] for Python (hash ring plus pooled HTTP
//! client to the cache workers).
//!
//! Each method converts its arguments, calls the core through
//! [`crate::runtime::run`] (GIL released, errors mapped once) and converts
//! the result; reads fill their holes from the UFS through the Python
//! fallback ([`crate::holes`]).

use std::sync::Arc;
use std::time::Duration;

use alluxiofs_core::discovery::{discover, spawn_watch, EtcdConfig, EtcdTls, WatchHandle};
use alluxiofs_core::load::LoadOptions;
use alluxiofs_core::manage::{manage, ManageOp};
use alluxiofs_core::{Client, Reader, WorkerAddr};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::buffer::WritableBuffer;
use crate::conversions::{client_settings, info_to_dict, stats_to_dict};
use crate::error::to_pyerr;
use crate::holes::{cut, fill_holes, range_to_bytes};
use crate::reader::NativeReader;
use crate::runtime::{run, runtime, wait};
use crate::{load, writer};

/// A connection to the cache workers: the hash ring plus a pooled HTTP client.
/// Create one per process (see `alluxiofs.core`); it is not fork safe itself.
#[pyclass(module = "alluxiofs._alluxiofs", frozen)]
pub(crate) struct NativeClient {
    client: Arc<Client>,
    /// The etcd watch keeping the worker list current (etcd mode only);
    /// dropping the client stops it.
    watch: Option<WatchHandle>,
}

impl NativeClient {
    /// The core client (shared with the FUSE mount).
    pub(crate) fn core(&self) -> Arc<Client> {
        self.client.clone()
    }
}

#[pymethods]
impl NativeClient {
    /// Build a client for `workers` (a list of `(host, port)`) with the
    /// client `options` (see `client_defaults()`).
    #[new]
    #[pyo3(signature = (workers, options=None))]
    fn new(workers: Vec<(String, u16)>, options: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let settings = client_settings(options)?;
        let addrs = workers
            .iter()
            .map(|(h, p)| WorkerAddr::from_host_port(h, *p))
            .collect();
        let client = Client::new(settings.config, addrs).map_err(to_pyerr)?;
        Ok(NativeClient {
            client: Arc::new(client),
            watch: None,
        })
    }

    /// Find the workers of `cluster` in etcd (`endpoints`: `http://host:port`
    /// URLs) and keep following them: a background watch applies every join
    /// and leave. The cluster's published placement is used; a different
    /// `placement` in `options` is an error.
    #[staticmethod]
    #[pyo3(signature = (endpoints, cluster="DefaultAlluxioCluster".to_string(), username=None,
        password=None, options=None, tls_ca=None, tls_cert=None, tls_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn from_etcd(
        py: Python<'_>,
        endpoints: Vec<String>,
        cluster: String,
        username: Option<String>,
        password: Option<String>,
        options: Option<&Bound<'_, PyAny>>,
        tls_ca: Option<String>,
        tls_cert: Option<String>,
        tls_key: Option<String>,
    ) -> PyResult<Self> {
        let settings = client_settings(options)?;
        let mut config = settings.config;
        let etcd = EtcdConfig {
            endpoints,
            cluster,
            username,
            password,
            connect_timeout: config.connect_timeout.max(Duration::from_secs(1)),
            tls: None,
        };
        let tls_on = tls_ca.is_some()
            || tls_cert.is_some()
            || etcd.endpoints.iter().any(|e| e.starts_with("https://"));
        let etcd = EtcdConfig {
            tls: tls_on.then(|| EtcdTls {
                ca: tls_ca.map(Into::into),
                cert: tls_cert.map(Into::into),
                key: tls_key.map(Into::into),
            }),
            ..etcd
        };
        let found = run(py, || discover(&etcd))?;
        if let Some(published) = found.placement {
            if settings.placement.is_some() && published != config.placement {
                return Err(PyValueError::new_err(format!(
                    "placement {:?} differs from the one cluster {:?} publishes in etcd ({}); \
                     leave placement unset to use the cluster's",
                    settings.placement.unwrap_or_default(),
                    etcd.cluster,
                    published.to_setting()
                )));
            }
            config.placement = published;
        }
        let client = Arc::new(Client::new(config, found.workers).map_err(to_pyerr)?);
        let watch = {
            let rt = runtime()?;
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
        let info = run(py, || self.client.info(&url))?;
        info_to_dict(py, &info)
    }

    /// The children of directory `url` (or the file itself) as dicts.
    fn list<'py>(&self, py: Python<'py>, url: String) -> PyResult<Bound<'py, PyList>> {
        let infos = run(py, || self.client.list(&url))?;
        let out = PyList::empty(py);
        for info in &infos {
            out.append(info_to_dict(py, info)?)?;
        }
        Ok(out)
    }

    /// Forget what the workers cache about `url` (after a write).
    #[pyo3(signature = (url, recursive=false))]
    fn invalidate(&self, py: Python<'_>, url: String, recursive: bool) -> PyResult<()> {
        run(py, || self.client.invalidate(&url, recursive))
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
        let mut filled = 0usize;
        let bytes = PyBytes::new_with(py, len, |buf| {
            let outcome = run(py, || {
                self.client.read_into(&url, version.as_deref(), start, buf)
            })?;
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
        Ok(cut(py, bytes, filled))
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
        let slice = target.as_mut_slice();
        let outcome = run(py, || {
            self.client
                .read_into(&url, version.as_deref(), offset, &mut *slice)
        })?;
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
        let results = wait(py, || self.client.read_ranges(&reqs))?;
        let out = PyList::empty(py);
        for ((url, start, _end), res) in reqs.iter().zip(results) {
            match res {
                Ok(r) => out.append(range_to_bytes(py, fallback.as_ref(), url, *start, &r)?)?,
                Err(e) => out.append(to_pyerr(e).into_value(py))?,
            }
        }
        Ok(out)
    }

    /// Whole files (`cat`): one batch request per owner worker, each file's
    /// first `max_chunk` bytes (with `batch=False`, one request per file, as
    /// for workers without the batch route). Returns one `bytes` or
    /// exception object per URL, in order; a file no worker could serve at
    /// all is a `ConnectionError` (a `WorkerTimeoutError`, also a
    /// `ConnectionError`, when the last worker timed out) for the caller to
    /// read from the UFS.
    #[pyo3(signature = (urls, fallback=None, batch=true))]
    fn read_files<'py>(
        &self,
        py: Python<'py>,
        urls: Vec<String>,
        fallback: Option<Bound<'py, PyAny>>,
        batch: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let results = if batch {
            wait(py, || self.client.read_files(&urls))?
        } else {
            wait(py, || self.client.read_files_per_file(&urls))?
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
        NativeReader::new(reader, url)
    }

    /// GET a worker endpoint (e.g. `/metrics`) with the client's credentials.
    fn get_text(&self, py: Python<'_>, worker: String, path: String) -> PyResult<String> {
        let addr = self
            .client
            .workers()
            .into_iter()
            .find(|w| w.addr() == worker)
            .ok_or_else(|| PyValueError::new_err(format!("unknown worker {worker}")))?;
        run(py, || self.client.get_text(&addr, &path))
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
        let opts = LoadOptions {
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
        let summary = run(py, || manage(&self.client, &url, op))?;
        serde_json::to_string(&summary).map_err(|e| PyValueError::new_err(e.to_string()))
    }
}
