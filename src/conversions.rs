//! Python values <-> core types: file info and stats as dicts, and the client
//! settings from a Python mapping.
//!
//! The client settings are declared once, in Rust: [`ClientConfig`] holds
//! them with their defaults, and [`OPTIONS`] names each one Python may set,
//! how to read it from a Python value and how to show its default.
//! `NativeClient`'s constructors take one `options` mapping converted here
//! ([`client_settings`]); `client_defaults()` shows Python the defaults, so
//! `alluxiofs.config` does not type them again.

use std::time::Duration;

use alluxiofs_core::config::ClientConfig;
use alluxiofs_core::info::FileInfo;
use alluxiofs_core::placement::Placement;
use alluxiofs_core::Stats;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMapping};
use pyo3::IntoPyObjectExt;

use crate::error::to_pyerr;

/// File info as the dict the Python package uses (`ufs_path`, `size`,
/// `type`, `mtime` in seconds, `etag` or `None`, `cached_percent`).
pub(crate) fn info_to_dict<'py>(py: Python<'py>, info: &FileInfo) -> PyResult<Bound<'py, PyDict>> {
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

/// The client's counters as a dict.
pub(crate) fn stats_to_dict<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("bytes_read", s.bytes_read)?;
    d.set_item("bytes_local", s.bytes_local)?;
    d.set_item("bytes_remote", s.bytes_remote)?;
    d.set_item("worker_requests", s.worker_requests)?;
    d.set_item("retries", s.retries)?;
    d.set_item("fallbacks", s.fallbacks.clone())?;
    d.set_item("errors", s.errors.clone())?;
    Ok(d)
}

/// The client settings of a Python `options` mapping.
pub(crate) struct ClientSettings {
    /// Every knob, defaults where the mapping said nothing.
    pub config: ClientConfig,
    /// The `placement` name given, if any (etcd mode refuses one that
    /// differs from the cluster's).
    pub placement: Option<String>,
}

/// One option Python may set: its name, its default as a Python value, and
/// how to set it from one.
struct Opt {
    name: &'static str,
    default: fn(Python<'_>, &ClientConfig) -> PyResult<Py<PyAny>>,
    set: fn(&mut ClientSettings, &Bound<'_, PyAny>) -> PyResult<()>,
}

/// A number of seconds as a [`Duration`].
fn seconds(v: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let s: f64 = v.extract()?;
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!("must be a positive number of seconds, got {s}"))
    })
}

/// Every client option Python may set, in the order `client_defaults()`
/// shows them. `placement` defaults to `None` (unset): the Alluxio ring with
/// `vnodes`, or in etcd mode the cluster's published placement.
const OPTIONS: &[Opt] = &[
    Opt {
        name: "page_size",
        default: |py, c| c.page_size.into_py_any(py),
        set: |s, v| {
            s.config.page_size = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "vnodes",
        default: |py, c| c.vnodes.into_py_any(py),
        set: |s, v| {
            s.config.vnodes = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "replicas",
        default: |py, c| c.replicas.into_py_any(py),
        set: |s, v| {
            s.config.replicas = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "connect_timeout",
        default: |py, c| c.connect_timeout.as_secs_f64().into_py_any(py),
        set: |s, v| {
            s.config.connect_timeout = seconds(v)?;
            Ok(())
        },
    },
    Opt {
        name: "request_timeout",
        default: |py, c| c.request_timeout.as_secs_f64().into_py_any(py),
        set: |s, v| {
            s.config.request_timeout = seconds(v)?;
            Ok(())
        },
    },
    Opt {
        name: "retries",
        default: |py, c| c.retries.into_py_any(py),
        set: |s, v| {
            s.config.retries = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "max_chunk",
        default: |py, c| c.max_chunk.into_py_any(py),
        set: |s, v| {
            s.config.max_chunk = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "max_parallel",
        default: |py, c| c.max_parallel.into_py_any(py),
        set: |s, v| {
            s.config.max_parallel = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "coalesce_gap",
        default: |py, c| c.coalesce_gap.into_py_any(py),
        set: |s, v| {
            s.config.coalesce_gap = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "auth_token",
        default: |py, c| c.auth_token.clone().into_py_any(py),
        set: |s, v| {
            s.config.auth_token = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "readahead_initial",
        default: |py, c| c.readahead_initial.into_py_any(py),
        set: |s, v| {
            s.config.readahead_initial = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "readahead_max",
        default: |py, c| c.readahead_max.into_py_any(py),
        set: |s, v| {
            s.config.readahead_max = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "local_reads",
        default: |py, c| c.local_reads.into_py_any(py),
        set: |s, v| {
            s.config.local_reads = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "tls",
        default: |py, c| c.tls.enabled.into_py_any(py),
        set: |s, v| {
            s.config.tls.enabled = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "tls_ca",
        default: |py, c| path_str(&c.tls.ca).into_py_any(py),
        set: |s, v| {
            s.config.tls.ca = v.extract::<Option<String>>()?.map(Into::into);
            Ok(())
        },
    },
    Opt {
        name: "tls_verify",
        default: |py, c| c.tls.verify.into_py_any(py),
        set: |s, v| {
            s.config.tls.verify = v.extract()?;
            Ok(())
        },
    },
    Opt {
        name: "tls_cert",
        default: |py, c| path_str(&c.tls.cert).into_py_any(py),
        set: |s, v| {
            s.config.tls.cert = v.extract::<Option<String>>()?.map(Into::into);
            Ok(())
        },
    },
    Opt {
        name: "tls_key",
        default: |py, c| path_str(&c.tls.key).into_py_any(py),
        set: |s, v| {
            s.config.tls.key = v.extract::<Option<String>>()?.map(Into::into);
            Ok(())
        },
    },
    Opt {
        name: "placement",
        default: |py, _| Option::<String>::None.into_py_any(py),
        set: |s, v| {
            s.placement = v.extract()?;
            Ok(())
        },
    },
];

fn path_str(p: &Option<std::path::PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

/// `client_defaults()`: every client option and its default, from
/// [`ClientConfig::default`].
pub(crate) fn client_defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let config = ClientConfig::default();
    let d = PyDict::new(py);
    for opt in OPTIONS {
        d.set_item(opt.name, (opt.default)(py, &config)?)?;
    }
    Ok(d)
}

/// The client settings of `options` (a mapping of option names to values;
/// `None` or a missing name: the default). An unknown name, or a value of
/// the wrong type or range, is a `ValueError` naming the option.
pub(crate) fn client_settings(options: Option<&Bound<'_, PyAny>>) -> PyResult<ClientSettings> {
    let mut s = ClientSettings {
        config: ClientConfig::default(),
        placement: None,
    };
    if let Some(options) = options.filter(|o| !o.is_none()) {
        let mapping = options.cast::<PyMapping>().map_err(|_| {
            PyValueError::new_err(format!(
                "client options must be a mapping, not {}",
                options
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        for item in mapping.items()?.iter() {
            let (key, value): (String, Bound<'_, PyAny>) = item.extract()?;
            let Some(opt) = OPTIONS.iter().find(|o| o.name == key) else {
                let known: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
                return Err(PyValueError::new_err(format!(
                    "unknown client option {key:?}; the options are: {}",
                    known.join(", ")
                )));
            };
            if value.is_none() {
                continue; // the default
            }
            (opt.set)(&mut s, &value).map_err(|e| {
                PyValueError::new_err(format!("client option {key}: {}", e.value(value.py())))
            })?;
        }
    }
    let c = &mut s.config;
    if c.page_size == 0 {
        return Err(PyValueError::new_err("page_size must be positive"));
    }
    c.placement = Placement::parse(s.placement.as_deref().unwrap_or("alluxio"), c.vnodes)
        .map_err(to_pyerr)?;
    c.replicas = c.replicas.max(1);
    c.max_chunk = c.max_chunk.max(c.page_size);
    c.max_parallel = c.max_parallel.max(1);
    Ok(s)
}
