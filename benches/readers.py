"""One reader, one dataset, a few epochs: the measured process of the benchmark suite.

``benches/suite.py`` runs this file in a fresh subprocess per measurement so
that the CPU time and peak RSS it reports are the reader's own::

    python benches/readers.py CONFIG.json

and reads one JSON object from its stdout. It needs only the standard library
plus the reader's own package (it also runs in the PyPI alluxiofs client's
virtual environment, which has neither numpy nor our package).

Datasets (paths, sizes and options come from the config):

* ``small``: whole-file reads of every file, in a shuffled order per epoch,
  by a thread pool of ``concurrency`` threads (like a DataLoader's workers).
  ``mode`` (alluxiofs only) changes how: ``"batched"``, ``fs.cat(paths)`` of
  ``batch`` paths per call by the pool (a latency is one call); ``"prefetch"``,
  ``fs.prefetch(paths_in_epoch_order, depth=prefetch_depth)`` then its
  ``(path, bytes)`` items consumed in that order by one thread (a latency is
  the wait for the next item);
* ``large``: each file opened and read sequentially in 8 MiB ``read()``
  calls, one file after the other (loading a model or a checkpoint);
* ``parquet``: ``pyarrow.parquet.read_table(columns=...)`` of each file;
* ``random``: ``random_reads`` reads of 4 KiB at random offsets of one file,
  by the thread pool (``cat_file(path, start, end)``; ``os.pread`` for raw).

Per epoch it reports wall time, bytes, reads, p50/p99 latency of one read,
the client's CPU seconds (``getrusage``, all threads), the CPU seconds of the
worker processes (``/proc/PID/stat``, children included), and what reached
the S3 server: HTTP requests and response bytes counted by the delaying proxy
in front of it (its ``--stats-file``), plus the workers' own UFS request
counter. When the filesystem has ``stats()`` with ``bytes_local`` and
``bytes_remote`` (alluxiofs: bytes served through the same-node socket and
over HTTP), their per-epoch deltas are reported too. Peak RSS (VmHWM) is
reported once per run.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from concurrent.futures import ThreadPoolExecutor

LARGE_READ = 8 << 20
RANDOM_READ = 4096
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- probes ------------------------------------------------------------------------


def _proc_cpu(pids: list[int]) -> float:
    """utime + stime of ``pids`` and their descendants, in seconds."""
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        stats[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total, todo, seen = 0.0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def _proxy_stats(paths: str | list[str] | None) -> dict:
    """The delaying proxies' counters (each rewrites its file every 100 ms), summed:
    the suite's proxy plus those of remote workers, each in front of the same S3."""
    if not paths:
        return {}
    time.sleep(0.25)  # let the proxies write their latest counters
    total: dict = {}
    for path in [paths] if isinstance(paths, str) else paths:
        try:
            with open(path) as f:
                stats = json.load(f)
        except (OSError, ValueError):
            continue
        for k, v in stats.items():
            if isinstance(v, (int, float)):
                total[k] = total.get(k, 0) + v
    return total


def _local_stats(fs) -> dict:
    """``bytes_local``/``bytes_remote`` of ``fs.stats()``, where it has them."""
    stats = getattr(fs, "stats", None)
    if stats is None:
        return {}
    try:
        s = stats()
    except Exception:  # a probe must not fail the measurement
        return {}
    return {k: s[k] for k in ("bytes_local", "bytes_remote") if isinstance(s.get(k), (int, float))}


def _worker_ufs_requests(urls: list[str]) -> float:
    """``alluxiofs_ufs_requests_total`` summed over the workers."""
    total = 0.0
    for url in urls:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("alluxiofs_ufs_requests_total"):
                total += float(line.rsplit(None, 1)[1])
    return total


class Probe:
    """Snapshot of every counter, taken before and after an epoch."""

    def __init__(self, cfg: dict):
        p = cfg.get("probe", {})
        self.proxy = p.get("proxy_stats")
        self.pids = p.get("worker_pids", [])
        self.urls = p.get("worker_urls", [])

    def snap(self, before: bool) -> dict:
        """Counters now; the clock and our own CPU are read last before an epoch and
        first after it, so the probe's own work is outside the measurement."""
        out = {} if before else _clock_cpu()
        px = _proxy_stats(self.proxy)
        out.update(
            wcpu=_proc_cpu(self.pids),
            ufs_req=px.get("http_requests", 0),
            ufs_bytes=px.get("bytes_down", 0),
            ufs_conn=px.get("connections", 0),
            wufs=_worker_ufs_requests(self.urls),
        )
        if before:
            out.update(_clock_cpu())
        return out


def _clock_cpu() -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"t": time.perf_counter(), "cpu": ru.ru_utime + ru.ru_stime}


# -- readers -----------------------------------------------------------------------


def _s3fs_options(s3: dict) -> dict:
    return {
        "key": s3["key"],
        "secret": s3["secret"],
        "client_kwargs": {"endpoint_url": s3["endpoint"], "region_name": s3["region"]},
    }


class Reader:
    """``whole(path)``, ``open(path)``, ``range(path, start, end)``, ``parquet(path, cols)``."""

    def __init__(self, cfg: dict):
        self.kind = cfg["reader"]
        s3 = cfg.get("s3", {})
        kind = self.kind
        self.fs = None
        if kind == "raw":
            self._fds: dict[str, int] = {}
        elif kind == "s3fs":
            import s3fs

            self.fs = s3fs.S3FileSystem(skip_instance_cache=True, **_s3fs_options(s3))
        elif kind in ("simplecache", "blockcache"):
            import fsspec

            self._tmp = tempfile.mkdtemp(prefix=f"bench-{kind}-", dir=cfg.get("scratch"))
            self.fs = fsspec.filesystem(
                kind,
                target_protocol="s3",
                target_options=_s3fs_options(s3),
                cache_storage=self._tmp,
                skip_instance_cache=True,
            )
        elif kind == "obstore":
            from obstore.fsspec import FsspecStore

            self.fs = FsspecStore(
                "s3",
                config={
                    "endpoint": s3["endpoint"],
                    "access_key_id": s3["key"],
                    "secret_access_key": s3["secret"],
                    "region": s3["region"],
                    "virtual_hosted_style_request": False,
                },
                client_options={"allow_http": True},
                skip_instance_cache=True,
            )
        elif kind == "alluxiofs":
            import fsspec

            w = cfg["workers"]
            addrs = w.get("addrs") or [f"{h}:{w['port']}" for h in w["hosts"]]
            self.fs = fsspec.filesystem(
                "alluxiofs",
                worker_hosts=",".join(addrs),
                target_protocol="s3",
                target_options=_s3fs_options(s3),
                skip_instance_cache=True,
            )
        elif kind == "pypi":
            from alluxiofs import AlluxioFileSystem

            w = cfg["workers"]
            self.fs = AlluxioFileSystem(
                worker_hosts=",".join(w["hosts"]), worker_http_port=w["port"]
            )
        else:
            raise ValueError(f"unknown reader {kind}")
        self.sizes = dict(zip(cfg["paths"], cfg["sizes"], strict=True))
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            with self._lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def whole(self, path: str) -> int:
        if self.kind == "raw":
            with open(path, "rb") as f:
                return len(f.read())
        if self.kind in ("simplecache", "blockcache", "pypi"):
            # pypi: its cat_file(path) without offsets fails ("Offset must be a
            # non-negative integer"), and a page read of a path its worker has
            # not seen through open/info is a 404: whole files are read as its
            # users do, through open().
            with self.fs.open(path, "rb") as f:
                return len(f.read())
        return len(self.fs.cat_file(path))

    def open(self, path: str):
        if self.kind == "raw":
            return open(path, "rb")
        return self.fs.open(path, "rb")

    def range(self, path: str, start: int, end: int) -> int:
        if self.kind == "raw":
            return len(os.pread(self._fd(path), end - start, start))
        if self.kind == "pypi" and path not in self._seen:
            # Its page reads are a 404 until the worker has seen the path (info/open).
            with self._lock:
                if path not in self._seen:
                    self.fs.info(path)
                    self._seen.add(path)
        return len(self.fs.cat_file(path, start=start, end=end))

    def parquet(self, path: str, columns: list[str]) -> int:
        import pyarrow.parquet as pq

        if self.kind == "raw":
            table = pq.read_table(path, columns=columns)
        else:
            table = pq.read_table(path, columns=columns, filesystem=self.fs)
        return table.nbytes


# -- epochs ------------------------------------------------------------------------


def _timed(fn, *args) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - t0, n


def _cat_many(fs, batch: list[str]) -> int:
    """``fs.cat(batch)``: one call for many paths, every one required."""
    out = fs.cat(batch, on_error="raise")
    if len(out) != len(batch):
        raise RuntimeError(f"cat of {len(batch)} paths returned {len(out)}")
    return sum(len(v) for v in out.values())


def _prefetched(fs, order: list[str], cfg: dict) -> list[tuple[float, int]]:
    """``fs.prefetch(order, depth=N)`` consumed as an iterator of (path, bytes), in order."""
    pf = fs.prefetch(order, depth=cfg.get("prefetch_depth", 64))
    out, seen = [], set()
    it = iter(pf)
    for _ in order:
        t0 = time.perf_counter()
        path, data = next(it)
        out.append((time.perf_counter() - t0, len(data)))
        seen.add(fs._strip_protocol(path))
    close = getattr(pf, "close", None)
    if close is not None:
        close()
    if seen != {fs._strip_protocol(p) for p in order}:
        raise RuntimeError(f"prefetch gave {len(seen)} distinct paths of {len(order)}")
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def run_epoch(cfg: dict, reader: Reader, pool: ThreadPoolExecutor, epoch: int) -> dict:
    ds = cfg["dataset"]
    paths, sizes = cfg["paths"], cfg["sizes"]
    rng = random.Random(cfg.get("seed", 0) * 1000 + epoch)
    lat: list[float] = []
    nbytes = 0
    expect = None
    if ds == "small":
        order = list(range(len(paths)))
        rng.shuffle(order)
        mode = cfg.get("mode", "files")
        if mode == "files":
            results = list(pool.map(lambda i: _timed(reader.whole, paths[i]), order))
        elif mode == "batched":
            n = cfg.get("batch", 64)
            batches = [[paths[i] for i in order[j : j + n]] for j in range(0, len(order), n)]
            results = list(pool.map(lambda b: _timed(_cat_many, reader.fs, b), batches))
        elif mode == "prefetch":
            results = _prefetched(reader.fs, [paths[i] for i in order], cfg)
        else:
            raise ValueError(f"unknown mode {mode}")
        lat = [t for t, _ in results]
        nbytes = sum(n for _, n in results)
        expect = sum(sizes)
    elif ds == "large":
        buf_reads = 0
        for p in paths:
            with reader.open(p) as f:
                while True:
                    t, chunk = _timed(f.read, LARGE_READ)
                    if not chunk:
                        break
                    lat.append(t)
                    nbytes += len(chunk)
                    buf_reads += 1
        expect = sum(sizes)
    elif ds == "parquet":
        for p in paths:
            t, n = _timed(reader.parquet, p, cfg["columns"])
            lat.append(t)
            nbytes += n
    elif ds == "random":
        p, size = paths[0], sizes[0]
        offs = [rng.randrange(0, size - RANDOM_READ) for _ in range(cfg["random_reads"])]
        results = list(pool.map(lambda o: _timed(reader.range, p, o, o + RANDOM_READ), offs))
        lat = [t for t, _ in results]
        nbytes = sum(n for _, n in results)
        expect = RANDOM_READ * len(offs)
    else:
        raise ValueError(f"unknown dataset {ds}")
    if expect is not None and nbytes != expect:
        raise RuntimeError(f"read {nbytes} bytes, expected {expect}")
    lat.sort()
    return {"reads": len(lat), "bytes": nbytes, "lat": lat}


def _peak_rss_mb() -> float:
    """VmHWM of this process. Not ``ru_maxrss``: Linux carries that over an exec
    from the forking parent, so it would report the suite's own peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    out: dict = {"reader": cfg["reader"], "dataset": cfg["dataset"], "epochs": []}
    probe = Probe(cfg)
    try:
        reader = Reader(cfg)
        with ThreadPoolExecutor(cfg.get("concurrency", 16)) as pool:
            for epoch in range(1, cfg.get("epochs", 1) + 1):
                local0 = _local_stats(reader.fs)
                before = probe.snap(before=True)
                r = run_epoch(cfg, reader, pool, epoch)
                after = probe.snap(before=False)
                local1 = _local_stats(reader.fs)
                wall = after["t"] - before["t"]
                lat = r.pop("lat")
                out["epochs"].append(
                    {
                        "epoch": epoch,
                        "wall_s": wall,
                        "reads": r["reads"],
                        "bytes": r["bytes"],
                        "files": len(cfg["paths"]),
                        "lat_p50_ms": 1000 * _percentile(lat, 0.50),
                        "lat_p99_ms": 1000 * _percentile(lat, 0.99),
                        "client_cpu_s": after["cpu"] - before["cpu"],
                        "worker_cpu_s": after["wcpu"] - before["wcpu"],
                        "ufs_requests": after["ufs_req"] - before["ufs_req"],
                        "ufs_bytes": after["ufs_bytes"] - before["ufs_bytes"],
                        "ufs_connections": after["ufs_conn"] - before["ufs_conn"],
                        "worker_ufs_requests": after["wufs"] - before["wufs"],
                        **{k: local1[k] - local0.get(k, 0) for k in local1},
                    }
                )
    except Exception as e:  # reported, not raised: the suite says where a reader fails
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()[-3000:]
    out["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
