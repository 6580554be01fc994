"""Known-order prefetch: ``fs.prefetch(paths, depth=N, max_bytes=...)``.

A training loop knows its next files (the sampler's order). A
:class:`Prefetch` fetches them, in that order, in the background: through the
workers (so a cold file is read from the UFS into the worker cache) into
memory of this process, so that reading a cold epoch costs the link's
bandwidth, not one UFS round trip after another.

Design notes
------------
* **Window.** Each path of the order is an entry. At most ``depth`` entries
  are *active* (waiting for budget, being read, or read and waiting for the
  consumer), and the bytes held or reserved for reads in flight never exceed
  ``max_bytes``. No size is asked first (an ``info`` of a cold file costs the
  worker a UFS HEAD before the GET): a file's first read asks for its first
  ``L`` bytes and reserves ``L``, a little more than the largest recent file
  (:meth:`Prefetch._probe_limit`, at most ``max_chunk``: one request). The
  worker cuts the answer at the end of the file, so a file shorter than ``L``
  arrives whole (one worker request, one UFS GET when cold) and its
  reservation settles to its size; a read never brings more than it
  reserved, so the bound holds exactly. A file at least ``L`` long gives its
  bytes back, is sized (``info``: the worker has its metadata from the read)
  and read whole when its size fits, before any later file's first read.
  Reservations are made strictly in order, so the bytes held always belong
  to files the consumer reads before the one waiting for budget; a file
  bigger than ``max_bytes`` is not held (the consumer reads it as usual).
  What ``open()`` needs of a prefetched file (name, size, type) comes from
  the bytes and the path.
* **Consumption.** ``fs.cat_file(path)`` (whole file) and ``fs.open(path)``
  take the first unconsumed entry of ``path``: a read entry is returned from
  memory and released; one being read or sized is waited for (one waiting
  whose read fits the budget is sent at once, ahead of its turn); one the window has not
  reached, or that the budget holds back, is a *miss* (the caller reads it as
  usual, and the entry leaves the order). Ranged reads are never served
  from here (they leave the entry for the whole-file read that follows).
* **Out of order.** Taking entry ``j`` drops every entry before ``j - depth
  + 1`` that is still waiting (counted ``wasted`` if it was read): files
  consumed out of order within ``depth`` are still hits, files skipped or
  never consumed cannot wedge the window.
* **Errors** are not raised in the background. A read that fails (a missing
  path, a directory) keeps its exception, raised when that file is consumed;
  it is what ``cat_file`` of that file raises, because the first read goes
  the same way through the workers (``_read_heads``: the native
  ``read_ranges`` with the UFS fallback of ``_read_whole``). A big file whose
  size cannot be asked is left to the consumer's own read.
* **Threads.** A pool of ``threads`` (default ``depth``) threads runs the
  reads (and the rare ``info``); the native client releases the GIL, so
  ``depth`` requests are in flight with the Python threads asleep in the
  binding. ``batch > 1`` hands up to ``batch`` consecutive first reads to one
  native ``read_ranges`` call instead (fewer Python threads, the binding's own
  concurrency); ``benches/prefetch.py`` measures both.
* **Processes.** A prefetch belongs to the process that started it: a forked
  child (a ``DataLoader`` worker) sees none of its parent's prefetches (their
  threads and locks did not survive the fork; nothing of them is touched) and
  starts its own. :func:`worker_share` gives a loader worker its share of the
  sampler's order. A prefetch does not pickle.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractBufferedFile

if TYPE_CHECKING:
    from .core import AlluxioFileSystem

DEFAULT_DEPTH = 8
DEFAULT_MAX_BYTES = 256 << 20

# The first read of a file is for at most this many bytes before any size was seen.
FIRST_GUESS = 256 << 10
# The smallest first read (unless max_bytes / depth is smaller).
_MIN_PROBE = 64 << 10
# First reads are sized from the largest of this many recent files.
_RECENT = 32

# Entry states. Active (in the window): WAIT, PROBING, SIZING, SIZED, READING, DONE.
_NEW, _WAIT, _PROBING, _SIZING, _SIZED, _READING, _DONE, _PASS, _TAKEN, _GONE = range(10)
_ACTIVE = (_WAIT, _PROBING, _SIZING, _SIZED, _READING, _DONE)
_IN_FLIGHT = (_PROBING, _SIZING, _READING)

_COUNTERS = (
    "files_prefetched",  # read into memory (or failed and kept its error)
    "bytes_prefetched",
    "hits",  # consumed from memory
    "hit_bytes",
    "misses",  # consumed before its read started: read as usual
    "errors",  # reads that failed; raised when consumed
    "skipped",  # not held: bigger than max_bytes, or its info failed
    "sized_files",  # bigger than their first read: sized (info) and read again
    "wasted_files",  # read, never consumed (skipped over, or closed)
    "wasted_bytes",
)


class _Entry:
    __slots__ = ("data", "error", "held", "index", "info", "path", "size", "state", "url",
                 "zombie")  # fmt: skip

    def __init__(self, index: int, path: str, url: str) -> None:
        self.index = index
        self.path = path
        self.url = url
        self.state = _NEW
        self.size = 0  # the file's size, once known
        self.held = 0  # bytes of the budget this entry holds (reserved or read)
        self.info: dict[str, Any] | None = None
        self.data: bytes | None = None
        self.error: BaseException | None = None
        # Dropped while its read was in flight: its bytes count until the read returns.
        self.zombie = False


class _FsState:
    """The prefetches of one filesystem instance in one process, and their totals."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.live: list[Prefetch] = []
        self.totals = dict.fromkeys(_COUNTERS, 0)
        self.max_held_files = 0
        self.max_held_bytes = 0


def _state(fs: AlluxioFileSystem, create: bool) -> _FsState | None:
    """``fs``'s prefetch state in this process. One inherited over a fork is
    dropped unread: its locks may have been held by threads that are gone."""
    st = fs.__dict__.get("_prefetch_state")
    if st is not None and st.pid != os.getpid():
        st = None
        fs.__dict__["_prefetch_state"] = None
    if st is None and create:
        st = _FsState()
        fs.__dict__["_prefetch_state"] = st
    return st


def take(fs: AlluxioFileSystem, url: str) -> tuple[bytes, dict[str, Any]] | None:
    """The prefetched bytes and info of ``url`` (consumed), or ``None``: read it as usual.

    Raises the error the prefetch's read of ``url`` got.
    """
    st = _state(fs, create=False)
    if st is None or not st.live:
        return None
    for p in list(st.live):
        got = p._take_url(url)
        if got is not None:
            return got
    return None


def stats(fs: AlluxioFileSystem) -> dict[str, Any]:
    """The prefetch counters of ``fs`` in this process (``fs.stats()["prefetch"]``)."""
    st = _state(fs, create=False)
    out: dict[str, Any] = dict.fromkeys(_COUNTERS, 0)
    out.update(active=0, window_files=0, held_files=0, held_bytes=0,
               max_held_files=0, max_held_bytes=0)  # fmt: skip
    if st is None:
        return out
    with st.lock:
        live = list(st.live)
        out.update(st.totals)
        out["max_held_files"] = st.max_held_files
        out["max_held_bytes"] = st.max_held_bytes
    for p in live:
        s = p.stats()
        for k in _COUNTERS:
            out[k] += s[k]
        for k in ("window_files", "held_files", "held_bytes"):
            out[k] += s[k]
        out["max_held_files"] = max(out["max_held_files"], s["max_held_files"])
        out["max_held_bytes"] = max(out["max_held_bytes"], s["max_held_bytes"])
        out["active"] += 0 if s["finished"] else 1
    return out


class Prefetch:
    """Files of a known order fetched ahead of their reads (see the module notes).

    Made by :meth:`AlluxioFileSystem.prefetch`. Iterating yields ``(path,
    bytes)`` in order (a failed file raises its error from ``next()`` and the
    iteration goes on with the next file); :meth:`close` (or leaving a
    ``with`` block) stops fetching and frees what is held.
    """

    def __init__(
        self,
        fs: AlluxioFileSystem,
        paths: Iterable[str],
        depth: int = DEFAULT_DEPTH,
        max_bytes: int = DEFAULT_MAX_BYTES,
        threads: int | None = None,
        batch: int = 1,
    ) -> None:
        if isinstance(paths, (str, bytes)):
            raise TypeError("prefetch: paths must be a list of paths, not one path")
        depth, max_bytes, batch = int(depth), int(max_bytes), int(batch)
        if depth < 1:
            raise ValueError(f"prefetch: depth must be >= 1, got {depth}")
        if max_bytes < 1:
            raise ValueError(f"prefetch: max_bytes must be >= 1, got {max_bytes}")
        if batch < 1:
            raise ValueError(f"prefetch: batch must be >= 1, got {batch}")
        self._fs = fs
        self._pid = os.getpid()
        self.depth = depth
        self.max_bytes = max_bytes
        self.batch = batch
        self._entries = [_Entry(i, p, fs._resolve(p)[0]) for i, p in enumerate(paths)]
        self._by_url: dict[str, list[int]] = {}
        for e in self._entries:
            self._by_url.setdefault(e.url, []).append(e.index)
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._finished = False
        self._next = 0  # first entry not yet admitted into the window
        self._rnext = 0  # first entry not yet reserved (reservations go in order)
        self._floor = 0  # entries before it are dropped (the consumer is past them)
        self._iter_pos = 0
        self._active = 0
        self._held_files = 0
        self._held_bytes = 0
        self._max_held_files = 0
        self._max_held_bytes = 0
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._recent: deque[int] = deque(maxlen=_RECENT)  # sizes of the last files read
        self._sized: list[_Entry] = []  # entries SIZED, waiting for budget, in order
        self._max_chunk = max(1, int(fs.options.max_chunk))
        nthreads = max(1, int(threads) if threads is not None else depth)
        self._pool = ThreadPoolExecutor(nthreads, thread_name_prefix="alluxiofs-prefetch")
        st = _state(fs, create=True)
        assert st is not None
        with st.lock:
            st.live.append(self)
        with self._cond:
            self._pump()

    # ---------------------------------------------------------------- public

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return self

    def __next__(self) -> tuple[str, bytes]:
        self._check_process()
        with self._cond:
            i = self._iter_pos
            if i >= len(self._entries):
                raise StopIteration
            self._iter_pos = i + 1
            e = self._entries[i]
            got = self._take_entry(e)
        if got is None:
            return e.path, self._fs.cat_file(e.path)
        return e.path, self._unwrap(got)[0]

    def __len__(self) -> int:
        return len(self._entries)

    def __reduce__(self) -> Any:
        raise TypeError("a Prefetch does not pickle: start one in each process (fs.prefetch)")

    def close(self, wait: bool = False) -> None:
        """Stop fetching, drop what is held (counted ``wasted``), wake waiting readers.

        Reads already sent finish in the background and are dropped;
        ``wait=True`` waits for them.
        """
        if os.getpid() != self._pid:
            return  # the parent's: nothing of it is ours to touch
        with self._cond:
            if not self._closed:
                self._closed = True
                for e in self._entries[self._floor :]:
                    self._drop(e)
                self._cond.notify_all()
                self._finish()
        if wait:
            self._pool.shutdown(wait=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, Any]:
        """This prefetch's counters, what it holds now and the most it held."""
        self._check_process()
        with self._cond:
            out: dict[str, Any] = dict(self._counts)
            out.update(
                files=len(self._entries),
                window_files=self._active,
                held_files=self._held_files,
                held_bytes=self._held_bytes,
                max_held_files=self._max_held_files,
                max_held_bytes=self._max_held_bytes,
                depth=self.depth,
                max_bytes=self.max_bytes,
                finished=self._finished,
            )
        return out

    # --------------------------------------------------------------- consumer

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError(
                "this prefetch belongs to the process that started it; "
                "call fs.prefetch() again in this process"
            )

    def _take_url(self, url: str) -> tuple[bytes, dict[str, Any]] | None:
        if os.getpid() != self._pid:
            return None
        idxs = self._by_url.get(url)
        if not idxs:
            return None
        with self._cond:
            for i in idxs:
                e = self._entries[i]
                if e.state not in (_TAKEN, _GONE):
                    got = self._take_entry(e)
                    break
            else:
                return None
        return None if got is None else self._unwrap(got)

    @staticmethod
    def _unwrap(got: _Entry) -> tuple[bytes, dict[str, Any]]:
        if got.error is not None:
            err, got.error = got.error, None
            raise err
        data, got.data = got.data, None
        assert data is not None and got.info is not None
        return data, got.info

    def _take_entry(self, e: _Entry) -> _Entry | None:
        """Consume ``e`` (lock held): the entry if served from memory, else ``None``."""
        if self._closed or e.state in (_TAKEN, _GONE):
            return None
        self._passed(e.index)
        self._pump()  # what the consumer passed made room: ``e`` may be admitted now
        while not self._closed:
            # Wanted now: it goes before the files ahead of it, if the budget has room.
            if e.state == _WAIT:
                limit = self._probe_limit()
                if self._held_bytes + limit <= self.max_bytes:
                    self._send(e, limit, first=True)
            elif e.state == _SIZED and self._held_bytes + e.size <= self.max_bytes:
                self._send(e, e.size, first=False)
            if e.state not in _IN_FLIGHT:
                break
            self._cond.wait()
        if e.state == _DONE:
            self._leave(e, _TAKEN)
            self._release(e)
            if e.error is None:
                self._counts["hits"] += 1
                self._counts["hit_bytes"] += e.size
            served: _Entry | None = e
        elif e.state in (_PROBING, _READING):
            served = None  # closed while it was read: the read's return drops it
        else:
            if e.state in (_NEW, _WAIT, _SIZING, _SIZED):
                self._counts["misses"] += 1
            self._leave(e, _TAKEN)
            served = None
        self._pump()
        return served

    def _passed(self, j: int) -> None:
        """The consumer is at entry ``j``: drop the entries ``depth`` or more before it."""
        floor = j - self.depth + 1
        while self._floor < floor:
            self._drop(self._entries[self._floor])
            self._floor += 1
        self._next = max(self._next, self._floor)
        self._rnext = max(self._rnext, self._floor)

    # -------------------------------------------------------------- the window

    def _leave(self, e: _Entry, state: int) -> None:
        if e.state in _ACTIVE:
            self._active -= 1
        e.state = state

    def _drop(self, e: _Entry) -> None:
        """Forget ``e`` (lock held); its bytes are wasted if it was read."""
        if e.state == _DONE:
            if e.error is None:
                self._counts["wasted_files"] += 1
                self._counts["wasted_bytes"] += e.size
            self._release(e)
            e.data = e.error = None
            self._leave(e, _GONE)
        elif e.state in (_PROBING, _READING):
            e.zombie = True  # still counted (window, bytes) until its read returns
        elif e.state not in (_TAKEN, _GONE):
            self._leave(e, _GONE)

    def _hold(self, e: _Entry, n: int) -> None:
        """``e`` holds ``n`` bytes of the budget from now on (lock held)."""
        self._held_bytes += n - e.held
        e.held = n
        self._max_held_bytes = max(self._max_held_bytes, self._held_bytes)

    def _release(self, e: _Entry) -> None:
        self._held_files -= 1
        self._held_bytes -= e.held
        e.held = 0

    def _probe_limit(self) -> int:
        """How many bytes a file's first read asks for (and reserves): a little
        more than the largest recent file, so that nearly every file is read
        whole by it; never more than ``max_chunk`` (one request) or ``max_bytes``."""
        if self._recent:
            biggest = max(self._recent)
            limit = biggest + biggest // 8 + 1
        else:
            limit = FIRST_GUESS
        limit = max(limit, min(_MIN_PROBE, max(1, self.max_bytes // self.depth)))
        return max(1, min(limit, self._max_chunk, self.max_bytes))

    def _pump(self) -> None:
        """Admit entries into the window, reserve bytes in order, send reads (lock held)."""
        if self._closed:
            return
        entries = self._entries
        while self._active < self.depth and self._next < len(entries):
            e = entries[self._next]
            self._next += 1
            if e.state == _NEW:
                e.state = _WAIT
                self._active += 1
        # Files found bigger than their first read go first: they are before
        # every file still waiting for its first read.
        self._sized = [e for e in self._sized if e.state == _SIZED]
        while self._sized:
            e = self._sized[0]
            if self._held_bytes + e.size > self.max_bytes:
                break
            self._sized.pop(0)
            self._send(e, e.size, first=False)
        if not self._sized:
            batch: list[_Entry] = []
            while self._rnext < self._next:
                e = entries[self._rnext]
                if e.state == _WAIT:
                    limit = self._probe_limit()
                    if self._held_bytes + limit > self.max_bytes:
                        break  # the budget frees as the files before it are consumed
                    self._reserve(e, limit, _PROBING)
                    batch.append(e)
                    if len(batch) >= self.batch:
                        self._pool.submit(self._probe, batch)
                        batch = []
                self._rnext += 1
            if batch:
                self._pool.submit(self._probe, batch)
        if self._next >= len(entries) and self._active == 0:
            self._finish()

    def _reserve(self, e: _Entry, n: int, state: int) -> None:
        e.state = state
        self._held_files += 1
        self._hold(e, n)
        self._max_held_files = max(self._max_held_files, self._held_files)

    def _send(self, e: _Entry, n: int, first: bool) -> None:
        """Reserve ``n`` bytes for ``e`` and send its read alone: its first read
        (``first``) or the whole read of a file whose size is known."""
        self._reserve(e, n, _PROBING if first else _READING)
        self._pool.submit(self._probe if first else self._read, [e])

    def _finish(self) -> None:
        """Nothing held, nothing left to send: let the threads and the fs go (lock held)."""
        if self._finished or self._active:
            return
        self._finished = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        st = _state(self._fs, create=False)
        if st is None:
            return
        with st.lock:
            if self in st.live:
                st.live.remove(self)
                for k in _COUNTERS:
                    st.totals[k] += self._counts[k]
            st.max_held_files = max(st.max_held_files, self._max_held_files)
            st.max_held_bytes = max(st.max_held_bytes, self._max_held_bytes)

    def _returned(self) -> None:
        """After a read's results are in (lock held)."""
        self._cond.notify_all()
        if self._closed:
            self._finish()
        else:
            self._pump()

    def _done(self, e: _Entry, r: Any, info: dict[str, Any] | None) -> None:
        """``e``'s read returned ``r`` (bytes or an exception; lock held)."""
        if isinstance(r, BaseException):
            e.error = r
            self._hold(e, 0)
            self._counts["errors"] += 1
        else:
            e.data = r
            e.size = len(r)
            self._hold(e, len(r))  # settle the reservation to what was read
            e.info = info if info is not None else {
                "name": self._fs._name(e.url), "size": len(r), "type": "file", "ufs_path": e.url,
            }  # fmt: skip
            if len(r) <= self.max_bytes:
                self._recent.append(len(r))
            self._counts["files_prefetched"] += 1
            self._counts["bytes_prefetched"] += len(r)
        e.state = _DONE
        if e.zombie or self._closed:
            self._drop(e)

    # ----------------------------------------------------------- pool threads

    def _probe(self, batch: Sequence[_Entry]) -> None:
        """First reads: each file's first ``held`` bytes, the whole file when it is smaller."""
        limits = [e.held for e in batch]
        try:
            results: list[Any] = self._fs._read_heads([e.url for e in batch], limits)
        except BaseException as err:
            results = [err] * len(batch)
        with self._cond:
            for e, r, limit in zip(batch, results, limits, strict=True):
                if e.state != _PROBING:
                    continue  # cannot happen: only this read moves an entry on from PROBING
                if isinstance(r, BaseException) or len(r) < limit:
                    self._done(e, r, None)
                    continue
                # Bigger than its first read (or exactly as big): size it, read it whole.
                self._release(e)
                if e.zombie or self._closed:
                    self._leave(e, _GONE)
                    continue
                e.state = _SIZING
                self._counts["sized_files"] += 1
                self._pool.submit(self._size, e)
            self._returned()

    def _size(self, e: _Entry) -> None:
        fs = self._fs
        try:
            info = fs._entry(fs._meta("info", e.url))
        except Exception:
            info = None  # the consumer's own read raises what cat_file raises
        with self._cond:
            if e.state != _SIZING:
                return
            if info is None or info.get("type") != "file" or int(info["size"]) > self.max_bytes:
                self._counts["skipped"] += 1
                self._leave(e, _PASS)
            else:
                e.info = info
                e.size = int(info["size"])
                e.state = _SIZED
                self._sized.append(e)
                self._sized.sort(key=lambda x: x.index)
            self._cond.notify_all()
            self._pump()

    def _read(self, batch: Sequence[_Entry]) -> None:
        """Whole reads of files whose size is known (bigger than their first read)."""
        try:
            results: list[Any] = self._fs._read_whole([e.url for e in batch], on_error="return")
        except BaseException as err:
            results = [err] * len(batch)
        with self._cond:
            for e, r in zip(batch, results, strict=True):
                if e.state != _READING:
                    continue  # cannot happen: only this read moves an entry on from READING
                # A file that changed size since its info: what was read is held.
                self._done(e, r, None if isinstance(r, BaseException) else
                           dict(e.info or {}, size=len(r)))  # fmt: skip
            self._returned()


class PrefetchedFile(AbstractBufferedFile):
    """A file opened for reading whose bytes were prefetched (``fs.open`` of such a path)."""

    def __init__(self, fs: Any, name: str, url: str, data: bytes, info: dict[str, Any],
                 block_size: int | str | None = None, **kwargs: Any) -> None:  # fmt: skip
        kwargs.pop("cache_type", None)
        kwargs.pop("size", None)
        super().__init__(
            fs,
            name,
            mode="rb",
            block_size=block_size if block_size not in (None, "default") else "default",
            cache_type="none",
            size=len(data),
            **kwargs,
        )
        self._details = dict(info, size=len(data))
        self.url = url
        self._view = memoryview(data)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return bytes(self._view[start:end])

    def readinto(self, b: Any) -> int:
        """Copy into a writable buffer straight from the prefetched bytes."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(b).cast("B")
        n = max(0, min(view.nbytes, self.size - self.loc))
        view[:n] = self._view[self.loc : self.loc + n]
        self.loc += n
        return n

    def close(self) -> None:
        super().close()
        self._view.release()


def worker_share(order: Sequence[Any], batch_size: int, num_workers: int, worker_id: int
                 ) -> list[Any]:  # fmt: skip
    """The items of ``order`` a ``DataLoader`` worker will load, in its order.

    A map-style ``DataLoader`` with ``num_workers`` workers cuts the sampler's
    order into batches of ``batch_size`` and hands batch ``b`` to worker ``b %
    num_workers`` (round robin while every worker is alive). Give each worker
    ``fs.prefetch(worker_share(...))`` from its ``worker_init_fn``. The
    assignment is the loader's, not a promise: an order a little off costs
    misses, never wrong data.
    """
    if num_workers <= 0:
        return list(order)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[Any] = []
    start = worker_id * batch_size
    step = num_workers * batch_size
    for b in range(start, len(order), step):
        out.extend(order[b : b + batch_size])
    return out
