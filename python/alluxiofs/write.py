"""Writes that fill the cache (``write_mode="populate"``, the default).

``open(path, "wb")``, ``pipe_file`` and ``put_file`` stream the bytes to the
path's owner worker (``PUT /v1/write``), which uploads them to the UFS (one PUT,
or a multipart upload for large files) and stores the written pages in its
cache under the new object version, so a checkpoint written by one process is
read back by another from the cache. The other workers are told to forget the
path. Memory stays bounded: the file object keeps at most ``BUFFER`` bytes and
the native writer a few chunks in flight.

When no worker can take the write (the owner and its replicas are down), the
write goes to the target filesystem and the workers are told to invalidate the
path, as with ``write_mode="invalidate"``; it is counted in
``fs.stats()["write_fallbacks"]`` per worker and logged once. A failure in the
middle of a streamed write raises (the worker aborts the upload: nothing is
written and no pages stay); it is not retried, as the bytes are not kept.
"""

from __future__ import annotations

import io
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import AlluxioFileSystem

logger = logging.getLogger("alluxiofs")

# Bytes gathered by a file object before they are handed to the native writer.
BUFFER = 4 << 20
# Bytes read from a local file at a time by put_file.
CHUNK = 8 << 20


def begin(fs: AlluxioFileSystem, url: str) -> Any | None:
    """A native writer for ``url`` on its owner worker, or ``None`` (counted and
    logged) when no worker can take it and the caller must write to the UFS."""
    client = fs._client()
    try:
        return client.open_writer(url)
    except ConnectionError as e:
        prefs = client.workers_for(url)
        worker = prefs[0] if prefs else "none"
        fs.counters.add("write_fallbacks", 1, worker)
        if worker not in fs._logged_workers:
            fs._logged_workers.add(worker)
            logger.warning(
                "alluxiofs: worker %s cannot take writes (%s); writing to the UFS instead "
                "(counted in fs.stats()['write_fallbacks'])",
                worker,
                e,
            )
        return None


def finished(fs: AlluxioFileSystem, result: dict[str, Any]) -> dict[str, Any]:
    """Count a completed write-through (``result`` is the worker's answer)."""
    fs.counters.add("writes")
    fs.counters.add("write_bytes", int(result["size"]))
    fs.counters.add("write_pages_cached", int(result["pages_cached"]))
    return result


class CachedWriteFile(io.RawIOBase):
    """A file streamed through the owner worker, which uploads it and caches its pages."""

    def __init__(self, fs: AlluxioFileSystem, url: str, writer: Any) -> None:
        super().__init__()
        self.fs = fs
        self.url = url
        self._writer = writer
        self._buf = bytearray()
        self._pos = 0
        self.result: dict[str, Any] | None = None
        """The worker's answer once closed (``populated``, ``pages_cached``, ``version``...)."""

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def _send(self, data: Any) -> None:
        try:
            self._writer.write(data)
        except BaseException:
            self._writer.abort()
            raise

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(data).cast("B")
        n = view.nbytes
        if not self._buf and n >= BUFFER:
            self._send(view)
        else:
            self._buf += view
            if len(self._buf) >= BUFFER:
                self._send(self._buf)
                self._buf = bytearray()
        self._pos += n
        return n

    def flush(self) -> None:
        """Nothing to do: bytes reach the UFS when the file is closed."""

    def close(self) -> None:
        """Send what is left, complete the upload and wait for the worker's answer."""
        if self.closed:
            return
        try:
            if self._buf:
                self._send(self._buf)
                self._buf = bytearray()
            self.result = finished(self.fs, self._writer.close())
        finally:
            super().close()

    def discard(self) -> None:
        """Abandon the write: nothing reaches the UFS."""
        self._writer.abort()
        super().close()


def open_file(fs: AlluxioFileSystem, url: str) -> CachedWriteFile | None:
    """``open(url, "wb")`` through the owner worker, or ``None`` to fall back."""
    writer = begin(fs, url)
    return None if writer is None else CachedWriteFile(fs, url, writer)


def pipe(fs: AlluxioFileSystem, url: str, value: bytes) -> dict[str, Any] | None:
    """Write ``value`` to ``url`` through the owner worker; ``None`` to fall back."""
    writer = begin(fs, url)
    if writer is None:
        return None
    try:
        view = memoryview(value).cast("B")
        for start in range(0, view.nbytes, CHUNK):
            writer.write(view[start : start + CHUNK])
    except BaseException:
        writer.abort()
        raise
    return finished(fs, writer.close())


def put(fs: AlluxioFileSystem, lpath: str, url: str, callback: Any = None) -> dict[str, Any] | None:
    """Upload the local file ``lpath`` to ``url`` through the owner worker; ``None``
    to fall back (also for a directory, which the target filesystem creates)."""
    if os.path.isdir(lpath):
        return None
    writer = begin(fs, url)
    if writer is None:
        return None
    try:
        with open(lpath, "rb") as f:
            if callback is not None:
                callback.set_size(os.fstat(f.fileno()).st_size)
            buf = bytearray(CHUNK)
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                writer.write(memoryview(buf)[:n])
                if callback is not None:
                    callback.relative_update(n)
    except BaseException:
        writer.abort()
        raise
    return finished(fs, writer.close())
