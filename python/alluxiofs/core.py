"""``AlluxioFileSystem``: the fsspec filesystem of alluxiofs.

Reads go to the cache workers through the Rust core (hash-ring routing,
parallel page-aligned range reads, readahead, all with the GIL released);
``open("wb")``, ``pipe_file`` and ``put_file`` stream through the path's owner
worker, which uploads to the UFS and caches the written pages (``write_mode=
"populate"``, see :mod:`alluxiofs.write`); other writes go to the target (UFS)
filesystem and invalidate what the workers know about the written paths.
When no worker can answer, reads fall back to the
target filesystem: counted in :meth:`AlluxioFileSystem.stats` and logged once
per worker, never silent.
"""

from __future__ import annotations

import errno
import logging
import operator
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fsspec import filesystem as _fsspec_filesystem
from fsspec.spec import AbstractFileSystem, make_instance

try:  # fsspec >= 2025.10 hands chained URLs' paths only to ChainedFileSystem subclasses
    from fsspec.implementations.chained import ChainedFileSystem as _Base
except ImportError:  # pragma: no cover - older fsspec
    _Base = AbstractFileSystem  # type: ignore[misc,assignment]
from fsspec.utils import stringify_path, tokenize

from . import _alluxiofs, embedded
from . import prefetch as _prefetch
from .config import ClientOptions, parse_etcd_hosts, parse_worker_hosts, resolve_options
from .counters import Counters

logger = logging.getLogger("alluxiofs")

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_CANONICAL = {"s3a": "s3", "gcs": "gs", "local": "file", "abfs": "az", "adl": "az"}
# fsspec's own keyword arguments that reach __init__ and are not ours.
_FSSPEC_KWARGS = {
    "skip_instance_cache",
    "use_listings_cache",
    "listings_expiry_time",
    "max_paths",
    "asynchronous",
    "loop",
    "fo",
}

# One native client per process and configuration, shared by the instances
# fsspec creates (per thread, per pickle round trip). Keyed by PID because data
# loaders fork: a child must not reuse the parent's sockets or runtime. The
# third item is the embedded worker the client talks to (None otherwise): a
# client whose embedded worker has gone is built again, which restarts it.
_CLIENTS: dict[
    tuple[Any, ...], tuple[int, _alluxiofs.NativeClient, embedded.LocalWorker | None]
] = {}
_CLIENTS_LOCK = threading.Lock()


def _reinit_clients_lock() -> None:
    # A background thread (a prefetch) may hold the lock at the moment of a
    # fork; the child would wait for it forever.
    global _CLIENTS_LOCK
    _CLIENTS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reinit_clients_lock)


def _canonical_protocol(p: str | None) -> str | None:
    if p is None:
        return None
    p = p.lower()
    return _CANONICAL.get(p, p)


class _Protocols:
    """``protocol``: ``("alluxiofs", "alluxio")`` on the class (fsspec's registry,
    ``_strip_protocol``); an instance also names its target protocol, as it
    accepts those URLs too. Ray Data keeps a user's filesystem for
    ``s3://...`` paths only when ``"s3"`` is among its protocols: without it,
    ``read_parquet("s3://...", filesystem=fs)`` would silently read S3 directly."""

    NAMES = ("alluxiofs", "alluxio")

    def __get__(self, obj: Any, cls: type | None = None) -> tuple[str, ...]:
        target = None if obj is None else obj.__dict__.get("target_protocol")
        return self.NAMES if target is None or target in self.NAMES else (*self.NAMES, target)


class AlluxioFileSystem(_Base):  # type: ignore[valid-type,misc]
    """An fsspec filesystem that reads through alluxiofs cache workers.

    Parameters
    ----------
    worker_hosts:
        ``"host[:port],host[:port]"`` of the cache workers. Empty: use (and
        start if needed) the embedded local worker of this machine.
    target_protocol:
        The UFS protocol (``s3``, ``gs``, ``az``, ``http``, ``file``...). Inferred
        from the first URL with a scheme when not given.
    target_options:
        Options for the target fsspec filesystem (used for writes and for the
        fallback when no worker can answer), e.g. s3fs's ``key``, ``secret``,
        ``client_kwargs={"endpoint_url": ...}``. The embedded worker gets the
        same credentials.
    options:
        Alluxio properties, as the PyPI ``alluxiofs`` client takes them
        (``alluxio.worker.page.store.page.size``, ...).
    config_file:
        A YAML file of client options (else ``$ALLUXIOFS_CONFIG``).
    fs:
        The target filesystem as an fsspec instance, instead of
        ``target_protocol`` and ``target_options`` (as Alluxio's client takes
        it): its protocol is the target protocol and its ``storage_options``
        the target options (the embedded worker gets the same credentials).
    preload_path:
        A file or directory to load into the cache before the constructor
        returns (:meth:`load`, recursive). Done once, where the filesystem is
        made: copies unpickled in other processes do not load again.
    **kwargs:
        Any field of :class:`alluxiofs.config.ClientOptions` (``page_size``,
        ``replicas``, ``request_timeout``, ``fallback``, ...), or an option
        name of Alluxio's own ``alluxiofs`` client (:mod:`alluxiofs.compat`:
        ``etcd_host``, ``concurrency``, ...).
    """

    protocol = _Protocols()
    root_marker = ""
    cachable = True

    def __init__(
        self,
        worker_hosts: str | list[str] | None = None,
        target_protocol: str | None = None,
        target_options: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        config_file: str | None = None,
        fs: AbstractFileSystem | None = None,
        preload_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        fsspec_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _FSSPEC_KWARGS}
        fsspec_kwargs.pop("fo", None)
        super().__init__(**fsspec_kwargs)
        if worker_hosts is not None:
            kwargs["worker_hosts"] = worker_hosts
        self.options: ClientOptions = resolve_options(kwargs, options, config_file)
        if self.options.etcd_hosts and self.options.worker_hosts:
            raise ValueError("give either worker_hosts or etcd_hosts, not both")
        self.target_protocol = _canonical_protocol(target_protocol)
        if fs is not None:
            target_options = self._adopt_target(fs, target_options)
        self.target_options = dict(target_options or {})
        # Options are fixed from here on: token them once, not on every read.
        self._options_token = tokenize(self.options, self.target_options)
        self._target_fs: AbstractFileSystem | None = fs
        self.counters = Counters(
            "ufs_fallback_reads", "ufs_fallback_bytes", "metadata_fallbacks",
            "writes", "write_bytes", "write_pages_cached", per_key=("write_fallbacks",),
        )  # fmt: skip
        """What this instance's Python layer counted (UFS fallbacks, writes); in :meth:`stats`."""
        self._stats_since = time.time()
        self._logged_workers: set[str] = set()
        if preload_path is not None:
            summary = self.load(preload_path, progress=False)
            logger.info(
                "alluxiofs: preloaded %s: %d files, %d bytes loaded, %d bytes already cached",
                preload_path,
                summary["files_total"],
                summary["bytes_loaded"],
                summary["bytes_skipped"],
            )

    def _adopt_target(
        self, fs: AbstractFileSystem, target_options: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Take ``fs`` as the target filesystem; return the target options to use."""
        if not isinstance(fs, AbstractFileSystem):
            raise TypeError(f"fs must be an fsspec filesystem instance, not {type(fs).__name__}")
        proto = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
        proto = _canonical_protocol(proto)
        if self.target_protocol is not None and self.target_protocol != proto:
            raise ValueError(
                f"fs is a {proto}:// filesystem but target_protocol is {self.target_protocol!r}"
            )
        self.target_protocol = proto
        return dict(fs.storage_options) if target_options is None else target_options

    def __reduce__(self) -> Any:
        # A copy made in another process (Ray, multiprocessing) does not preload again.
        kwargs = {k: v for k, v in self.storage_options.items() if k != "preload_path"}
        return make_instance, (type(self), self.storage_args, kwargs)

    # ------------------------------------------------------------------ paths

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        if "::" in path:
            path = path.rsplit("::", 1)[-1]
        m = _SCHEME_RE.match(path)
        if m:
            scheme = m.group(1).lower()
            rest = path[m.end() :]
            if scheme in cls.protocol:
                m2 = _SCHEME_RE.match(rest)
                if m2:
                    rest = rest[m2.end() :]
                    scheme = m2.group(1).lower()
            path = rest
            if _canonical_protocol(scheme) == "file" and not path.startswith("/"):
                path = "/" + path
        if path.startswith("/"):
            return "/" + path.strip("/")
        return path.rstrip("/")

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        m = _SCHEME_RE.match(stringify_path(path).rsplit("::", 1)[-1])
        if m and m.group(1).lower() not in AlluxioFileSystem.protocol:
            return {"target_protocol": _canonical_protocol(m.group(1))}
        return {}

    def _protocol_for(self, path: str) -> tuple[str, str]:
        """The target protocol for ``path`` and the path without its scheme."""
        s = stringify_path(path)
        if "::" in s:
            s = s.rsplit("::", 1)[-1]
        m = _SCHEME_RE.match(s)
        if m and m.group(1).lower() in _Protocols.NAMES:
            s = s[m.end() :]
            m = _SCHEME_RE.match(s)
        if m:
            proto = _canonical_protocol(m.group(1))
            rest = s[m.end() :]
            if self.target_protocol is None:
                self.target_protocol = proto
            elif proto != self.target_protocol:
                raise ValueError(
                    f"{path}: this filesystem reads {self.target_protocol}:// "
                    f"(target_protocol), not {proto}://"
                )
            return proto, rest  # type: ignore[return-value]
        if self.target_protocol is None:
            if s.startswith("/"):
                self.target_protocol = "file"
            else:
                raise ValueError(
                    f"{path}: no target_protocol given and the path has no scheme; "
                    "pass target_protocol='s3' (or 'file', 'gs', ...) or a full URL"
                )
        return self.target_protocol, s

    def _resolve(self, path: str) -> tuple[str, str]:
        """``path`` → (normalized UFS URL, fsspec name without protocol)."""
        proto, rest = self._protocol_for(path)
        if proto == "file":
            local = rest if rest.startswith("/") else os.path.abspath(rest)
            url = _alluxiofs.normalize_url("file://" + local)
        else:
            url = _alluxiofs.normalize_url(f"{proto}://{rest}")
        return url, self._name(url)

    @staticmethod
    def _name(url: str) -> str:
        m = _SCHEME_RE.match(url)
        rest = url[m.end() :] if m else url
        return rest if not rest.startswith("/") else ("/" + rest.strip("/"))

    # ------------------------------------------------------------ the clients

    def _client(self) -> _alluxiofs.NativeClient:
        """The native client of this process for this configuration (built lazily)."""
        if self.target_protocol is None and not (
            self.options.worker_hosts or self.options.etcd_hosts
        ):
            # Only the embedded worker needs the protocol (it mounts the UFS).
            raise ValueError("no target_protocol known yet: pass target_protocol= or a full URL")
        key = (self._options_token, self.target_protocol)
        pid = os.getpid()
        with _CLIENTS_LOCK:
            entry = _CLIENTS.get(key)
            if entry is not None and entry[0] == pid:
                local = entry[2]
                if local is None or embedded.is_running(local):
                    return entry[1]
            o = self.options
            native = o.native_options()
            if o.etcd_hosts:
                client = _alluxiofs.NativeClient.from_etcd(
                    parse_etcd_hosts(o.etcd_hosts, o.etcd_port),
                    cluster=o.cluster_name,
                    username=o.etcd_username,
                    password=o.etcd_password,
                    options=native,
                    tls_ca=o.etcd_tls_ca,
                    tls_cert=o.etcd_tls_cert,
                    tls_key=o.etcd_tls_key,
                )
            elif o.worker_hosts:
                workers = parse_worker_hosts(o.worker_hosts, o.worker_http_port)
                if not workers:
                    raise ValueError(f"worker_hosts {o.worker_hosts!r} names no worker")
                client = _alluxiofs.NativeClient(workers, native)
            else:
                local = embedded.ensure_local_worker(
                    self.target_protocol,
                    self.target_options,
                    capacity=o.embedded_capacity,
                    memory_capacity=o.embedded_memory_capacity,
                    page_size=o.page_size,
                )
                native["auth_token"] = local.token
                client = _alluxiofs.NativeClient([(local.host, local.port)], native)
                _CLIENTS[key] = (pid, client, local)
                return client
            _CLIENTS[key] = (pid, client, None)
            return client

    @property
    def target_fs(self) -> AbstractFileSystem:
        """The fsspec filesystem of the UFS (writes, and reads when the cache cannot answer)."""
        if self._target_fs is None:
            if self.target_protocol is None:
                raise ValueError("no target_protocol known yet")
            options = dict(self.target_options)
            if self.target_protocol == "file":
                # Writes through the workers create parent directories, as an
                # object store does; so do writes and copies that go to the
                # local target directly (cp into a new directory, fallbacks).
                options.setdefault("auto_mkdir", True)
            self._target_fs = _fsspec_filesystem(self.target_protocol, **options)
        return self._target_fs

    def _target_path(self, url: str) -> str:
        return url[len("file://") :] if url.startswith("file://") else url

    def _fallback(self) -> Any:
        return self._ufs_read if self.options.fallback else None

    def _ufs_read(self, url: str, start: int, end: int) -> bytes:
        """Read ``[start, end)`` of ``url`` from the UFS (called by the core for holes)."""
        data = self.target_fs.cat_file(self._target_path(url), start=start, end=end)
        self.counters.add("ufs_fallback_reads")
        self.counters.add("ufs_fallback_bytes", len(data))
        self._log_new_fallbacks()
        return data

    def _log_new_fallbacks(self) -> None:
        stats = self._client().stats()
        for worker, n in stats["fallbacks"].items():
            if n and worker not in self._logged_workers:
                self._logged_workers.add(worker)
                logger.warning(
                    "alluxiofs: worker %s could not serve reads; reading from the UFS instead "
                    "(counted in fs.stats()['fallbacks'])",
                    worker,
                )

    def _meta(self, op: str, url: str) -> Any:
        """Metadata from the workers, or from the UFS when none can answer."""
        client = self._client()
        try:
            return client.info(url) if op == "info" else client.list(url)
        except (ConnectionError, TimeoutError) as e:
            # A worker that cannot reach the UFS: this process would only
            # wait out the same outage.
            if not self.options.fallback or isinstance(e, _alluxiofs.UfsUnreachableError):
                raise
            self.counters.add("metadata_fallbacks")
            logger.warning("alluxiofs: %s of %s from the UFS: %s", op, url, e)
            tpath = self._target_path(url)
            if op == "info":
                return self._from_target(self.target_fs.info(tpath), url)
            return [self._from_target(d, None) for d in self.target_fs.ls(tpath, detail=True)]

    def _from_target(self, d: dict[str, Any], url: str | None) -> dict[str, Any]:
        if url is None:
            name = d["name"]
            url = _alluxiofs.normalize_url(
                ("file://" + name) if self.target_protocol == "file"
                else f"{self.target_protocol}://{name}"
            )  # fmt: skip
        etag = d.get("ETag") or d.get("etag")
        return {
            "ufs_path": url,
            "size": int(d.get("size") or 0),
            "type": "directory" if d.get("type") == "directory" else "file",
            "mtime": d.get("mtime"),
            "etag": etag,
            "cached_percent": 0,
        }

    def _entry(self, d: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": self._name(d["ufs_path"]),
            "size": d["size"],
            "type": d["type"],
            "mtime": d["mtime"],
            "etag": d["etag"],
            "ufs_path": d["ufs_path"],
            "cached_percent": d.get("cached_percent", 0),
        }

    # --------------------------------------------------------------- metadata

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        url, _ = self._resolve(path)
        return self._entry(self._meta("info", url))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        url, _ = self._resolve(path)
        entries = [self._entry(d) for d in self._meta("list", url)]
        entries.sort(key=lambda e: e["name"])
        return entries if detail else [e["name"] for e in entries]

    def ukey(self, path: str) -> str:
        info = self.info(path)
        return info.get("etag") or tokenize(info["name"], info["size"], info["mtime"])

    def invalidate_cache(self, path: str | None = None) -> None:
        """No client-side listing cache to drop (the workers keep metadata with a TTL)."""

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _check_offset(value: Any, what: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError(f"bad range: {what} must be an integer or None, got {value!r}")
        try:
            # Accepts int and integer-like objects (numpy ints from data loaders).
            return operator.index(value)
        except TypeError:
            raise ValueError(
                f"bad range: {what} must be an integer or None, got {value!r}"
            ) from None

    def _resolve_range(
        self, url: str, start: Any, end: Any, size: int | None
    ) -> tuple[int, int | None]:
        start = self._check_offset(start, "start") or 0
        end = self._check_offset(end, "end")
        if size is None and (start < 0 or end is None or end < 0):
            info = self._meta("info", url)
            if info["type"] == "directory":
                # No read is sent (a directory has no size to resolve the
                # range against), and the info may come from the UFS
                # fallback: no worker says it here, so say it ourselves.
                raise IsADirectoryError(errno.EISDIR, "is a directory", self._name(url))
            size = info["size"]
        if start < 0:
            start = max(0, size + start)  # type: ignore[operator]
        if end is None:
            end = size
        elif end < 0:
            end = max(0, size + end)  # type: ignore[operator]
        if size is not None:
            start, end = min(start, size), min(end, size)  # type: ignore[type-var]
        if end < start:  # type: ignore[operator]
            raise ValueError(f"bad range for {url}: end {end} is before start {start}")
        return start, end

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        url, _ = self._resolve(path)
        if start is None and end is None:
            hit = _prefetch.take(self, url) if self.__dict__.get("_prefetch_state") else None
            if hit is not None:
                return hit[0]
            return self._read_whole([url])[0]  # type: ignore[return-value]
        s, e = self._resolve_range(url, start, end, None)
        if e == s:
            return b""
        return self._client().read(url, s, e, None, self._fallback())

    def _falls_back(self, r: object) -> bool:
        """Whether a read that ended in ``r`` is tried at the UFS: a worker fault
        with ``fallback`` on, unless the workers said the UFS is unreachable."""
        return (
            isinstance(r, ConnectionError)
            and not isinstance(r, _alluxiofs.UfsUnreachableError)
            and self.options.fallback
        )

    def _read_whole(self, urls: list[str], on_error: str = "raise") -> list[bytes | Exception]:
        """Whole files in one native call (one batch request per owner worker).

        A file no worker could serve is read from the UFS (when ``fallback``
        is on); other errors are raised (``on_error="raise"``) or returned.
        """
        out = self._client().read_files(urls, self._fallback())
        for i, r in enumerate(out):
            if self._falls_back(r):
                data = self.target_fs.cat_file(self._target_path(urls[i]))
                self.counters.add("ufs_fallback_reads")
                self.counters.add("ufs_fallback_bytes", len(data))
                self._log_new_fallbacks()
                out[i] = data
            if isinstance(out[i], BaseException) and on_error == "raise":
                raise out[i]  # type: ignore[misc]
        return out

    def _read_heads(self, urls: list[str], limits: list[int]) -> list[bytes | Exception]:
        """The first ``limits[i]`` bytes of each file (all of a smaller one), one
        request each up to ``max_chunk``: the prefetch's read of files of unknown size.

        The worker cuts each answer at the end of its file, so a result shorter
        than its limit is the whole file. Errors are returned, and a file no
        worker could serve is read from the UFS, as :meth:`_read_whole` does.
        """
        out = self._client().read_ranges(urls, [0] * len(urls), limits, self._fallback())
        for i, r in enumerate(out):
            if self._falls_back(r):
                data = self.target_fs.cat_file(self._target_path(urls[i]), start=0, end=limits[i])
                self.counters.add("ufs_fallback_reads")
                self.counters.add("ufs_fallback_bytes", len(data))
                self._log_new_fallbacks()
                out[i] = data
        return out

    def cat_ranges(
        self,
        paths: list[str],
        starts: int | list[int | None] | None,
        ends: int | list[int | None] | None,
        max_gap: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[bytes | Exception]:
        if not isinstance(paths, list):
            raise TypeError("cat_ranges: paths must be a list")
        n = len(paths)
        starts = starts if isinstance(starts, list) else [starts] * n
        ends = ends if isinstance(ends, list) else [ends] * n
        if len(starts) != n or len(ends) != n:
            raise ValueError("cat_ranges: paths, starts and ends must have the same length")
        urls = [self._resolve(p)[0] for p in paths]
        need_size = sorted(
            {
                u
                for u, s, e in zip(urls, starts, ends, strict=True)
                if e is None or (s is not None and s < 0) or e < 0
            }
        )
        sizes = dict(zip(need_size, self._sizes(need_size), strict=True))
        rs, re_ = [], []
        for u, s, e in zip(urls, starts, ends, strict=True):
            a, b = self._resolve_range(u, s, e, sizes.get(u))
            rs.append(a)
            re_.append(b)
        out = self._client().read_ranges(urls, rs, re_, self._fallback())
        if on_error == "raise":
            for r in out:
                if isinstance(r, BaseException):
                    raise r
        return out

    def _sizes(self, urls: list[str]) -> list[int]:
        if not urls:
            return []
        if len(urls) == 1:
            return [self._meta("info", urls[0])["size"]]
        with ThreadPoolExecutor(min(16, len(urls))) as pool:
            return [d["size"] for d in pool.map(lambda u: self._meta("info", u), urls)]

    def cat(
        self, path: str | list[str], recursive: bool = False, on_error: str = "raise", **kwargs: Any
    ) -> bytes | dict[str, bytes | Exception]:
        paths = self.expand_path(path, recursive=recursive)
        single = (
            len(paths) == 1 and not isinstance(path, list)
            and paths[0] == self._strip_protocol(path)
        )  # fmt: skip
        if single:
            return self.cat_file(paths[0])
        urls = [self._resolve(p)[0] for p in paths]
        data = self._read_whole(urls, on_error="return")
        out: dict[str, bytes | Exception] = {}
        for p, d in zip(paths, data, strict=True):
            if isinstance(d, IsADirectoryError):
                continue  # expand_path lists directories too: they have no bytes
            out[p] = d
        if on_error == "raise":
            for v in out.values():
                if isinstance(v, BaseException):
                    raise v
        elif on_error == "omit":
            out = {k: v for k, v in out.items() if not isinstance(v, BaseException)}
        return out

    def head(self, path: str, size: int = 1024) -> bytes:
        return self.cat_file(path, 0, size)

    def tail(self, path: str, size: int = 1024) -> bytes:
        return self.cat_file(path, -size)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | str | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        from .file import AlluxioFile, WriteThroughFile

        url, name = self._resolve(path)
        if mode == "rb":
            hit = _prefetch.take(self, url) if self.__dict__.get("_prefetch_state") else None
            if hit is not None:
                return _prefetch.PrefetchedFile(self, name, url, *hit, block_size=block_size,
                                                **kwargs)  # fmt: skip
            return AlluxioFile(self, name, url, block_size=block_size, **kwargs)
        if "r" in mode or "+" in mode:
            raise ValueError(f"alluxiofs files open as 'rb' or for writing, not {mode!r}")
        if "x" in mode:
            self._refuse_existing(url)
            mode = mode.replace("x", "w")
        if self.options.write_mode == "populate" and mode == "wb" and autocommit:
            from . import write

            cached = write.open_file(self, url)
            if cached is not None:
                return cached
        f = self.target_fs.open(self._target_path(url), mode, block_size=block_size, **kwargs)
        return WriteThroughFile(f, lambda: self._invalidate(url))

    # ----------------------------------------------------------------- writes

    def _invalidate(self, url: str, recursive: bool = False) -> None:
        client = self._client()
        client.invalidate(url, recursive)
        parent = url.rsplit("/", 1)[0]
        if "://" in parent and not parent.endswith(":/"):
            client.invalidate(parent, False)

    def _write(self, op: str, paths: list[str], *args: Any, subtree: bool = False,
               **kwargs: Any) -> Any:  # fmt: skip
        """Run ``op`` on the target filesystem, then invalidate the paths it touched
        (with everything below them when ``subtree``), also when it failed half way."""
        urls = [self._resolve(p)[0] for p in paths]
        try:
            fn = getattr(self.target_fs, op)
            return fn(*[self._target_path(u) for u in urls], *args, **kwargs)
        finally:
            for u in urls:
                self._invalidate(u, subtree)

    def _refuse_existing(self, url: str) -> None:
        """``FileExistsError`` if the UFS has ``url`` (asked of the UFS, not the
        workers' metadata cache). Like fsspec's own ``mode="create"``, this is a
        check before the write, not an atomic conditional write."""
        if self.target_fs.exists(self._target_path(url)):
            raise FileExistsError(errno.EEXIST, "file exists", self._name(url))

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        if mode not in ("overwrite", "create"):
            raise ValueError(f"pipe_file mode must be 'overwrite' or 'create', not {mode!r}")
        if mode == "create":
            self._refuse_existing(self._resolve(path)[0])
        if self.options.write_mode == "populate" and not kwargs:
            from . import write

            if write.pipe(self, self._resolve(path)[0], value) is not None:
                return
        self._write("pipe_file", [path], value, **kwargs)

    def put_file(self, lpath: str, rpath: str, callback: Any = None, **kwargs: Any) -> None:
        url, _ = self._resolve(rpath)
        if self.options.write_mode == "populate" and not kwargs:
            from . import write

            if write.put(self, lpath, url, callback) is not None:
                return
        try:
            if callback is not None:
                kwargs["callback"] = callback
            self.target_fs.put_file(lpath, self._target_path(url), **kwargs)
        finally:
            self._invalidate(url)

    def rm_file(self, path: str) -> None:
        self._write("rm_file", [path])

    def rm(self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None
           ) -> None:  # fmt: skip
        for p in path if isinstance(path, list) else [path]:
            self._write("rm", [p], subtree=True, recursive=recursive, maxdepth=maxdepth)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        self._write("cp_file", [path1, path2], **kwargs)

    def mv(self, path1: str, path2: str, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:  # fmt: skip
        self._write("mv", [path1, path2], subtree=True, recursive=recursive, maxdepth=maxdepth,
                    **kwargs)  # fmt: skip

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self._write("mkdir", [path], create_parents=create_parents, **kwargs)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self._write("makedirs", [path], exist_ok=exist_ok)

    def rmdir(self, path: str) -> None:
        self._write("rmdir", [path], subtree=True)

    # ------------------------------------------------------------ observation

    def stats(self) -> dict[str, Any]:
        """Counters of this process's client: bytes and requests served by the
        workers (``bytes_read``, of which ``bytes_local`` were read from the page
        files of a worker on this node and ``bytes_remote`` came over HTTP), retries,
        fallbacks to the UFS per worker, UFS fallback bytes;
        write-throughs (``writes``, ``write_bytes``, ``write_pages_cached``,
        ``write_fallbacks`` per worker); and what the workers saved the UFS since
        this filesystem was made (``ufs_requests_saved``, ``bytes_saved``, details
        per worker in ``cache``; worker-side, so every client of those workers
        counts: see docs/metrics.md); and what :meth:`prefetch` did in this
        process (``prefetch``: files and bytes prefetched, hits, misses, wasted,
        held now and at most)."""
        out = dict(self._client().stats())
        out.update(self.counters.snapshot())
        from .stats import cache_window

        # What the workers saved the UFS since this filesystem was made (all
        # clients of those workers, see docs/metrics.md).
        window = cache_window(self, self._stats_since)
        out["cache"] = window
        out["ufs_requests_saved"] = window["total"]["ufs_requests_saved"]
        out["bytes_saved"] = window["total"]["bytes_saved"]
        out["prefetch"] = _prefetch.stats(self)
        return out

    def workers(self) -> list[str]:
        """``host:port`` of the workers this client routes to (kept current from etcd)."""
        return list(self._client().workers())

    def workers_for(self, path: str) -> list[str]:
        """The preferred workers of ``path``, best first (``replicas`` of them)."""
        url, _ = self._resolve(path)
        return list(self._client().workers_for(url))

    def placement(self) -> str:
        """The placement in effect: ``alluxio:<vnodes>`` or ``rendezvous``."""
        return self._client().placement()

    def worker_metrics(self) -> dict[str, dict[str, float]]:
        """Each worker's ``/metrics``, as ``{"host:port": {metric: value summed over labels}}``.

        A worker that cannot be reached maps to an empty dict.
        """
        client = self._client()
        out: dict[str, dict[str, float]] = {}
        for w in client.workers():
            try:
                text = client.get_text(w, "/metrics")
            except (ConnectionError, TimeoutError, OSError):
                out[w] = {}
                continue
            out[w] = parse_prometheus(text)
        return out

    # ---------------------------------------------------------------- prefetch

    def prefetch(
        self,
        paths: list[str],
        depth: int = _prefetch.DEFAULT_DEPTH,
        max_bytes: int | str = _prefetch.DEFAULT_MAX_BYTES,
        threads: int | None = None,
        batch: int = 1,
    ) -> _prefetch.Prefetch:
        """Fetch ``paths`` (the order they will be read in) ahead of their reads.

        In the background, at most ``depth`` files ahead of the reader and at
        most ``max_bytes`` (bytes, or ``"256MiB"``) held, the files are read
        through the workers (warming their cache) into memory.
        ``cat_file(path)`` and ``open(path)`` of the next file are then served
        from memory, once. The returned :class:`alluxiofs.prefetch.Prefetch`
        also iterates ``(path, bytes)`` in order, and ``close()`` (or a
        ``with`` block) stops it. A file's error is raised when that file is
        read, as ``cat_file`` would raise it. Counters: ``stats()["prefetch"]``.
        See docs/semantics.md (Prefetch in a known order).
        """
        from .units import parse_size

        return _prefetch.Prefetch(
            self, paths, depth=depth, max_bytes=parse_size(max_bytes), threads=threads, batch=batch
        )

    # ----------------------------------------------------------------- preload

    def load(
        self,
        path: str,
        recursive: bool = True,
        replicas: int = 1,
        concurrency: int = 4,
        bandwidth: int | str | None = None,
        progress: Any = None,
    ) -> dict[str, Any]:
        """Warm the cache with ``path`` (a file, or everything under a directory).

        The files are listed (recursively unless ``recursive=False``), grouped
        by owner worker (``replicas`` owners per file, the placement reads
        use) and each worker loads its share, ``concurrency`` requests at a
        time. ``bandwidth`` (bytes/s, or ``"200MB/s"``) limits the whole load.
        Pages already cached are skipped, so loading again is nearly free and
        an interrupted load resumes. ``progress(dict)`` (or ``True`` for a bar
        on stderr) is called at most 10 times a second with ``files_done``,
        ``files_total``, ``bytes_done``, ``bytes_total``, ``bytes_loaded``,
        ``bytes_skipped``, ``files_failed`` and ``listed``.

        Returns ``{"files_total", "files_loaded", "files_skipped",
        "files_failed", "bytes_total", "bytes_loaded", "bytes_skipped",
        "failures": [{"path", "reason"}], "cancelled", "seconds"}``. Raises
        ``FileNotFoundError`` when nothing is at ``path``.
        """
        from . import load as _load

        url, _ = self._resolve(path)
        return _load.run(
            self._client(),
            url,
            recursive=recursive,
            replicas=max(1, int(replicas)),
            concurrency=max(1, int(concurrency)),
            bandwidth=_load.parse_bandwidth(bandwidth),
            progress=progress,
        )

    # ------------------------------------------------------ keeping / letting go

    def pin(self, path: str) -> dict[str, Any]:
        """Pin ``path`` (a file or a prefix) on every worker.

        Its cached pages, and those cached later, are never evicted. Pinned
        bytes per worker are bounded by the worker's pin quota: a pin that
        would exceed it raises :class:`alluxiofs.AlluxioError` (``ENOSPC``)
        with the quota and the bytes pinned; pages of a pinned path read
        beyond the quota are served but not cached. A pin holds on every
        worker or on none: when one refuses it or cannot be reached, it is
        undone on the others (except where the path was pinned before), and
        the error says so (``ConnectionError`` for an unreachable worker).
        Returns ``{"op", "path", "pages", "bytes", "failed", "undone",
        "undo_failed", "workers": [{"worker", "result", "status", "error"}]}``
        (pages and bytes newly pinned, all workers).
        """
        from . import manage

        url, _ = self._resolve(path)
        return manage.run(self._client(), "pin", url)

    def unpin(self, path: str) -> dict[str, Any]:
        """Remove the pins at or under ``path`` on every worker (see :meth:`pin`)."""
        from . import manage

        url, _ = self._resolve(path)
        return manage.run(self._client(), "unpin", url)

    def set_ttl(self, path: str, seconds: float | str | None) -> dict[str, Any]:
        """Cached pages of ``path`` expire ``seconds`` (or ``"1h"``) after being cached.

        An expired page is a miss, removed when read and by a sweep each
        second. ``0`` or ``None`` clears the TTL. The most specific prefix
        with a TTL wins.
        """
        from . import manage

        url, _ = self._resolve(path)
        secs = manage.parse_duration(seconds or 0)
        return manage.run(self._client(), "ttl", url, seconds=secs)

    def free(self, path: str, recursive: bool = True, force: bool = False) -> dict[str, Any]:
        """Evict the cached pages of ``path`` (everything under it with ``recursive``) now.

        Pinned pages raise :class:`alluxiofs.AlluxioError` (``EBUSY``) unless
        ``force``. The UFS and the metadata cache are untouched; the next
        read of a freed page reads through. Returns the summary as
        :meth:`pin` does (pages and bytes freed).
        """
        from . import manage

        url, _ = self._resolve(path)
        return manage.run(self._client(), "free", url, recursive=recursive, force=force)


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum a Prometheus text exposition over labels: ``{metric_name: value}``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out
