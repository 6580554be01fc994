"""Scale: one worker, millions of small files, measured from outside the worker.

    .bench-venv/bin/python benches/scale.py                       # or: make bench-scale
    .bench-venv/bin/python benches/scale.py --files 100000,1000000 --max-minutes 60

For each file count N (ascending; default 1,000,000 and 10,000,000):

1. **generate** N files of 2 KiB (deterministic bytes: file ``i`` is its index
   in hex, repeated) in a tree of 1000 files per directory, with a process
   pool writing through ``os.open``/``os.write``; this is the ``file://`` UFS.
   With ``--ufs links`` (``auto``, the default, picks it when N files of their
   own do not fit the disk), the N names are hard links to 4,096 distinct
   files (file ``i`` holds the bytes of file ``i % 4096``): a name costs a
   directory entry, not a block and an inode, so 10 M files take ~0.3 GB
   instead of 41 GB. The worker still caches N pages under N URLs; only the
   cold fill is easier (the UFS bytes are few and stay in the page cache), so
   its files/s are not comparable between the two layouts.
2. **baseline**: a worker over an empty cache directory reads one file (so one
   page is cached), is stopped and started again; its RSS (``VmRSS``) after
   its first hit, its time to that hit and its ``rchar`` at that moment are
   the baseline every other number is measured against.
3. **fill**: one worker (the same build, ``--memory-capacity 0``, a capacity
   large enough) over an empty cache directory loads the whole tree with the
   worker's own load job (``GET /v1/load?opType=submit``, polled until it
   ends): the cold files/s.
4. **disk**, with the worker stopped: ``st_blocks * 512`` summed over every
   file under the cache directory, against N * 2048 bytes cached; the files
   and bytes under ``<dir>/index`` (the persisted index of the new store;
   0 when there is none).
5. **restart**: a new worker process over the filled directory; time from
   spawning it to the first successful read of a cached file (a direct
   ``GET /v1/range`` polled from the moment the process answers
   ``/healthz``), whether that read was a hit (cache hits counter, no UFS
   GET), and the process's ``rchar`` (``/proc/<pid>/io``) at that moment as
   a share of the bytes cached. Then, once the pages gauge
   (``alluxiofs_cache_pages``) is steady, resident bytes per page: (its
   ``VmRSS`` - the baseline's) / pages.
6. **warm reads** through the fsspec client of a random sample of files:
   batched ``fs.cat`` (files/s, twice: the first pass right after the
   restart also fills the metadata cache) and single-file ``cat_file`` from
   several threads (files/s, p50 and p99 latency).

A step is skipped, with the reason printed, when the disk (bytes or inodes)
cannot hold its UFS files plus the cache with a margin (the cache is
estimated from the previous step's measured bytes and files per page, or
pessimistically as one 4 KiB file per page before the first step), or when
``--max-minutes`` would be exceeded (estimated from the previous step).

Prints a table (with Alluxio's published claim as a reference row) and
writes ``benches/results/scale-<date>.json``. ``tests/test_scale.py`` runs
the same code at 100,000 files and asserts the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from harness import Worker  # noqa: E402  (tests/harness.py: worker process + metrics)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
FILE_SIZE = 2 * KiB
FILES_PER_DIR = 1000
PAGES_GAUGE = "alluxiofs_cache_pages"
REFERENCE = {
    "system": "Alluxio (published claim)",
    "claim": "one worker stores and serves 30-50 million files; benchmarked at 4.8, 24 "
    "and 48 million files 'without significant slowdown'",
    "files": [4_800_000, 24_000_000, 48_000_000],
}

# -- the dataset -------------------------------------------------------------------------


LINK_TARGETS = 4096  # distinct files behind the names of a ``links`` dataset


def file_bytes(i: int, links: bool = False) -> bytes:
    """The 2 KiB content of file ``i``: its index (``i % LINK_TARGETS`` in a ``links``
    dataset) as 16 hex digits, 128 times."""
    return (b"%016x" % (i % LINK_TARGETS if links else i)) * (FILE_SIZE // 16)


def rel_path(i: int) -> str:
    """File ``i``'s path below the dataset root: ``dNNNNN/fNNN.bin``, 1000 per directory."""
    return f"d{i // FILES_PER_DIR:05d}/f{i % FILES_PER_DIR:03d}.bin"


def file_url(root: Path, i: int) -> str:
    """The ``file://`` URL of file ``i`` (what the worker and the client name it)."""
    return f"file://{root}/{rel_path(i)}"


def _write_dir(job: tuple[str, int, int, bool]) -> int:
    """Write files ``[lo, hi)`` (one directory) under ``root``, or with ``links`` hard
    links to the targets (made by ``generate``); returns how many."""
    root, lo, hi, links = job
    d = os.path.join(root, f"d{lo // FILES_PER_DIR:05d}")
    os.makedirs(d, exist_ok=True)
    if links:
        targets = link_targets_dir(Path(root))
        for i in range(lo, hi):
            os.link(targets / f"t{i % LINK_TARGETS:04d}.bin", os.path.join(d, _name(i)))
        return hi - lo
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for i in range(lo, hi):
        fd = os.open(os.path.join(d, _name(i)), flags, 0o644)
        try:
            os.write(fd, file_bytes(i))
        finally:
            os.close(fd)
    return hi - lo


def _name(i: int) -> str:
    return f"f{i % FILES_PER_DIR:03d}.bin"


def link_targets_dir(root: Path) -> Path:
    """Where the distinct files of a ``links`` dataset are: beside ``root`` (the worker
    loads everything under ``root``, and each target is cached once per name)."""
    return root.parent / f"{root.name}.targets"


def data_marker(root: Path, n: int, links: bool = False) -> Path:
    """The file that says ``root`` holds all ``n`` files (next to it: the worker loads
    everything under ``root``)."""
    kind = "-links" if links else ""
    return root.parent / f"{root.name}.complete-{n}-{FILE_SIZE}{kind}"


def remove_dataset(root: Path) -> None:
    """Delete a dataset, its link targets and its markers."""
    for m in root.parent.glob(f"{root.name}.complete-*"):
        m.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(link_targets_dir(root), ignore_errors=True)


def generate(root: Path, n: int, procs: int | None = None, links: bool = False) -> float:
    """Write ``n`` files under ``root`` (hard links to ``LINK_TARGETS`` files with
    ``links``), reused when a marker says they are there; returns the seconds spent,
    0.0 when reused."""
    marker = data_marker(root, n, links)
    if marker.exists():
        return 0.0
    remove_dataset(root)
    root.mkdir(parents=True)
    if links:
        targets = link_targets_dir(root)
        targets.mkdir()
        for t in range(min(LINK_TARGETS, n)):
            (targets / f"t{t:04d}.bin").write_bytes(file_bytes(t))
    jobs = [(str(root), lo, min(lo + FILES_PER_DIR, n), links) for lo in range(0, n, FILES_PER_DIR)]
    procs = procs or os.cpu_count() or 1
    t = time.perf_counter()
    if procs == 1 or len(jobs) == 1:
        written = sum(map(_write_dir, jobs))
    else:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            written = sum(pool.imap_unordered(_write_dir, jobs, chunksize=4))
    secs = time.perf_counter() - t
    assert written == n, (written, n)
    marker.write_text(json.dumps({"files": n, "file_size": FILE_SIZE, "seconds": secs}))
    return secs


# -- outside views of a worker -----------------------------------------------------------


def proc_status_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS`` by default), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def proc_io(pid: int) -> dict[str, int]:
    """``/proc/<pid>/io`` as a dict (``rchar``, ``read_bytes``, ...)."""
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = int(v)
    return out


def proc_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_costs(pid: int, run: Callable[[], dict]) -> dict:
    """``run()``'s result plus what it cost: the worker's CPU seconds and the bytes it
    read from the disk (``read_bytes``: page-cache misses), and this process's (the
    client's) CPU seconds and disk bytes, per file where the result counts files."""
    import resource

    def client_cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    me = os.getpid()
    w0, d0, c0 = proc_cpu_s(pid), proc_io(pid)["read_bytes"], client_cpu()
    cd0 = proc_io(me)["read_bytes"]
    out = run()
    files = max(out.get("files", 1), 1)
    out["worker_cpu_us_per_file"] = 1e6 * (proc_cpu_s(pid) - w0) / files
    out["client_cpu_us_per_file"] = 1e6 * (client_cpu() - c0) / files
    out["worker_disk_read_bytes"] = proc_io(pid)["read_bytes"] - d0
    # Same-node reads: the client reads the worker's page files itself.
    out["client_disk_read_bytes"] = proc_io(me)["read_bytes"] - cd0
    return out


def dir_usage(path: Path) -> dict[str, int]:
    """Files, apparent bytes and allocated bytes (``st_blocks * 512``) of every file
    under ``path``, and the same for ``path/index`` (0 when it does not exist)."""

    def walk(p: Path) -> tuple[int, int, int]:
        files = apparent = allocated = 0
        stack = [str(p)]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(d)
            except FileNotFoundError:
                continue
            with it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                        continue
                    st = e.stat(follow_symlinks=False)
                    files += 1
                    apparent += st.st_size
                    allocated += st.st_blocks * 512
        return files, apparent, allocated

    files, apparent, allocated = walk(path)
    index = path / "index"
    ifiles, iapparent, iallocated = walk(index) if index.is_dir() else (0, 0, 0)
    return {
        "files": files,
        "apparent_bytes": apparent,
        "allocated_bytes": allocated,
        "index_files": ifiles,
        "index_bytes": iapparent,
        "index_allocated_bytes": iallocated,
    }


def path_id(url: str) -> str:
    """The HTTP API's ``path_id``: hex SHA-256 of the normalized URL."""
    return hashlib.sha256(url.encode()).hexdigest()


def read_direct(session: requests.Session, worker: Worker, url: str) -> bytes | None:
    """One whole-file ``GET /v1/range`` straight to ``worker`` (no client, no fallback);
    ``None`` when it does not answer 200."""
    try:
        r = session.get(
            f"{worker.url}/v1/range/{path_id(url)}", params={"ufsFullPath": url}, timeout=30
        )
    except requests.RequestException:
        return None
    return r.content if r.status_code == 200 else None


def wait_pages_steady(worker: Worker, want: int | None = None, timeout: float = 600.0) -> int:
    """The pages gauge once it reaches ``want`` (or stops changing for 2 s)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        pages = int(worker.metric(PAGES_GAUGE))
        now = time.monotonic()
        if want is not None and pages >= want:
            return pages
        if pages != last:
            last, since = pages, now
        elif now - since >= 2.0:
            return pages
        if now > deadline:
            return pages
        time.sleep(0.2)


# -- worker lifecycle --------------------------------------------------------------------

# start(mount, cache_dir, name, capacity_bytes) -> a running Worker with that one mount
# and cache dir (arguments: ``worker_args``).
StartFn = Callable[[str, Path, str, int], Worker]


# Every worker of a step: no memory tier (pages are on disk or not cached), quiet.
WORKER_EXTRA_ARGS = ["--memory-capacity", "0", "--log-level", "warn"]


def worker_args(mount: str, cache_dir: Path, capacity_bytes: int) -> list[str]:
    """The worker's arguments of every run: one mount, one cache dir, no memory tier."""
    mount_args = ["--mount", mount, "--cache-dir", str(cache_dir)]
    return [*mount_args, "--capacity", str(capacity_bytes), *WORKER_EXTRA_ARGS]


def capacity_for(n: int) -> int:
    """A cache capacity that no fill of ``n`` files can reach (a limit, not an allocation)."""
    return n * 16 * KiB + GiB


@dataclass
class Restarted:
    """What a restart over a cache directory measured, up to its first hit."""

    worker: Worker
    first_hit_s: float  # from spawning the process to the first good read
    ready_s: float  # from spawning to /healthz answering
    rchar: int  # bytes the process read (read(2) and friends) at the first hit
    read_bytes: int  # of those, from the block device (0 when the page cache had them)
    hit: bool  # the first read was a cache hit (no UFS GET)
    polls: int  # reads until one succeeded


def restart_timed(
    start: StartFn, mount: str, cache_dir: Path, name: str, capacity: int, url: str, want: bytes
) -> Restarted:
    """Start a worker over ``cache_dir`` and read ``url`` (a cached file) until it
    answers ``want``; timed from the spawn of the process."""
    t0 = time.monotonic()
    # start() returns once the ready file is there and /healthz answers 200.
    w = start(mount, cache_dir, name, capacity)
    ready = time.monotonic() - t0
    polls = 0
    with requests.Session() as s:
        while True:
            polls += 1
            got = read_direct(s, w, url)
            if got == want:
                break
            if time.monotonic() - t0 > 600:
                raise TimeoutError(f"{name}: no good read of {url} in 600 s")
            time.sleep(0.01)
    elapsed = time.monotonic() - t0
    assert w.proc is not None
    io = proc_io(w.proc.pid)
    gets = w.metric("alluxiofs_ufs_requests_total", op="get")
    hits = w.metric("alluxiofs_cache_hits_total")
    hit = hits > 0 and gets == 0
    return Restarted(w, elapsed, ready, io["rchar"], io["read_bytes"], hit, polls)


# -- fill and reads ----------------------------------------------------------------------


def fill_load_job(worker: Worker, root: Path, concurrency: int = 32) -> dict:
    """Load everything under ``root`` with the worker's own load job; wait for it to end.

    Returns the job's final ``respProperties`` plus ``seconds`` (wall time from
    the submit to the poll that saw the end).
    """
    url = f"file://{root}"
    t = time.perf_counter()
    r = requests.get(
        f"{worker.url}/v1/load",
        params={"path": url, "opType": "submit", "concurrency": str(concurrency)},
        timeout=30,
    )
    r.raise_for_status()
    if not r.json().get("success"):
        raise RuntimeError(f"load submit refused: {r.text}")
    while True:
        time.sleep(0.25)
        p = requests.get(
            f"{worker.url}/v1/load",
            params={"path": url, "opType": "progress", "progressFormat": "JSON"},
            timeout=30,
        )
        p.raise_for_status()
        body = p.json()
        if body["jobState"] != "RUNNING":
            out = dict(body.get("respProperties", {}))
            out["jobState"] = body["jobState"]
            out["seconds"] = time.perf_counter() - t
            return out


def fill_cat(
    fs, root: Path, n: int, batch: int = 1024, threads: int = 4, links: bool = False
) -> dict:
    """Read all ``n`` files cold with batched ``fs.cat`` (``batch`` files a call,
    ``threads`` calls at once); checks every byte. Returns ``seconds``."""

    def one(lo: int) -> int:
        idx = range(lo, min(lo + batch, n))
        paths = [f"{root}/{rel_path(i)}" for i in idx]
        got = fs.cat(paths)
        for i, p in zip(idx, paths, strict=True):
            if got[p] != file_bytes(i, links):
                raise AssertionError(f"wrong bytes for {p}")
        return len(paths)

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(one, range(0, n, batch)))
    return {"seconds": time.perf_counter() - t, "files": done}


def make_fs(worker: Worker):
    """An fsspec ``alluxiofs`` client over ``worker`` alone, reading ``file://``, no UFS
    fallback (a read the worker cannot serve fails instead of going around it)."""
    import fsspec

    return fsspec.filesystem(
        "alluxiofs",
        worker_hosts=worker.addr,
        target_protocol="file",
        fallback=False,
        skip_instance_cache=True,
    )


def warm_batched(
    fs, root: Path, sample: Sequence[int], batch: int = 1024, links: bool = False
) -> dict:
    """Batched ``fs.cat`` of ``sample``, ``batch`` files a call; checks every byte."""
    t = time.perf_counter()
    for lo in range(0, len(sample), batch):
        idx = sample[lo : lo + batch]
        paths = [f"{root}/{rel_path(i)}" for i in idx]
        got = fs.cat(paths)
        for i, p in zip(idx, paths, strict=True):
            if got[p] != file_bytes(i, links):
                raise AssertionError(f"wrong bytes for {p}")
    secs = time.perf_counter() - t
    return {"files": len(sample), "seconds": secs, "files_per_s": len(sample) / secs}


def warm_single(
    fs, root: Path, sample: Sequence[int], threads: int = 8, links: bool = False
) -> dict:
    """``fs.cat_file`` of each file of ``sample`` from ``threads`` threads; files/s and
    per-file latency percentiles. Checks every byte."""
    lat: list[float] = []
    lock = threading.Lock()
    chunks = [sample[k::threads] for k in range(threads)]

    def run(chunk: Sequence[int]) -> None:
        mine = []
        for i in chunk:
            t = time.perf_counter()
            data = fs.cat_file(f"{root}/{rel_path(i)}")
            mine.append(time.perf_counter() - t)
            if data != file_bytes(i, links):
                raise AssertionError(f"wrong bytes for file {i}")
        with lock:
            lat.extend(mine)

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, chunks))
    secs = time.perf_counter() - t
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else lat * 99
    return {
        "files": len(sample),
        "threads": threads,
        "seconds": secs,
        "files_per_s": len(sample) / secs,
        "p50_ms": 1000 * q[49],
        "p99_ms": 1000 * q[98],
    }


# -- one step ----------------------------------------------------------------------------


@dataclass
class StepConfig:
    """How one step runs (the defaults are the bench's; the test shrinks them)."""

    files: int
    workdir: Path
    warm_sample: int = 200_000
    single_sample: int = 20_000
    threads: int = 8
    fill: str = "load"  # "load": the worker's load job; "cat": batched fs.cat
    load_concurrency: int = 32
    fill_threads: int = 4
    gen_procs: int | None = None
    keep_data: bool = False
    links: bool = False  # the dataset's names are hard links (see ``generate``)
    seed: int = 1
    log: Callable[[str], None] = field(default=lambda s: print(f"scale: {s}", file=sys.stderr))


def measure_step(cfg: StepConfig, start: StartFn, stop: Callable[[Worker], None]) -> dict:
    """Run one step (generate, baseline, fill, disk, restart, warm reads) at
    ``cfg.files`` files; ``start``/``stop`` start and stop workers (the caller's
    cleanup must stop whatever ``start`` started, also when this raises). The
    cache directories, and the dataset unless ``cfg.keep_data``, are removed
    at the end, also when it raises."""
    data = cfg.workdir / f"data-{cfg.files}"
    caches = [cfg.workdir / f"cache-base-{cfg.files}", cfg.workdir / f"cache-{cfg.files}"]
    res: dict = {"files": cfg.files, "file_size": FILE_SIZE, "bytes": cfg.files * FILE_SIZE}
    res["phases"] = {}
    try:
        return _measure_step(cfg, res, data, *caches, start, stop)
    finally:
        t = time.perf_counter()
        for c in caches:
            shutil.rmtree(c, ignore_errors=True)
        if not cfg.keep_data:
            remove_dataset(data)
        res["phases"]["cleanup_s"] = time.perf_counter() - t


def _measure_step(
    cfg: StepConfig,
    res: dict,
    data: Path,
    base_dir: Path,
    cache: Path,
    start: StartFn,
    stop: Callable[[Worker], None],
) -> dict:
    n, log = cfg.files, cfg.log
    phases = res["phases"]  # seconds of what the other numbers leave out (stops)

    links = cfg.links
    log(f"{n:,} files: generating under {data}" + (" (hard links)" if links else ""))
    gen_s = generate(data, n, cfg.gen_procs, links)
    res["generate"] = {
        "seconds": gen_s,
        "files_per_s": n / gen_s if gen_s else None,
        "ufs": "links" if links else "files",
    }
    log(f"generated in {gen_s:.1f} s" if gen_s else "dataset reused")

    # Baseline: one page cached, restarted, first hit.
    shutil.rmtree(base_dir, ignore_errors=True)
    probe = n // 2
    probe_url, probe_bytes = file_url(data, probe), file_bytes(probe, links)
    mount, cap = f"file://{data}", capacity_for(n)
    w = start(mount, base_dir, f"base-{n}", cap)
    with requests.Session() as s:
        assert read_direct(s, w, probe_url) == probe_bytes
    assert w.proc is not None
    fresh_rss = proc_status_kib(w.proc.pid) * KiB
    stop(w)
    base = restart_timed(start, mount, base_dir, f"base-{n}-r", cap, probe_url, probe_bytes)
    assert base.worker.proc is not None
    base_rss = proc_status_kib(base.worker.proc.pid) * KiB
    stop(base.worker)
    res["baseline"] = {
        "fresh_rss_bytes": fresh_rss,
        "restarted_rss_bytes": base_rss,
        "first_hit_s": base.first_hit_s,
        "ready_s": base.ready_s,
        "rchar": base.rchar,
        "hit": base.hit,
    }
    log(f"baseline: RSS {base_rss / MiB:.1f} MiB, first hit {base.first_hit_s:.3f} s")

    # Fill.
    shutil.rmtree(cache, ignore_errors=True)
    w = start(mount, cache, f"fill-{n}", cap)
    if cfg.fill == "load":
        job = fill_load_job(w, data, cfg.load_concurrency)
    else:
        job = fill_cat(make_fs(w), data, n, threads=cfg.fill_threads, links=links)
        job.update(jobState="SUCCEEDED", filesLoaded=n, filesFailed=0)
    filled_pages = wait_pages_steady(w, n, timeout=120)
    assert w.proc is not None
    fill_rss = proc_status_kib(w.proc.pid) * KiB
    t = time.perf_counter()
    stop(w)
    phases["stop_after_fill_s"] = time.perf_counter() - t
    res["fill"] = {
        "method": cfg.fill,
        "seconds": job["seconds"],
        "files_per_s": n / job["seconds"],
        "job_state": job["jobState"],
        "files_failed": int(job.get("filesFailed", 0)),
        "files_loaded": int(job.get("filesLoaded", 0)),
        "pages": filled_pages,
        "rss_bytes": fill_rss,
    }
    log(f"fill: {n / job['seconds']:,.0f} files/s ({job['jobState']}), {filled_pages:,} pages")
    if job["jobState"] != "SUCCEEDED":
        raise RuntimeError(f"load job {job['jobState']}: {job}")

    # Disk, with the worker stopped.
    t = time.perf_counter()
    usage = dir_usage(cache)
    usage["walk_seconds"] = time.perf_counter() - t
    usage["allocated_per_cached_byte"] = usage["allocated_bytes"] / (n * FILE_SIZE)
    usage["files_per_page"] = usage["files"] / max(filled_pages, 1)
    res["disk"] = usage
    log(
        f"disk: {usage['allocated_bytes'] / MiB:,.0f} MiB allocated "
        f"({usage['allocated_per_cached_byte']:.2f}x), {usage['files']:,} files, "
        f"index {usage['index_bytes'] / MiB:.1f} MiB"
    )

    # Restart over the full cache.
    rs = restart_timed(start, mount, cache, f"restart-{n}", cap, probe_url, probe_bytes)
    w = rs.worker
    try:
        pages = wait_pages_steady(w, filled_pages)
        assert w.proc is not None
        rss = proc_status_kib(w.proc.pid) * KiB
        res["restart"] = {
            "first_hit_s": rs.first_hit_s,
            "ready_s": rs.ready_s,
            "first_hit_vs_baseline": rs.first_hit_s / base.first_hit_s,
            "hit": rs.hit,
            "polls": rs.polls,
            "rchar": rs.rchar,
            "read_bytes": rs.read_bytes,
            "rchar_over_baseline": rs.rchar - base.rchar,
            "rchar_share": (rs.rchar - base.rchar) / (n * FILE_SIZE),
            "rchar_share_raw": rs.rchar / (n * FILE_SIZE),
            "pages": pages,
            "rss_bytes": rss,
            "rss_per_page": (rss - base_rss) / max(pages, 1),
            "rss_per_page_vs_fresh": (rss - fresh_rss) / max(pages, 1),
        }
        log(
            f"restart: first hit {rs.first_hit_s:.3f} s ({rs.first_hit_s / base.first_hit_s:.1f}x"
            f" baseline, hit={rs.hit}), read {rs.rchar / MiB:.1f} MiB, "
            f"{(rss - base_rss) / max(pages, 1):.0f} B/page resident"
        )

        # Warm reads through the client.
        rnd = random.Random(cfg.seed)
        sample = rnd.sample(range(n), min(cfg.warm_sample, n))
        fs = make_fs(w)
        warm: dict = {}
        if sample:
            pid = w.proc.pid
            warm["batched_first"] = with_costs(
                pid, lambda: warm_batched(fs, data, sample, links=links)
            )
            warm["batched"] = with_costs(pid, lambda: warm_batched(fs, data, sample, links=links))
            single = sample[: min(cfg.single_sample, len(sample))]
            warm["single"] = with_costs(
                pid, lambda: warm_single(fs, data, single, cfg.threads, links=links)
            )
            ufs_gets = w.metric("alluxiofs_ufs_requests_total", op="get")
            warm["ufs_gets"] = ufs_gets
            warm["ufs_requests"] = {
                op: w.metric("alluxiofs_ufs_requests_total", op=op) for op in ("head", "list")
            }
            assert w.proc is not None
            warm["rss_bytes_after"] = proc_status_kib(w.proc.pid) * KiB
            log(
                f"warm: batched {warm['batched']['files_per_s']:,.0f} files/s, single "
                f"{warm['single']['files_per_s']:,.0f} files/s p99 "
                f"{warm['single']['p99_ms']:.2f} ms, UFS GETs {ufs_gets:.0f}; batched per file: "
                f"worker {warm['batched']['worker_cpu_us_per_file']:.1f} us CPU, client "
                f"{warm['batched']['client_cpu_us_per_file']:.1f} us, disk reads "
                f"{warm['batched']['worker_disk_read_bytes'] / MiB:.1f} MiB (worker) "
                f"{warm['batched']['client_disk_read_bytes'] / MiB:.1f} MiB (client)"
            )
        res["warm"] = warm
    finally:
        t = time.perf_counter()
        stop(w)
        phases["stop_after_reads_s"] = time.perf_counter() - t
    return res


# -- planning ----------------------------------------------------------------------------


def ufs_bytes_needed(n: int, block: int) -> int:
    """Disk a dataset of ``n`` files takes: each file rounded up to ``block``, plus
    one block per directory."""
    per_file = -(-FILE_SIZE // block) * block
    return n * per_file + (n // FILES_PER_DIR + 1) * block


def ufs_needed(n: int, block: int, links: bool) -> tuple[int, int]:
    """(bytes, inodes) a dataset of ``n`` files takes: with ``links`` the targets and
    ~32 bytes of directory entry per name, else a block-rounded file per name; plus
    the directories."""
    dirs = n // FILES_PER_DIR + 1
    if links:
        targets = min(LINK_TARGETS, n)
        return targets * block + n * 32 + dirs * block, targets + dirs + 1
    return ufs_bytes_needed(n, block), n + dirs


def plan_step(
    n: int, workdir: Path, prev: dict | None, ufs_mode: str = "files"
) -> tuple[bool, str, dict]:
    """Whether step ``n`` fits the disk (bytes and inodes) with a margin, and why;
    ``ufs_mode`` ``auto`` takes a file per name when that fits, else hard links
    (``est["ufs"]`` says which)."""
    workdir.mkdir(parents=True, exist_ok=True)
    du = shutil.disk_usage(workdir)
    sv = os.statvfs(workdir)
    block = sv.f_frsize or 4096
    if prev and prev.get("disk"):
        per_page = prev["disk"]["allocated_bytes"] / prev["files"]
        files_per_page = prev["disk"]["files_per_page"]
        basis = f"measured at {prev['files']:,} files"
    else:
        per_page, files_per_page = 2 * 4096, 1.0  # one 4 KiB file per page, x2 to be safe
        basis = "pessimistic: a 4 KiB file per page, doubled"
    cache = int(n * per_page)
    cache_inodes = int(n * files_per_page) + 1000

    def need_for(links: bool) -> tuple[int, int, int, int]:
        have = data_marker(workdir / f"data-{n}", n, links).exists()
        ufs, ufs_inodes = (0, 0) if have else ufs_needed(n, block, links)
        need = int((ufs + cache) * 1.1) + 2 * GiB
        need_inodes = int((ufs_inodes + cache_inodes) * 1.1) + 10_000
        return ufs, ufs_inodes, need, need_inodes

    def fits(need: int, need_inodes: int) -> bool:
        return need <= du.free and not (sv.f_files and need_inodes > sv.f_favail)

    links = ufs_mode == "links"
    if ufs_mode == "auto":
        links = not fits(*need_for(False)[2:])
    ufs, ufs_inodes, need, need_inodes = need_for(links)
    est = {
        "ufs": "links" if links else "files",
        "ufs_bytes": ufs,
        "cache_bytes": cache,
        "need_bytes": need,
        "free_bytes": du.free,
        "need_inodes": need_inodes,
        "free_inodes": sv.f_favail,
        "basis": basis,
    }
    why = ""
    if need > du.free:
        why = (
            f"needs ~{need / GiB:.0f} GiB (UFS {ufs / GiB:.1f} + cache {cache / GiB:.1f}, "
            f"{basis}, +10% +2 GiB), {du.free / GiB:.0f} GiB free at {workdir}"
        )
    elif sv.f_files and need_inodes > sv.f_favail:
        why = (
            f"needs ~{need_inodes / 1e6:.1f} M inodes (UFS {ufs_inodes / 1e6:.1f} M + cache "
            f"{cache_inodes / 1e6:.1f} M, {basis}), {sv.f_favail / 1e6:.1f} M free"
        )
    return not why, why, est


def estimate_seconds(n: int, prev: dict | None) -> float | None:
    """Seconds step ``n`` may take, scaled linearly from the previous step."""
    if not prev or not prev.get("elapsed_s"):
        return None
    return prev["elapsed_s"] * n / prev["files"]


# -- output ------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(steps: list[dict]) -> str:
    """The markdown table of the steps, with the reference row last."""
    head = (
        "| files | generate files/s | cold files/s | warm files/s (batched) | "
        "warm files/s (single, T threads) | p99 ms (single) | B/page resident | "
        "disk / cached | index MB | first hit s (vs empty) | startup read / cached |"
    )
    rows = [head, "|" + "---:|" * 11]
    for s in steps:
        if s.get("skipped"):
            rows.append(f"| {s['files']:,} | skipped: {s['skipped']} |" + " |" * 9)
            continue
        if s.get("error"):
            rows.append(f"| {s['files']:,} | failed: {s['error']} |" + " |" * 9)
            continue
        w, r, d = s.get("warm", {}), s["restart"], s["disk"]
        single = w.get("single", {})
        rows.append(
            "| "
            + " | ".join(
                [
                    f"{s['files']:,}",
                    _fmt(s["generate"]["files_per_s"], ",.0f"),
                    _fmt(s["fill"]["files_per_s"], ",.0f"),
                    _fmt(w.get("batched", {}).get("files_per_s"), ",.0f"),
                    f"{_fmt(single.get('files_per_s'), ',.0f')} ({single.get('threads', '-')})",
                    _fmt(single.get("p99_ms"), ".2f"),
                    f"{r['rss_per_page']:.0f}",
                    f"{d['allocated_per_cached_byte']:.2f}x",
                    f"{d['index_bytes'] / 1e6:.1f}",
                    f"{r['first_hit_s']:.2f} ({r['first_hit_vs_baseline']:.1f}x)",
                    f"{100 * r['rchar_share']:.1f}%",
                ]
            )
            + " |"
        )
    files = ", ".join(f"{f / 1e6:g} M" for f in REFERENCE["files"])
    rows.append(f"| {files} | {REFERENCE['system']}: {REFERENCE['claim']} | | | | | | | | | |")
    return "\n".join(rows)


def _meta(args: argparse.Namespace) -> dict:
    import alluxiofs

    build = "release" if "bench-venv" in sys.prefix else "dev (.venv: debug unless develop-release)"
    commit = ""
    with contextlib.suppress(Exception):
        import subprocess

        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    return {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "alluxiofs": getattr(alluxiofs, "__version__", "?"),
        "alluxiofs_path": str(Path(alluxiofs.__file__).parent),
        "build": build,
        "commit": commit,
        "args": {k: str(v) for k, v in vars(args).items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the steps, print the table, write the JSON; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", default="1000000,10000000", help="file counts (1M,10M)")
    ap.add_argument("--max-minutes", type=float, default=None, help="skip steps past this")
    ap.add_argument("--workdir", type=Path, default=HERE / "results" / "tmp" / "scale")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (scale-<date>.json)")
    ap.add_argument("--warm-sample", type=int, default=200_000, help="files read warm (200k)")
    ap.add_argument("--single-sample", type=int, default=20_000, help="of those, per file")
    ap.add_argument("--threads", type=int, default=8, help="single-file reader threads (8)")
    ap.add_argument(
        "--fill",
        choices=["load", "cat"],
        default="load",
        help="cold fill: the worker's load job (GET /v1/load) or batched fs.cat (load)",
    )
    ap.add_argument("--load-concurrency", type=int, default=32, help="load job requests (32)")
    ap.add_argument("--fill-threads", type=int, default=4, help="fs.cat fill threads (4)")
    ap.add_argument("--gen-procs", type=int, default=None, help="generator processes (CPUs)")
    ap.add_argument("--keep-data", action="store_true", help="keep (and reuse) the datasets")
    ap.add_argument(
        "--ufs",
        choices=["auto", "files", "links"],
        default="auto",
        help="dataset layout: a file per name, hard links to 4,096 files, or auto: files "
        "where they fit the disk (auto)",
    )
    args = ap.parse_args(argv)
    counts = sorted(int(x.replace("_", "")) for x in args.files.split(",") if x.strip())
    started = time.monotonic()
    meta = _meta(args)
    workers: list[Worker] = []

    def start(mount: str, cache_dir: Path, name: str, capacity: int) -> Worker:
        cache_dir.mkdir(parents=True, exist_ok=True)
        run_dir = args.workdir / "logs"
        run_dir.mkdir(parents=True, exist_ok=True)
        w = Worker(worker_args(mount, cache_dir, capacity), dict(os.environ), run_dir, name)
        workers.append(w)
        return w

    def stop(w: Worker) -> None:
        w.stop(timeout=120)

    steps: list[dict] = []
    prev: dict | None = None
    try:
        for n in counts:
            ok, why, est = plan_step(n, args.workdir.resolve(), prev, args.ufs)
            if ok and args.max_minutes is not None:
                guess = estimate_seconds(n, prev)
                left = args.max_minutes * 60 - (time.monotonic() - started)
                if guess is not None and guess > left:
                    ok, why = False, f"estimated {guess / 60:.0f} min, {left / 60:.0f} min left"
                elif left <= 0:
                    ok, why = False, "--max-minutes reached"
            if not ok:
                print(f"scale: skipping {n:,} files: {why}", file=sys.stderr)
                steps.append({"files": n, "skipped": why, "plan": est})
                continue
            cfg = StepConfig(
                files=n,
                workdir=args.workdir.resolve(),
                warm_sample=args.warm_sample,
                single_sample=args.single_sample,
                threads=args.threads,
                fill=args.fill,
                load_concurrency=args.load_concurrency,
                fill_threads=args.fill_threads,
                gen_procs=args.gen_procs,
                keep_data=args.keep_data,
                links=est["ufs"] == "links",
            )
            t = time.monotonic()
            try:
                step = measure_step(cfg, start, stop)
            except Exception as e:  # a failed step is a result too: the next may still run
                print(f"scale: {n:,} files failed: {e!r}", file=sys.stderr)
                step = {"files": n, "error": repr(e)[:300]}
            step["elapsed_s"] = time.monotonic() - t
            step["plan"] = est
            steps.append(step)
            if not step.get("error"):
                prev = step
    finally:
        for w in workers:
            with contextlib.suppress(Exception):
                w.stop()
    results = {"meta": meta, "reference": REFERENCE, "steps": steps}
    out = args.out or HERE / "results" / f"scale-{dt.date.today():%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(table(steps))
    print(f"\nscale: results in {out}", file=sys.stderr)
    return 1 if any(s.get("error") for s in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
