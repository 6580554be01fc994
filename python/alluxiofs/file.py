"""File objects of :class:`~alluxiofs.core.AlluxioFileSystem`.

``AlluxioFile`` (mode ``"rb"``) reads through the native reader, which keeps a
readahead window in Rust for sequential readers and fetches large reads in
parallel; fsspec's own block cache is off (``cache_type="none"``) so bytes are
not cached twice. ``readinto`` writes straight into the caller's buffer. The
object version (ETag) seen at open is pinned: if the object changes while the
file is open, reads raise :class:`alluxiofs.ObjectChangedError` instead of
mixing old and new bytes.
"""

from __future__ import annotations

import errno
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile

# Bytes fetched at a time by readline/readuntil (and so by line iteration).
LINE_BLOCK = 256 * 1024

if TYPE_CHECKING:
    from .core import AlluxioFileSystem


class AlluxioFile(AbstractBufferedFile):
    """A read-only file served by the cache workers."""

    def __init__(
        self,
        fs: AlluxioFileSystem,
        name: str,
        url: str,
        block_size: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        info = fs.info(name)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "is a directory", name)
        kwargs.pop("cache_type", None)
        kwargs.pop("size", None)
        super().__init__(
            fs,
            name,
            mode="rb",
            block_size=block_size if block_size not in (None, "default") else "default",
            cache_type="none",
            size=info["size"],
            **kwargs,
        )
        self._details = info
        self.url = url
        self._reader = fs._client().open_reader(
            url, info["size"], info.get("etag"), fs.options.parquet_prefetch_depth
        )
        # The last block fetched by readuntil: lines are cut out of it without
        # asking the native reader again for every line.
        self._lb = b""
        self._lb_start = 0

    def _fetch_range(self, start: int, end: int) -> bytes:
        # fsspec's read(n) does not clip n to the file: PyArrow's buffered
        # streams (Ray Data: 32 MiB) ask for far more than a small file has,
        # and the native read would build (and zero) a bytes object that big.
        end = min(end, self.size)
        if end <= start:
            return b""
        return self._reader.read_at(start, end - start, self.fs._fallback())

    def readuntil(self, char: bytes = b"\n", blocks: int | None = None) -> bytes:
        """Read up to and including the next ``char`` (or to the end of file).

        Lines are cut from a block of ``LINE_BLOCK`` bytes kept between calls,
        so iterating over a file's lines costs one native read per block, not
        one per line.
        """
        if self.closed:
            raise ValueError("I/O operation on closed file")
        parts = []
        while self.loc < self.size:
            off = self.loc - self._lb_start
            if not 0 <= off < len(self._lb):
                end = min(self.size, self.loc + max(LINE_BLOCK, blocks or 0))
                self._lb = self._fetch_range(self.loc, end)
                self._lb_start, off = self.loc, 0
                if not self._lb:
                    break
            i = self._lb.find(char, off)
            if i >= 0:
                parts.append(self._lb[off : i + len(char)])
                self.loc = self._lb_start + i + len(char)
                break
            parts.append(self._lb[off:])
            self.loc = self._lb_start + len(self._lb)
        return b"".join(parts)

    def readline(self) -> bytes:  # type: ignore[override]
        """Read one line (up to and including ``b"\\n"``)."""
        return self.readuntil(b"\n")

    def readinto(self, b: Any) -> int:
        """Read into a writable buffer without an intermediate ``bytes``."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(b).cast("B")
        n = min(view.nbytes, self.size - self.loc)
        if n <= 0:
            return 0
        got = self._reader.readinto_at(self.loc, view[:n], self.fs._fallback())
        self.loc += got
        return got

    def readinto1(self, b: Any) -> int:
        """Same as :meth:`readinto` (one call is one native read)."""
        return self.readinto(b)


class WriteThroughFile(io.RawIOBase):
    """A file being written to the UFS; the cache forgets the path on close."""

    def __init__(self, f: Any, on_close: Callable[[], None]) -> None:
        super().__init__()
        self._f = f
        self._on_close = on_close

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        n = self._f.write(data)
        return len(data) if n is None else n

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        if not self.closed and not self._f.closed:
            self._f.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()  # flushes while the target file is still open
        finally:
            try:
                self._f.close()
            finally:
                self._on_close()

    def commit(self) -> None:
        """Forward fsspec's transaction commit to the target file."""
        self._f.commit()

    def discard(self) -> None:
        """Forward fsspec's transaction discard to the target file."""
        self._f.discard()
