"""Type stubs of the native module ``alluxiofs._alluxiofs`` (Rust, PyO3)."""

from collections.abc import Callable, Mapping
from typing import Any

from typing_extensions import Buffer

__version__: str
DEFAULT_WORKER_PORT: int
"""Alluxio's worker HTTP port (28080), the port of a worker named without one."""

class AlluxioError(OSError):
    """An alluxiofs failure that no builtin exception describes."""

class ObjectChangedError(AlluxioError):
    """The object changed in the UFS while a file was open."""

class UfsUnreachableError(ConnectionError):
    """The workers cannot reach the UFS and hold nothing that could serve the request."""

class WorkerTimeoutError(TimeoutError, ConnectionError):
    """A cache worker did not answer within connect_timeout or request_timeout."""

Fallback = Callable[[str, int, int], bytes]

class NativeClient:
    """Hash ring plus pooled HTTP client to the cache workers (one per process)."""

    def __init__(
        self,
        workers: list[tuple[str, int]],
        options: Mapping[str, object] | None = None,
    ) -> None:
        """A client of ``workers``; ``options``: names and defaults in :func:`client_defaults`."""
    @staticmethod
    def from_etcd(
        endpoints: list[str],
        cluster: str = "DefaultAlluxioCluster",
        username: str | None = None,
        password: str | None = None,
        options: Mapping[str, object] | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> NativeClient:
        """Follow the workers of ``cluster`` in etcd; ``tls_*``: PEM files for etcd over TLS."""
    def placement(self) -> str: ...
    def is_watching(self) -> bool: ...
    def workers(self) -> list[str]: ...
    def workers_for(self, url: str) -> list[str]: ...
    def info(self, url: str) -> dict[str, Any]: ...
    def list(self, url: str) -> list[dict[str, Any]]: ...
    def invalidate(self, url: str, recursive: bool = False) -> None: ...
    def read(
        self,
        url: str,
        start: int,
        end: int,
        version: str | None = None,
        fallback: Fallback | None = None,
    ) -> bytes: ...
    def read_into(
        self,
        url: str,
        offset: int,
        buf: Buffer,
        version: str | None = None,
        fallback: Fallback | None = None,
    ) -> int: ...
    def read_ranges(
        self,
        urls: list[str],
        starts: list[int],
        ends: list[int],
        fallback: Fallback | None = None,
    ) -> list[bytes | Exception]: ...
    def read_files(
        self, urls: list[str], fallback: Fallback | None = None, batch: bool = True
    ) -> list[bytes | Exception]: ...
    def open_reader(
        self, url: str, size: int, version: str | None = None, parquet_prefetch_depth: int = 0
    ) -> NativeReader: ...
    def get_text(self, worker: str, path: str) -> str: ...
    def stats(self) -> dict[str, Any]: ...
    def open_writer(self, url: str) -> NativeWriter: ...
    def manage(
        self,
        op: str,
        url: str,
        seconds: int = 0,
        recursive: bool = True,
        force: bool = False,
    ) -> str:
        """Pin, unpin, ttl or free ``url`` on every worker; the summary as JSON text."""
    def load(
        self,
        url: str,
        recursive: bool = True,
        replicas: int = 1,
        concurrency: int = 4,
        bandwidth: int | None = None,
        progress: Callable[[dict[str, Any]], Any] | None = None,
    ) -> dict[str, Any]: ...

class NativeWriter:
    """A write-through upload to a file's owner worker (``write_mode="populate"``)."""

    @property
    def worker(self) -> str: ...
    def write(self, data: Buffer) -> int: ...
    def close(self) -> dict[str, Any]: ...
    def abort(self) -> None: ...

class NativeReader:
    """Sequential reader with readahead, for file objects."""

    @property
    def size(self) -> int: ...
    def read_at(self, offset: int, length: int, fallback: Fallback | None = None) -> bytes: ...
    def readinto_at(self, offset: int, buf: Buffer, fallback: Fallback | None = None) -> int: ...

class HashRing:
    """The Alluxio-compatible consistent hash ring."""

    def __init__(
        self,
        hostnames: list[str] | None = None,
        identities: list[str] | None = None,
        vnodes: int = 5,
    ) -> None: ...
    def points(self) -> list[tuple[int, str]]: ...
    def get_multiple(self, key: str, n: int) -> list[str]: ...

def client_defaults() -> dict[str, object]:
    """Every ``NativeClient`` option and its default (``placement``: ``None``, unset)."""

def worker_identity(hostname: str) -> str: ...
def normalize_url(url: str) -> str: ...
def path_id(url: str) -> str: ...
def run_worker(argv: list[str]) -> None: ...

class NativeMount:
    """A live FUSE mount (``alluxiofs mount``); ``unmount()`` ends it."""

    @property
    def mountpoint(self) -> str: ...
    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the mount to end; whether it has."""
    def unmount(self, wait: float = 2.0) -> bool:
        """Detach the mount; whether every open file was closed within ``wait`` seconds."""
    def counters(self) -> dict[str, int]:
        """Lookups, opens, reads, bytes, UFS bytes, writes, changes, ... since the mount
        started."""

def mount(
    client: NativeClient,
    mountpoint: str,
    urls: list[str],
    fallback: bool = True,
    ufs_options: dict[str, str] | None = None,
    attr_timeout: float = 60.0,
    entry_timeout: float = 60.0,
    kernel_cache: bool = True,
    threads: int = 16,
    allow_other: bool = False,
    write: bool = False,
    readahead_kib: int = 4096,
) -> NativeMount:
    """Mount ``urls`` (``URL`` or ``NAME=URL``) at ``mountpoint`` through ``client``;
    with ``write``, new files are written whole through the workers and unlink, mkdir,
    rmdir and rename change the UFS."""

class NativeCsi:
    """The running CSI node plugin (``alluxiofs csi``); ``stop()`` ends it."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the server to end; whether it has (a
        server that failed raises ``OSError``)."""
    def stop(self) -> None:
        """Stop serving; the mounts it made stay."""

def csi_serve(
    endpoint: str,
    node_id: str,
    driver_name: str,
    state_dir: str,
    launcher: list[str],
    etcd_hosts: str | None = None,
    worker_hosts: str | None = None,
    mount_timeout_s: int = 120,
) -> NativeCsi:
    """Serve the CSI Identity and Node services on ``endpoint`` (``unix:///path``);
    ``launcher`` runs ``alluxiofs`` for the mounts, ``etcd_hosts``/``worker_hosts`` is
    the cluster of volumes that name none."""

def unmount(path: str) -> bool:
    """Detach the FUSE mount at ``path`` (also a dead one); whether one was there."""

def mount_state(path: str) -> str:
    """``"none"``, ``"mounted"`` or ``"stale"`` (its daemon died)."""

def init_logging(level: str) -> None:
    """Log to stderr at ``level``, as a worker does."""
