"""Constructor options of Alluxio's own ``alluxiofs`` client (PyPI 1.0.x and 1.1.x).

Code written for that client passes its option names to
``fsspec.filesystem("alluxio", ...)``. This module translates them, once, into
ours: a name with the same meaning here becomes our option (``etcd_host`` is
``etcd_hosts``, ``concurrency`` is ``max_parallel``, ``http_timeouts`` is
``request_timeout``...); a name that has no meaning here is dropped with a
:class:`CompatibilityWarning` that names our equivalent; a name whose meaning
we cannot honour at all is a ``ValueError``. ``fs=`` (a target filesystem
instance), ``preload_path=`` and ``logger=`` are handled by
:class:`~alluxiofs.core.AlluxioFileSystem` itself.

Alluxio properties given as ``options={"alluxio....": value}`` are translated
here too (:func:`alluxio_properties`).
"""

from __future__ import annotations

import warnings
from typing import Any


class CompatibilityWarning(UserWarning):
    """An option of Alluxio's ``alluxiofs`` client that alluxiofs accepts but does not use."""


# Same meaning, another name: theirs -> ours.
RENAMED = {
    "etcd_host": "etcd_hosts",  # Alluxio's Ray article spells it in the singular
    "concurrency": "max_parallel",
    "http_max_retries": "retries",
    "http_timeouts": "request_timeout",
}

# Accepted and ignored, with what to use instead.
IGNORED = {
    "etcd_refresh_workers_interval": "workers are watched in etcd: joins and leaves reach "
    "the client within a second, no polling interval",
    "logger": "alluxiofs logs to logging.getLogger('alluxiofs')",
    "test_options": "nothing replaces it (it only served that client's own tests)",
    "use_mem_cache": "the cache workers keep a memory tier (worker --memory-capacity; "
    "embedded_memory_capacity= for the embedded worker)",
    "mem_map_capacity": "the cache workers keep a memory tier (worker --memory-capacity; "
    "embedded_memory_capacity= for the embedded worker)",
    "use_memory_cache": "the cache workers keep a memory tier (worker --memory-capacity; "
    "embedded_memory_capacity= for the embedded worker)",
    "memory_cache_size_mb": "embedded_memory_capacity= (the embedded worker's memory tier)",
    "use_local_disk_cache": "the node-local cache is a worker on this node: leave worker_hosts "
    "and etcd_hosts out to use the embedded local worker (embedded_capacity=)",
    "local_disk_cache_dir": "the embedded worker keeps its pages under $ALLUXIOFS_HOME",
    "local_cache_dir": "the embedded worker keeps its pages under $ALLUXIOFS_HOME",
    "local_cache_size_gb": "embedded_capacity= (the embedded worker's disk capacity)",
    "local_cache_block_size_mb": "page_size= (pages are the unit of caching)",
    "mcap_enabled": "sequential reads always prefetch: readahead_initial= / readahead_max=",
    "mcap_prefetch_ahead_blocks": "readahead_initial= / readahead_max=",
    "mcap_prefetch_concurrency": "max_parallel=",
    "mcap_max_prefetch_blocks": "readahead_max=",
    "mcap_prefetch_policy": "readahead_initial= / readahead_max= (the window doubles on "
    "sequential reads and resets on a seek)",
    "read_buffer_size_mb": "reads are not buffered in Python; block_size= of open() sets "
    "fsspec's read size",
}

# Options that cannot be honoured: a clear error rather than a silent difference.
REFUSED = {
    "load_balance_domain": "alluxiofs routes each path to its owner worker itself: give "
    "worker_hosts='h1:28080,h2:28080' or etcd_hosts='etcd:2379'",
}

# Alluxio properties (``options=``) -> our option.
ALLUXIO_PROPERTIES = {
    "alluxio.worker.page.store.page.size": "page_size",
    "alluxio.user.consistent.hash.virtual.node.count.per.worker": "vnodes",
    "alluxio.user.worker.selection.policy.consistent.hash.virtual.node.count.per.worker": "vnodes",
    "alluxio.worker.http.server.port": "worker_http_port",
    "alluxio.cluster.name": "cluster_name",
}

# Alluxio properties that need nothing here.
ALLUXIO_PROPERTIES_IGNORED = {
    "alluxio.common.extension.enable": "the native core is always on",
    "alluxio.common.ondemandpool.disable": "the native core sizes its own pools",
}


def _warn(name: str, instead: str) -> None:
    warnings.warn(
        f"alluxiofs: option {name!r} of Alluxio's client is not used here; {instead}",
        CompatibilityWarning,
        stacklevel=4,
    )


def translate(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with Alluxio client option names replaced by ours (see the module doc)."""
    out: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in REFUSED:
            raise ValueError(f"alluxiofs: option {name!r} is not supported: {REFUSED[name]}")
        if name in IGNORED:
            _warn(name, IGNORED[name])
            continue
        ours = RENAMED.get(name, name)
        if ours in out:
            raise ValueError(f"alluxiofs: option {ours!r} is given twice (once as {name!r})")
        out[ours] = value
    return out


def alluxio_properties(options: dict[str, Any] | None) -> dict[str, Any]:
    """``options={"alluxio.*": value}`` → our option names (unknown properties warn)."""
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key in ALLUXIO_PROPERTIES:
            out[ALLUXIO_PROPERTIES[key]] = value
        elif key in ALLUXIO_PROPERTIES_IGNORED:
            _warn(key, ALLUXIO_PROPERTIES_IGNORED[key])
        else:
            _warn(key, "see docs/configuration.md for the options alluxiofs has")
    return out
