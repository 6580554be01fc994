"""Client options: one place for every knob, its default, and where it is read from.

Precedence: keyword arguments > ``ALLUXIOFS_*`` environment variables > the YAML
file named by ``config_file=`` or ``ALLUXIOFS_CONFIG`` > defaults. Alluxio-style
``options={"alluxio.worker.page.store.page.size": "1MB", ...}`` (what the PyPI
``alluxiofs`` client takes) are honoured too. See ``docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from . import _alluxiofs, compat
from .units import parse_seconds, parse_size

# The native client's options and their defaults, declared once in Rust
# (``ClientConfig``): the fields of :class:`ClientOptions` that the native
# client takes default to these, and :meth:`ClientOptions.native_options`
# hands exactly these names to ``NativeClient``.
_NATIVE: dict[str, Any] = _alluxiofs.client_defaults()


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclasses.dataclass
class ClientOptions:
    """Every client knob with its default. Field docs are in docs/configuration.md.

    The native client's knobs (``page_size`` ... ``placement``) take their
    defaults from Rust (``_alluxiofs.client_defaults()``); the others are the
    Python layer's own."""

    worker_hosts: str | None = None
    """Comma-separated ``host[:port]`` list; empty means the embedded local worker."""
    worker_http_port: int = _alluxiofs.DEFAULT_WORKER_PORT
    """Port for hosts in ``worker_hosts`` given without one (Alluxio's default)."""
    etcd_hosts: str | None = None
    """etcd endpoints for worker discovery: ``host[:port],...`` or ``http://host:port,...``."""
    etcd_port: int = 2379
    """Port for etcd hosts given without one (the PyPI client's ``etcd_port``)."""
    cluster_name: str = "DefaultAlluxioCluster"
    """Cluster name: workers register under ``/ServiceDiscovery/<cluster_name>/``."""
    etcd_username: str | None = None
    """etcd user, if etcd has authentication on."""
    etcd_password: str | None = None
    """etcd password for ``etcd_username``."""
    etcd_tls_ca: str | None = None
    """PEM CA bundle of etcd's certificate: talk to etcd over TLS (also on for ``https://``
    endpoints, then with the system's roots)."""
    etcd_tls_cert: str | None = None
    """PEM client certificate for an etcd that requires one (``--client-cert-auth``)."""
    etcd_tls_key: str | None = None
    """PEM private key of ``etcd_tls_cert``."""
    placement: str | None = _NATIVE["placement"]
    """Placement of paths on workers: ``alluxio`` (the Alluxio-compatible ring, the default) or
    ``rendezvous`` (better balanced; alluxiofs-only clusters). With etcd the cluster's published
    setting is used and a different value here is an error."""
    page_size: int = _NATIVE["page_size"]
    """Page size in bytes; must match the workers'."""
    vnodes: int = _NATIVE["vnodes"]
    """Virtual nodes per worker on the hash ring (Alluxio's default is 5)."""
    replicas: int = _NATIVE["replicas"]
    """Preferred workers per path tried in order before falling back to the UFS."""
    connect_timeout: float = _NATIVE["connect_timeout"]
    """Seconds to connect to a worker."""
    request_timeout: float = _NATIVE["request_timeout"]
    """Seconds for one whole worker request."""
    retries: int = _NATIVE["retries"]
    """Retries per worker on connection errors, timeouts and 5xx."""
    max_chunk: int = _NATIVE["max_chunk"]
    """Reads larger than this are split into page-aligned chunks fetched in parallel."""
    max_parallel: int = _NATIVE["max_parallel"]
    """Concurrent worker requests per call."""
    coalesce_gap: int = _NATIVE["coalesce_gap"]
    """``cat_ranges``: ranges of one file closer than this are fetched as one."""
    readahead_initial: int = _NATIVE["readahead_initial"]
    """First readahead window of a sequentially read file."""
    readahead_max: int = _NATIVE["readahead_max"]
    """Largest readahead window."""
    local_reads: bool = _NATIVE["local_reads"]
    """Read warm pages of a worker on this node (the embedded worker, or a cluster worker on
    the same host) from its page files, through descriptors it passes over its Unix socket,
    instead of over HTTP (docs/architecture.md, "Same-node reads")."""
    parquet_prefetch_depth: int = 2
    """Parquet files: after a read of column chunks of row group k, prefetch the
    same columns of row groups k+1..k+depth in the background (0: off)."""
    auth_token: str | None = _NATIVE["auth_token"]
    """Bearer token the workers require, if any."""
    auth_token_file: str | None = None
    """File holding the token (alternative to ``auth_token``)."""
    tls: bool = _NATIVE["tls"]
    """Speak HTTPS to the workers (implied by ``tls_ca`` and ``tls_cert``)."""
    tls_ca: str | None = _NATIVE["tls_ca"]
    """PEM CA bundle trusted for the workers' certificates, instead of the system's roots."""
    tls_verify: bool = _NATIVE["tls_verify"]
    """Check the workers' certificates and host names (turn off for testing only)."""
    tls_cert: str | None = _NATIVE["tls_cert"]
    """PEM client certificate for workers that require one (mutual TLS)."""
    tls_key: str | None = _NATIVE["tls_key"]
    """PEM private key of ``tls_cert``."""
    fallback: bool = True
    """Read from the UFS when no worker can answer (fail open, counted in ``stats()``)."""
    embedded_capacity: int = 10 << 30
    """Disk capacity of the embedded local worker's page store."""
    embedded_memory_capacity: int = 256 << 20
    """Memory tier of the embedded local worker."""
    write_mode: str = "populate"
    """Writes (``open("wb")``, ``pipe_file``, ``put_file``): ``populate`` streams the bytes
    through the path's owner worker, which uploads them to the UFS and keeps the pages in
    its cache; ``invalidate`` writes with the target filesystem and makes the workers forget
    the path."""

    _SIZES = (
        "page_size",
        "max_chunk",
        "coalesce_gap",
        "readahead_initial",
        "readahead_max",
        "embedded_capacity",
        "embedded_memory_capacity",
    )
    _SECONDS = ("connect_timeout", "request_timeout")
    _INTS = ("worker_http_port", "etcd_port", "vnodes", "replicas", "retries", "max_parallel",
             "parquet_prefetch_depth")  # fmt: skip
    _BOOLS = ("fallback", "local_reads", "tls", "tls_verify")

    def native_options(self) -> dict[str, Any]:
        """The options of the native client (``NativeClient(workers, options)``)."""
        return {name: getattr(self, name) for name in _NATIVE}

    def set(self, key: str, value: Any) -> None:
        """Set one option from a string or typed value, with a clear error for bad input."""
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise ValueError(f"unknown alluxiofs option {key!r}")
        if value is None:
            setattr(self, key, None)
            return
        try:
            if key in self._SIZES:
                value = parse_size(value)
            elif key in self._SECONDS:
                value = parse_seconds(value)
            elif key in self._INTS:
                value = int(value)
            elif key in self._BOOLS:
                value = _parse_bool(value)
            elif key == "worker_hosts" and not isinstance(value, str):
                value = ",".join(str(v) for v in value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"alluxiofs option {key}: {e}") from None
        setattr(self, key, value)


def resolve_options(
    kwargs: dict[str, Any], alluxio_options: dict[str, Any] | None, config_file: str | None
) -> ClientOptions:
    """Merge defaults, the YAML file, the environment, Alluxio options and kwargs.

    Option names of Alluxio's own client are translated first
    (:mod:`alluxiofs.compat`)."""
    opts = ClientOptions()
    path = config_file or os.environ.get("ALLUXIOFS_CONFIG")
    if path:
        for k, v in _load_yaml(path).items():
            opts.set(str(k), v)
    names = [f.name for f in dataclasses.fields(opts)]
    for name in names:
        env = os.environ.get("ALLUXIOFS_" + name.upper())
        if env is not None and env != "":
            opts.set(name, env)
    for k, v in compat.alluxio_properties(alluxio_options).items():
        opts.set(k, v)
    for k, v in compat.translate(kwargs).items():
        if k in names:
            opts.set(k, v)
        else:
            raise TypeError(f"AlluxioFileSystem got an unexpected option {k!r}")
    if opts.auth_token is None and opts.auth_token_file:
        with open(opts.auth_token_file) as f:
            opts.auth_token = f.read().strip()
    if (opts.tls_cert is None) != (opts.tls_key is None):
        raise ValueError("tls_cert and tls_key go together: set both or neither")
    if (opts.etcd_tls_cert is None) != (opts.etcd_tls_key is None):
        raise ValueError("etcd_tls_cert and etcd_tls_key go together: set both or neither")
    if opts.page_size <= 0:
        raise ValueError("page_size must be positive")
    if opts.replicas < 1:
        raise ValueError("replicas must be at least 1")
    if opts.write_mode not in ("populate", "invalidate"):
        raise ValueError(f"write_mode must be 'populate' or 'invalidate', not {opts.write_mode!r}")
    return opts


def _load_yaml(path: str) -> dict[str, Any]:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading the alluxiofs config file {path} needs PyYAML: pip install pyyaml"
        ) from None
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    return data.get("client", data)


def parse_etcd_hosts(spec: str, default_port: int) -> list[str]:
    """``"h1,h2:2380,http://h3:2379"`` → ``["http://h1:2379", "http://h2:2380", "http://h3:2379"]``."""
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if "://" in item:
            out.append(item)
            continue
        host, port = parse_worker_hosts(item, default_port)[0]
        out.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
    if not out:
        raise ValueError(f"etcd_hosts {spec!r} names no endpoint")
    return out


def parse_worker_hosts(spec: str, default_port: int) -> list[tuple[str, int]]:
    """``"h1,h2:28081,[::1]:9000"`` → ``[("h1", 28080), ("h2", 28081), ("::1", 9000)]``."""
    out: list[tuple[str, int]] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        elif item.count(":") == 1:
            host, p = item.split(":")
            port = int(p)
        else:
            host, port = item, default_port
        if not host or not (0 < port < 65536):
            raise ValueError(f"bad worker address {item!r} in worker_hosts")
        out.append((host, port))
    return out
