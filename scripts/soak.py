"""Soak under faults: many readers over a cluster that is being broken on purpose.

``make soak`` runs it for 10 minutes with 64 readers; ``tests/test_soak.py``
runs the same code with small parameters in ``make test``. Everything is on
loopback: an S3 server (Garage, else moto) behind ``alluxiofs-delay-proxy``
(the UFS of the workers and of the clients' own fallback), a real etcd, three
workers found through etcd, and readers with ``replicas=2``.

Design:

- **Data.** Small files, large files and Parquet files generated from fixed
  seeds; every reader process regenerates them and compares every byte (and
  every Parquet table) it reads with them: a wrong byte is counted, never
  retried away.
- **Readers.** ``--readers`` threads spread over ``--processes`` spawned
  processes, each with its own client; each read is one of four kinds
  (``small`` whole files, ``large`` sequential 1 MiB reads of a window of a
  large file, ``parquet`` two columns by PyArrow, ``random`` 4 KiB to 256 KiB
  ranges). Each read records its latency, the fault phase it started in, and
  any exception as a failure of its kind.
- **Faults**, one at a time from one thread, so that every read always has a
  live replica or a working UFS: every ``--kill-every`` seconds a worker is
  SIGKILLed, left dead a few seconds, restarted on its port with its cache;
  between kills the UFS answers ``503 SlowDown``, ``503
  ServiceUnavailable``, resets connections or cuts answers in half (the modes
  take turns) for ``--ufs-fault-seconds``; etcd is killed and restarted once.
  While the UFS fails, readers read only the *hot set* (pre-warmed before the
  readers start, and read often): data some replica holds. The fault is
  switched on only once no read of another phase is still in flight.
- **Small disk.** One worker's cache directory is a tmpfs of
  ``--small-fs-mib`` with a configured capacity four times larger, so it
  fills up and its writes fail with ENOSPC; reads it serves must not fail.
  That worker is among the killed ones (it restarts on a full disk).
- **Leaks.** Each worker's RSS and open descriptors are sampled every
  second. The first worker is never killed: the median of its last fifth of
  samples is compared, as a ratio, to the median of a fifth that starts a
  third of the way in (RSS rises for minutes while the page index, metadata
  cache, memory tier and connection pools fill; a leak keeps rising after).
  What each cache's disk holds (the two ordinary caches sit on filesystems
  of their own, read with ``statvfs``: exact at the moment of the sample)
  and the workers' own ``alluxiofs_cache_dir_used_bytes`` are compared with
  the capacity at every sample (``du`` is recorded too).
- **Fail-fast back-off.** The UFS faults of a window are long enough for a
  worker's back-off to grow past the window: reads of data no replica holds
  in the seconds after the UFS is back fail (``UfsUnreachableError``) and are
  counted as failed, with how long after the UFS came back they happened.

The run ends with a report (printed, and as JSON with ``--json``) and exit
code 1 if any check failed: wrong bytes, failed reads, growth of RSS or
descriptors past ``--max-growth``, a cache over its capacity, a small disk
that never filled.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (HERE, REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

KINDS = ("small", "large", "parquet", "random")
WEIGHTS = (40, 15, 15, 30)
MiB = 1 << 20

# Fault phases (shared with the reader processes as small integers).
WARMUP, CALM, WORKER_DOWN, ETCD_DOWN, UFS_FAULT, RESTARTING = range(6)
# The longest fail-fast wait of a worker between two tries of a UFS in an
# outage (crates/worker/src/outage.rs MAX_WAIT).
OUTAGE_MAX_WAIT = 1.0
PHASES = ("warmup", "calm", "worker_down", "etcd_down", "ufs_fault", "restarting")
UFS_MODES = ("slowdown", "unavailable", "reset", "cut")


@dataclass
class SoakConfig:
    seconds: float = 600.0
    readers: int = 64
    processes: int = 8
    kill_every: float = 60.0
    down_seconds: float = 5.0
    ufs_fault_seconds: float = 15.0
    warmup_seconds: float = 30.0
    small_files: int = 400
    large_files: int = 8
    large_mib: int = 16
    parquet_files: int = 4
    parquet_rows: int = 60_000
    small_fs_mib: int = 32
    capacity_mib: int = 64  # the two workers on ordinary disks: less than they are sent
    memory_mib: int = 16
    sample_every: float = 1.0
    max_growth: float = 1.3  # late / early RSS and descriptors of the never-killed worker
    hot_small: int = 24
    hot_large_mib: int = 8
    seed: int = 16
    s3: str | None = None

    @classmethod
    def short(cls) -> SoakConfig:
        """What ``make test`` runs: under a minute on 2 cores, same code path."""
        return cls(
            seconds=40.0, readers=8, processes=2, kill_every=13.0, down_seconds=3.0,
            ufs_fault_seconds=4.0, warmup_seconds=6.0, small_files=120, large_files=4,
            large_mib=8, parquet_files=2, parquet_rows=20_000, small_fs_mib=8,
            capacity_mib=20, memory_mib=8, sample_every=0.5, max_growth=1.5, hot_small=12,
            hot_large_mib=4,
        )  # fmt: skip


# -- the data -------------------------------------------------------------------------


def small_paths(cfg: SoakConfig, bucket: str) -> list[tuple[str, int]]:
    rnd = random.Random(cfg.seed)
    out = []
    for i in range(cfg.small_files):
        size = rnd.choice([0, 1, 4096, 65_537, 1 << 20, (1 << 20) + 1]) if i < 6 else 0
        size = size or rnd.randrange(1, 160_000)
        out.append((f"{bucket}/soak/small/{i % 7}/s{i:04d}.bin", size))
    return out


def small_bytes(cfg: SoakConfig, i: int, size: int) -> bytes:
    return random.Random(cfg.seed * 1_000_003 + i).randbytes(size)


COLD_FILES = 64
COLD_SIZE = 100_000


def cold_path(bucket: str, i: int) -> str:
    return f"{bucket}/soak/cold/c{i:02d}.bin"


def cold_bytes(cfg: SoakConfig, i: int) -> bytes:
    return random.Random(cfg.seed * 31 + i).randbytes(COLD_SIZE)


def large_path(bucket: str, i: int) -> str:
    return f"{bucket}/soak/large/l{i:02d}.bin"


def large_bytes(cfg: SoakConfig, i: int) -> bytes:
    import numpy as np

    size = cfg.large_mib * MiB + 7919 * (i + 1)  # not page aligned
    return np.random.default_rng(cfg.seed * 7 + i).bytes(size)


def hot_large_path(bucket: str) -> str:
    return f"{bucket}/soak/hot/h00.bin"


def hot_large_bytes(cfg: SoakConfig) -> bytes:
    import numpy as np

    return np.random.default_rng(cfg.seed * 7 - 1).bytes(cfg.hot_large_mib * MiB)


def parquet_path(bucket: str, i: int) -> str:
    return f"{bucket}/soak/parquet/p{i}.parquet"


def parquet_table(cfg: SoakConfig, i: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(cfg.seed * 11 + i)
    n = cfg.parquet_rows
    return pa.table(
        {
            "id": np.arange(n, dtype=np.int64) + i * 10_000_000,
            "x": rng.standard_normal(n),
            "y": rng.integers(0, 1 << 30, n, dtype=np.int32),
            "label": pa.array([f"r{i}-{k % 1013}" for k in range(n)]),
        }
    )


def parquet_bytes(cfg: SoakConfig, i: int) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(parquet_table(cfg, i), buf, row_group_size=cfg.parquet_rows // 6)
    return buf.getvalue()


@dataclass
class Data:
    """Expected content, regenerated in every process from the seeds."""

    small: dict[str, bytes]
    large: dict[str, bytes]
    parquet: dict[str, object]  # path -> pyarrow.Table
    hot_small: list[str]
    hot_large: str
    hot_parquet: str

    @property
    def cold_large(self) -> list[str]:
        """The large files other than the hot one: the hot set is pinned, and
        only the hot reads touch the hot file, so what is pinned stays small."""
        return sorted(p for p in self.large if p != self.hot_large)

    @property
    def hot_paths(self) -> list[str]:
        return [*self.hot_small, self.hot_large, self.hot_parquet]

    @classmethod
    def generate(cls, cfg: SoakConfig, bucket: str) -> Data:
        small = {p: small_bytes(cfg, i, n) for i, (p, n) in enumerate(small_paths(cfg, bucket))}
        large = {large_path(bucket, i): large_bytes(cfg, i) for i in range(cfg.large_files)}
        large[hot_large_path(bucket)] = hot_large_bytes(cfg)
        tables = {parquet_path(bucket, i): parquet_table(cfg, i) for i in range(cfg.parquet_files)}
        paths = sorted(small)
        return cls(
            small=small,
            large=large,
            parquet=tables,
            hot_small=paths[: cfg.hot_small],
            hot_large=hot_large_path(bucket),
            hot_parquet=parquet_path(bucket, 0),
        )


def upload(cfg: SoakConfig, s3fs, bucket: str) -> int:
    total = 0
    batch = {p: small_bytes(cfg, i, n) for i, (p, n) in enumerate(small_paths(cfg, bucket))}
    s3fs.pipe(batch)
    total += sum(len(v) for v in batch.values())
    for i in range(cfg.large_files):
        data = large_bytes(cfg, i)
        s3fs.pipe_file(large_path(bucket, i), data)
        total += len(data)
    hot = hot_large_bytes(cfg)
    s3fs.pipe_file(hot_large_path(bucket), hot)
    total += len(hot)
    for i in range(cfg.parquet_files):
        data = parquet_bytes(cfg, i)
        s3fs.pipe_file(parquet_path(bucket, i), data)
        total += len(data)
    cold = {cold_path(bucket, i): cold_bytes(cfg, i) for i in range(COLD_FILES)}
    s3fs.pipe(cold)
    return total + COLD_FILES * COLD_SIZE


# -- readers (in spawned processes) ----------------------------------------------------


@dataclass
class ReaderArgs:
    cfg: SoakConfig
    bucket: str
    fs_options: dict
    threads: int
    first_slot: int
    out: str


def _one_read(fs, data: Data, kind: str, hot: bool, rnd: random.Random) -> tuple[int, str]:
    """One read of ``kind``; returns (bytes read, what) and raises on a mismatch."""
    if kind == "small":
        path = rnd.choice(data.hot_small if hot else list(data.small))
        got = fs.cat_file(path)
        want = data.small[path]
        if got != want:
            raise WrongBytes(f"{path}: {len(got)} bytes, differ from the {len(want)} expected")
        return len(got), path
    if kind == "parquet":
        import pyarrow.parquet as pq

        path = data.hot_parquet if hot else rnd.choice(sorted(data.parquet))
        cols = rnd.sample(["id", "x", "y", "label"], 2)
        got = pq.read_table(path, filesystem=fs, columns=cols)
        if not got.equals(data.parquet[path].select(cols)):
            raise WrongBytes(f"{path} columns {cols}: table differs")
        return got.nbytes, path
    path = data.hot_large if hot else rnd.choice(data.cold_large)
    want = data.large[path]
    limit = len(want)
    if kind == "random":
        n = rnd.randrange(4096, 256 * 1024)
        start = rnd.randrange(0, max(1, limit - n))
        got = fs.cat_file(path, start, start + n)
        if got != want[start : start + n]:
            raise WrongBytes(f"{path}[{start}:{start + n}]: bytes differ")
        return len(got), path
    # large: a window read sequentially, 1 MiB at a time
    n = min(limit, rnd.randrange(2 * MiB, 6 * MiB))
    start = rnd.randrange(0, max(1, limit - n))
    got = bytearray()
    with fs.open(path, "rb") as f:
        f.seek(start)
        while len(got) < n:
            chunk = f.read(min(MiB, n - len(got)))
            if not chunk:
                break
            got += chunk
    if bytes(got) != want[start : start + n]:
        raise WrongBytes(f"{path}[{start}:{start + n}]: {len(got)} bytes, differ")
    return len(got), path


class WrongBytes(Exception):
    """A read returned bytes other than the generator's."""


def reader_main(args: ReaderArgs, phase, inflight, stop) -> None:
    """A reader process: ``args.threads`` threads until ``stop`` is set."""
    import fsspec

    cfg = args.cfg
    data = Data.generate(cfg, args.bucket)
    fs = fsspec.filesystem("alluxiofs", **args.fs_options)
    results: dict[str, list] = {"reads": [], "failures": [], "wrong": []}
    lock = threading.Lock()

    def thread(slot: int) -> None:
        rnd = random.Random(cfg.seed * 101 + slot)
        local_reads, local_fail, local_wrong = [], [], []
        while not stop.is_set():
            ph = phase.value
            inflight[slot] = ph
            if phase.value != ph:  # changed meanwhile: the controller may not have seen us
                inflight[slot] = -1
                continue
            hot = ph == UFS_FAULT or rnd.random() < 0.25
            kind = rnd.choices(KINDS, WEIGHTS)[0]
            t0 = time.time()
            p0 = time.perf_counter()
            what = ""
            try:
                n, what = _one_read(fs, data, kind, hot, rnd)
                local_reads.append((t0, kind, ph, time.perf_counter() - p0, n))
            except WrongBytes as e:
                local_wrong.append((t0, kind, ph, str(e)))
            except Exception as e:  # every failure is counted and reported
                local_fail.append((t0, kind, ph, f"{type(e).__name__}: {e}"[:500], what))
            finally:
                inflight[slot] = -1
        with lock:
            results["reads"] += local_reads
            results["failures"] += local_fail
            results["wrong"] += local_wrong

    threads = [
        threading.Thread(target=thread, args=(args.first_slot + k,), daemon=True)
        for k in range(args.threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = {}
    with contextlib.suppress(Exception):
        s = fs.stats()
        stats = {k: s[k] for k in ("ufs_fallback_reads", "fallbacks", "retries") if k in s}
    results["client_stats"] = stats
    Path(args.out).write_text(json.dumps(results))


# -- the cluster ------------------------------------------------------------------------


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _proc_sample(pid: int) -> tuple[int, int]:
    """(VmRSS bytes, open descriptors) of ``pid``."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Report:
    config: dict
    wall_seconds: float = 0.0
    dataset_bytes: int = 0
    reads: dict = field(default_factory=dict)  # kind -> phase group -> {count, p50, p99}
    failures: list = field(default_factory=list)
    wrong: list = field(default_factory=list)
    bytes_read: int = 0
    events: list = field(default_factory=list)
    workers: dict = field(default_factory=dict)  # name -> lifetimes summary
    capacity: dict = field(default_factory=dict)
    small_fs: dict = field(default_factory=dict)
    proxy: dict = field(default_factory=dict)
    client_stats: list = field(default_factory=list)
    checks: list = field(default_factory=list)  # (name, ok, detail)
    cold_probes: list = field(default_factory=list)
    ufs_recovery_seconds: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    shares_mib: dict = field(default_factory=dict)
    failure_summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(ok for _n, ok, _d in self.checks)


class Soak:
    """Starts everything, runs the readers and the faults, and stops everything."""

    def __init__(self, cfg: SoakConfig, workdir: Path):
        self.cfg = cfg
        self.dir = workdir
        self.stack = contextlib.ExitStack()
        self.events: list[tuple[float, str]] = []
        self.samples: list[dict] = []
        self.t0 = time.time()
        self.sampling = threading.Event()
        self.workers: list = []
        self.capacities: list[int] = []
        self.small_fs_dir: Path | None = None
        self.lock = threading.Lock()
        self.pids: list[tuple[str, int]] = []  # everything started, checked at the end
        self.probes: list[dict] = []  # cold reads while the UFS fails
        self.next_cold = 0
        self.pending_cold: list[int] = []
        self.cold_failed = False
        self.probe_wrong = 0
        self.recoveries: list[float] = []

    def log(self, what: str) -> None:
        t = time.time() - self.t0
        self.events.append((round(t, 2), what))
        print(f"[soak {t:7.1f}s] {what}", flush=True)

    # -- setup --

    def _mount_small_fs(self, path: Path, mib: int | None = None) -> None:
        mib = mib or self.cfg.small_fs_mib
        path.mkdir(parents=True, exist_ok=True)
        size = f"size={mib}m"
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(
                f"cannot mount a {mib} MiB tmpfs at {path} for a cache "
                f"disk (needs root or CAP_SYS_ADMIN): {r.stderr.strip()}"
            )
        self.stack.callback(self._umount, path)

    @staticmethod
    def _umount(path: Path) -> None:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)

    def start(self) -> None:
        from etcd_server import ETCD, EtcdServer
        from harness import FaultProxy, Worker
        from s3server import start_s3_server

        cfg = self.cfg
        if not os.path.exists(ETCD):
            raise RuntimeError(f"etcd is not installed ({ETCD}); `make system-deps` installs it")
        self.s3 = start_s3_server(kind=cfg.s3, bucket="soak", workdir=self.dir / "s3")
        self.stack.callback(self.s3.stop)
        self.log(f"{self.s3.kind} at {self.s3.endpoint_url}")
        if self.s3.proc is not None:
            self.pids.append((self.s3.kind, self.s3.proc.pid))
        t = time.monotonic()
        self.dataset_bytes = upload(cfg, self.s3.s3fs(), "soak")
        self.log(f"uploaded {self.dataset_bytes / MiB:.1f} MiB in {time.monotonic() - t:.1f}s")
        self.proxy = FaultProxy(self.s3.endpoint_url.split("://", 1)[1], self.dir / "proxy")
        self.stack.callback(self.proxy.close)
        self.pids.append(("proxy", self.proxy.proc.pid))
        self.etcd = EtcdServer()
        self.stack.callback(self.etcd.close)
        self.pids.append(("etcd", self.etcd.proc.pid))
        env = dict(os.environ)
        env.update(self.s3.worker_env())
        env.update({"AWS_ENDPOINT": self.proxy.url, "AWS_ENDPOINT_URL": self.proxy.url})
        env.setdefault("RUST_BACKTRACE", "1")
        self.small_fs_dir = self.dir / "small-fs"
        self._mount_small_fs(self.small_fs_dir)
        for i in range(3):
            small = i == 2
            if small:
                cache = self.small_fs_dir / "cache"
            else:
                # A filesystem of its own, twice the capacity, so that what the
                # cache holds on disk is read exactly (statvfs) at each sample: a
                # walk of a busy directory counts a page being evicted and its
                # replacement both, megabytes over what the disk ever held.
                own = self.dir / f"w{i}-fs"
                self._mount_small_fs(own, 2 * cfg.capacity_mib)
                cache = own / "cache"
            cache.mkdir(parents=True, exist_ok=True)
            capacity = (4 * cfg.small_fs_mib if small else cfg.capacity_mib) * MiB
            args = [
                "--mount", "s3://soak", "--cache-dir", str(cache),
                "--capacity", f"{capacity // MiB}MiB", "--memory-capacity", f"{cfg.memory_mib}MiB",
                "--etcd", self.etcd.endpoint, "--etcd-lease-ttl", "2s",
                # An even share for each worker (the default ring with 3 workers can
                # give one 10 %), so the small disk fills up in every run.
                "--placement", "rendezvous",
            ]  # fmt: skip
            w = Worker(args, env, self.dir, f"w{i}")
            w.cache_dir = cache
            self.workers.append(w)
            self.capacities.append(capacity)
            self.stack.callback(w.stop)
            self.pids.append((w.name, w.proc.pid))
        for w in self.workers:
            w.wait_registered()
        self.log("3 workers registered in etcd: " + ", ".join(w.addr for w in self.workers))

    def fs_options(self) -> dict:
        opts = self.s3.target_options()
        opts["client_kwargs"] = {**opts["client_kwargs"], "endpoint_url": self.proxy.url}
        return {
            "etcd_hosts": self.etcd.endpoint,
            "target_protocol": "s3",
            "target_options": opts,
            "replicas": 2,
            "skip_instance_cache": True,
        }

    def prewarm(self) -> None:
        """Pin the hot set and read it once, so that a replica holds it before any
        fault and keeps it: the reads during UFS windows are of the hot set only,
        and without the pin eviction may drop it from its owner (a 20 MiB cache
        turns over every few seconds here; the small disk holds a few MiB), and
        then no replica could serve it."""
        import fsspec
        import pyarrow.parquet as pq

        fs = fsspec.filesystem("alluxiofs", **self.fs_options())
        self.probe_fs = fs
        data = Data.generate(self.cfg, "soak")
        for p in data.hot_paths:
            fs.pin(p)
        for p in data.hot_small:
            assert fs.cat_file(p) == data.small[p], p
        n = self.cfg.hot_large_mib * MiB
        assert fs.cat_file(data.hot_large, 0, n) == data.large[data.hot_large][:n]
        table = pq.read_table(data.hot_parquet, filesystem=fs)
        assert table.equals(data.parquet[data.hot_parquet])
        self.log(
            f"hot set pinned and pre-warmed ({len(data.hot_small)} small, {n // MiB} MiB, "
            "1 Parquet)"
        )
        sizes = {p: len(b) for p, b in data.small.items()}
        sizes.update({p: len(b) for p, b in data.large.items()})
        share: dict[str, int] = {}
        hot_share: dict[str, int] = {}
        for p, n in sizes.items():
            first = fs.workers_for(p)[0]
            share[first] = share.get(first, 0) + n
            if p in data.hot_paths:
                hot_share[first] = hot_share.get(first, 0) + n
        owner = fs.workers_for(data.hot_parquet)[0]
        hot_share[owner] = hot_share.get(owner, 0) + fs.info(data.hot_parquet)["size"]
        self.shares = {
            w.name: round(share.get(w.addr, 0) / MiB, 1) for w in self.workers
        }  # MiB whose first choice is each worker
        self.log(f"placement {fs.placement()}, MiB first owned: {self.shares}")
        # Whole files go to one worker, so shares are lumpy: when the small-disk worker
        # owns less than twice its disk, a ballast file next to its cache directory
        # leaves it half that share, so that the disk fills in every run, and at
        # least room for the pinned hot bytes it owns and 2 MiB more.
        own = share.get(self.workers[2].addr, 0)
        hot_own = hot_share.get(self.workers[2].addr, 0)
        self.small_fs_size = self.cfg.small_fs_mib * MiB
        if own < 2 * self.small_fs_size:
            size = max(4 * MiB, own // 2 // MiB * MiB, -(-(hot_own + 2 * MiB) // MiB) * MiB)
            size = min(size, self.small_fs_size)
            st = os.statvfs(self.small_fs_dir)
            ballast = st.f_bavail * st.f_frsize - size
            with open(self.small_fs_dir / "ballast", "wb") as f:
                for _ in range(ballast // MiB):
                    f.write(b"\0" * MiB)
                f.flush()
                os.fsync(f.fileno())
            self.small_fs_size = size
            self.log(
                f"small disk: {size // MiB} MiB free after a ballast (w2 owns {own / MiB:.1f} "
                f"MiB, {hot_own / MiB:.1f} of them pinned)"
            )

    # -- sampling --

    def _sample_loop(self) -> None:
        while not self.sampling.is_set():
            now = time.time() - self.t0
            row: dict = {"t": now, "workers": []}
            for w, cap in zip(self.workers, self.capacities, strict=True):
                entry = {"name": w.name, "gen": w.generation, "alive": w.alive, "cap": cap}
                with contextlib.suppress(OSError, AttributeError):
                    entry["rss"], entry["fds"] = _proc_sample(w.proc.pid)
                entry["du"] = _du(w.cache_dir)
                if w.cache_dir.parent != self.small_fs_dir:
                    st = os.statvfs(w.cache_dir.parent)
                    entry["disk"] = (st.f_blocks - st.f_bfree) * st.f_frsize
                if w.alive:
                    with contextlib.suppress(Exception):
                        m = w.metrics()
                        entry["used"] = m.get("alluxiofs_cache_dir_used_bytes", 0.0)
                        entry["write_errors"] = m.get("alluxiofs_cache_write_errors_total", 0.0)
                        entry["evicted"] = m.get("alluxiofs_evictions_total", 0.0)
                row["workers"].append(entry)
            st = os.statvfs(self.small_fs_dir)
            row["small_fs_avail"] = st.f_bavail * st.f_frsize
            row["small_fs_used"] = (st.f_blocks - st.f_bfree) * st.f_frsize
            with self.lock:
                self.samples.append(row)
            self.sampling.wait(self.cfg.sample_every)

    # -- faults --

    def _wait_drained(self, inflight, phase_now: int, timeout: float = 120.0) -> None:
        """Until no read that started in another phase is in flight."""
        deadline = time.monotonic() + timeout
        for _ in range(2):  # twice: a reader that looked at the phase just as it changed
            while any(v not in (-1, phase_now) for v in inflight[:]):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"reads of an earlier phase in flight after {timeout}s")
                time.sleep(0.01)
            time.sleep(0.2)

    def _kill(self, w, phase) -> None:
        phase.value = WORKER_DOWN
        pid = w.proc.pid
        w.kill()
        self.log(f"SIGKILL {w.name} (pid {pid}, {w.addr})")
        time.sleep(self.cfg.down_seconds)
        # From its start until a second after it is registered again (it replays
        # its journal and clients find it again meanwhile).
        phase.value = RESTARTING
        w.restart(same_port=True)
        w.wait_registered()
        self.pids.append((w.name, w.proc.pid))
        self.log(f"restarted {w.name} (pid {w.proc.pid}) on {w.addr}")
        time.sleep(1.0)
        phase.value = CALM

    def _probe(self, mode: str) -> None:
        """A file no one read yet, while the UFS fails: no replica holds it, so the
        read must fail, fast and with a connection error, never with bytes."""
        i = self.next_cold
        self.next_cold += 1
        path = cold_path("soak", i)
        t = time.monotonic()
        try:
            got = self.probe_fs.cat_file(path)
            outcome = "returned bytes" if got != cold_bytes(self.cfg, i) else "served"
            error = ""
        except Exception as e:  # the kind of error is the point
            outcome = "raised"
            error = f"{type(e).__name__}: {e}"[:300]
            self.cold_failed = isinstance(e, ConnectionError)
        took = time.monotonic() - t
        self.probes.append({"mode": mode, "path": path, "outcome": outcome,
                            "connection_error": self.cold_failed if outcome == "raised" else False,
                            "seconds": round(took, 3), "error": error})  # fmt: skip
        self.log(f"cold read during {mode}: {outcome} after {took:.2f}s {error[:90]}")
        self.pending_cold.append(i)

    def _recover(self) -> float:
        """Seconds after the UFS passes again until the files the probes could not
        read are served (the workers' fail-fast back-off first has to run out)."""
        t = time.monotonic()
        while self.pending_cold:
            i = self.pending_cold[0]
            try:
                got = self.probe_fs.cat_file(cold_path("soak", i))
            except Exception:  # still in the back-off
                if time.monotonic() - t > 120:
                    raise
                time.sleep(0.1)
                continue
            if got != cold_bytes(self.cfg, i):
                self.probe_wrong += 1
            self.pending_cold.pop(0)
        return time.monotonic() - t

    def _ufs_fault(self, modes: tuple[str, ...], phase, inflight) -> None:
        phase.value = UFS_FAULT
        self._wait_drained(inflight, UFS_FAULT)
        for mode in modes:
            self.proxy.set(mode)
            self.log(f"UFS fault: {mode} on every request")
            t = time.monotonic()
            self._probe(mode)
            time.sleep(max(0.0, self.cfg.ufs_fault_seconds / len(modes) - (time.monotonic() - t)))
        self.proxy.set("pass")
        took = self._recover()
        self.recoveries.append(round(took, 2))
        self.log(f"UFS passes again; cold files served {took:.2f}s later")
        # The probes' owner serves again; another worker may still be inside
        # its fail-fast wait (at most the worker's outage::MAX_WAIT, 1 s, after
        # its last failed try) and answer an uncached read at once with "UFS
        # unreachable". That bounded second is still the outage's: the
        # readers stay on cached data until it is over.
        time.sleep(OUTAGE_MAX_WAIT + 0.25)
        phase.value = CALM

    def _etcd_restart(self, phase) -> None:
        phase.value = ETCD_DOWN
        self.etcd.stop()
        self.log("etcd killed")
        time.sleep(self.cfg.down_seconds)
        self.etcd.start()
        self.pids.append(("etcd", self.etcd.proc.pid))
        self.log("etcd restarted")
        for w in self.workers:
            w.wait_registered(timeout=30)
        self.log("every worker registered again")
        phase.value = CALM

    def _faults(self, phase, inflight, end: float) -> None:
        cfg = self.cfg
        killable = self.workers[1:]  # w0 is never killed: the leak reference
        k = 0
        etcd_done = False
        mode = 0
        while True:
            cycle = time.monotonic()
            if cycle + cfg.down_seconds + 8 > end:
                return
            self._kill(killable[k % len(killable)], phase)
            k += 1
            half = cycle + cfg.kill_every / 2
            if half + cfg.ufs_fault_seconds + 2 < end:
                time.sleep(max(0.0, half - time.monotonic()))
                # two modes per window, so that even the short run sees all four
                pair = (UFS_MODES[mode % 4], UFS_MODES[(mode + 1) % 4])
                self._ufs_fault(pair, phase, inflight)
                mode += 2
            if not etcd_done and (k >= 2 or cycle + cfg.kill_every > end):
                etcd_at = cycle + cfg.kill_every * 0.8
                if etcd_at + cfg.down_seconds + 5 < end:
                    time.sleep(max(0.0, etcd_at - time.monotonic()))
                    self._etcd_restart(phase)
                    etcd_done = True
            nxt = cycle + cfg.kill_every
            if nxt > end:
                return
            time.sleep(max(0.0, nxt - time.monotonic()))

    # -- the run --

    def run(self) -> Report:
        cfg = self.cfg
        report = Report(config=asdict(cfg))
        started = time.monotonic()
        try:
            self.start()
            self.prewarm()
            report.dataset_bytes = self.dataset_bytes
            ctx = mp.get_context("spawn")
            phase = ctx.Value("i", WARMUP, lock=False)
            inflight = ctx.Array("i", [-1] * cfg.readers, lock=False)
            stop = ctx.Event()
            sampler = threading.Thread(target=self._sample_loop, daemon=True)
            sampler.start()
            procs = []
            per = [cfg.readers // cfg.processes] * cfg.processes
            for i in range(cfg.readers % cfg.processes):
                per[i] += 1
            slot = 0
            for i, n in enumerate(per):
                args = ReaderArgs(
                    cfg, "soak", self.fs_options(), n, slot, str(self.dir / f"reader-{i}.json")
                )
                slot += n
                p = ctx.Process(target=reader_main, args=(args, phase, inflight, stop))
                p.start()
                procs.append(p)
                self.pids.append((f"reader process {i}", p.pid))

            def stop_readers() -> None:
                stop.set()
                for p in procs:
                    p.join(120)
                    if p.is_alive():
                        p.kill()

            self.stack.callback(stop_readers)
            self.log(f"{cfg.readers} readers in {cfg.processes} processes")
            time.sleep(cfg.warmup_seconds)
            phase.value = CALM
            self.warm_end = time.time() - self.t0
            self.log("warm-up over: calm, then faults")
            end = time.monotonic() + cfg.seconds - cfg.warmup_seconds
            self._faults(phase, inflight, end)
            time.sleep(max(0.0, end - time.monotonic()))
            phase.value = CALM
            stop_readers()
            self.sampling.set()
            sampler.join(30)
            self.log("readers stopped")
            report.proxy = self.proxy.stats()
            for i in range(len(procs)):
                path = self.dir / f"reader-{i}.json"
                if not path.exists():
                    report.failures.append((0, "-", CALM, f"reader process {i} wrote no results"))
                    continue
                r = json.loads(path.read_text())
                report.failures += r["failures"]
                report.wrong += r["wrong"]
                report.client_stats.append(r["client_stats"])
                self._add_reads(report, r["reads"])
            self._finish(report)
        finally:
            self.sampling.set()
            self.stack.close()
            left = [f"{what} {pid}" for what, pid in self.pids if _alive(pid)]
            mounted = str(self.small_fs_dir) in Path("/proc/mounts").read_text()
            report.checks.append(
                ("everything stopped", not left and not mounted,
                 f"left running: {left or 'none'}; small disk mounted: {mounted}")
            )  # fmt: skip
            report.wall_seconds = round(time.monotonic() - started, 1)
            report.events = self.events
            report.samples = self.samples
            report.shares_mib = getattr(self, "shares", {})
            report.cold_probes = self.probes
            report.ufs_recovery_seconds = self.recoveries
        return report

    def _add_reads(self, report: Report, reads: list) -> None:
        acc = report.__dict__.setdefault("_lat", {})
        for _t, kind, ph, lat, n in reads:
            acc.setdefault(kind, {}).setdefault(PHASES[ph], []).append(lat)
            report.bytes_read += n

    def _finish(self, report: Report) -> None:
        cfg = self.cfg
        lat = report.__dict__.pop("_lat", {})

        def pct(xs: list[float], q: float) -> float:
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000

        for kind in KINDS:
            by = lat.get(kind, {})
            groups = {
                "warmup": by.get("warmup", []),
                "calm": by.get("calm", []),
                "faults": by.get("worker_down", []) + by.get("restarting", [])
                + by.get("etcd_down", []) + by.get("ufs_fault", []),
            }  # fmt: skip
            groups.update({ph: by.get(ph, []) for ph in PHASES[2:]})
            report.reads[kind] = {
                g: {"count": len(xs), "p50_ms": round(pct(xs, 0.5), 2),
                    "p99_ms": round(pct(xs, 0.99), 2)} if xs else {"count": 0}
                for g, xs in groups.items()
            }  # fmt: skip
        total = sum(v["calm"]["count"] + v["faults"]["count"] for v in report.reads.values())
        check = report.checks.append
        check(("reads", total > 0, f"{total} reads"))
        for kind in KINDS:
            n = sum(report.reads[kind][g]["count"] for g in ("calm", "faults"))
            check((f"{kind} reads", n > 0, f"{n} reads of kind {kind}"))
        # Where the failures come from: kind, phase, error, and how long after the
        # UFS last came back (a worker's fail-fast back-off can outlive the outage).
        passes = [t for t, e in self.events if e.startswith("UFS passes again")]
        summary: dict[str, dict] = {}
        for t0, kind, ph, err, *_ in report.failures:
            rel = t0 - self.t0
            after = [rel - t for t in passes if t <= rel + 5]
            key = f"{kind} in {PHASES[ph]}: {err.split(':')[0]}"
            entry = summary.setdefault(key, {"count": 0, "s_after_ufs_back": []})
            entry["count"] += 1
            if after:
                entry["s_after_ufs_back"].append(round(min(after, key=abs), 2))
        for entry in summary.values():
            xs = entry.pop("s_after_ufs_back")
            entry["s_after_ufs_back_min_max"] = [min(xs), max(xs)] if xs else None
        report.failure_summary = summary
        check(("0 wrong bytes", not report.wrong, f"{len(report.wrong)} wrong: {report.wrong[:3]}"))
        check(
            ("0 failed reads", not report.failures,
             f"{len(report.failures)} failed: {report.failures[:5]}")
        )  # fmt: skip
        kills = sum(1 for _t, e in self.events if e.startswith("SIGKILL"))
        ufs = {e.split()[2] for _t, e in self.events if e.startswith("UFS fault")}
        etcd = sum(1 for _t, e in self.events if e == "etcd restarted")
        check(("faults ran", kills >= 2 and len(ufs) == 4 and etcd == 1,
               f"{kills} kills, UFS modes {sorted(ufs)}, {etcd} etcd restarts"))  # fmt: skip
        faults_in = report.proxy.get("faults_injected", 0)
        check(("UFS faults reached the proxy", faults_in > 0, f"{faults_in} requests refused"))
        bad = [p for p in self.probes if p["outcome"] != "raised" or not p["connection_error"]]
        slow = [p for p in self.probes if p["seconds"] > 15]
        modes = sorted({p["mode"] for p in self.probes})
        check(
            (
                "cold reads fail cleanly while the UFS fails",
                self.probes and not bad,
                f"{len(self.probes)} in modes {modes}, not a ConnectionError: {bad[:2]}",
            )
        )
        check(
            (
                "cold reads fail fast",
                self.probes and not slow,
                f"slowest {max((p['seconds'] for p in self.probes), default=0):.2f}s (<= 15 s)",
            )
        )
        check(
            (
                "cold files served once the UFS passes",
                not self.pending_cold and not self.probe_wrong and bool(self.recoveries),
                f"after {self.recoveries} s, {self.probe_wrong} wrong",
            )
        )
        for ph in ("worker_down", "restarting", "ufs_fault", "etcd_down"):
            n = sum(report.reads[k][ph]["count"] for k in KINDS)
            check((f"reads during {ph}", n > 0, f"{n} reads"))

        # capacity, every sample
        over = []
        for row in self.samples:
            for e in row["workers"]:
                limit = e["cap"]
                if e.get("used", 0) > limit:
                    over.append((round(row["t"], 1), e["name"], "metric", e["used"], limit))
                # What the disk holds (statvfs of the cache's own filesystem): the
                # pages, the index files beside them (a journal checkpointed at
                # 1/64 of the capacity) and pages evicted while a read still holds
                # them open (a page per read at most): 4 MiB of slack for those.
                if e.get("disk", 0) > limit + 4 * MiB:
                    over.append((round(row["t"], 1), e["name"], "disk", e["disk"], limit))
        for i, w in enumerate(self.workers):
            dus = [r["workers"][i]["du"] for r in self.samples]
            disks = [r["workers"][i].get("disk", 0) for r in self.samples]
            useds = [r["workers"][i].get("used", 0) for r in self.samples]
            report.capacity[w.name] = {
                "capacity_mib": self.capacities[i] / MiB,
                "max_du_mib": round(max(dus, default=0) / MiB, 1),
                "max_disk_mib": round(max(disks, default=0) / MiB, 1),
                "max_used_mib": round(max(useds, default=0) / MiB, 1),
            }
        check(("cache used <= capacity", not over, f"{len(over)} samples over: {over[:3]}"))

        # the small disk
        avail = [r["small_fs_avail"] for r in self.samples]
        # Full: under 1 MiB free, or the worker's first ENOSPC (after which it
        # evicts to make room, so the free space may stay above 1 MiB).
        full_at = next(
            (
                r["t"]
                for r in self.samples
                if r["small_fs_avail"] < MiB or r["workers"][2].get("write_errors", 0) > 0
            ),
            None,
        )
        errors = self._write_errors(2)
        report.small_fs = {
            "size_mib": getattr(self, "small_fs_size", cfg.small_fs_mib * MiB) / MiB,
            "configured_capacity_mib": 4 * cfg.small_fs_mib,
            "min_avail_kib": round(min(avail, default=0) / 1024),
            "full_at_s": None if full_at is None else round(full_at, 1),
            "cache_write_errors": errors,
            "evictions": max((r["workers"][2].get("evicted", 0) for r in self.samples), default=0),
            "enospc_in_log": self.workers[2]
            .log_path.read_text(errors="replace")
            .count("No space left on device"),
        }
        check(
            (
                "small disk filled up",
                full_at is not None,
                f"min free {min(avail, default=0) / MiB:.2f} of {report.small_fs['size_mib']} MiB",
            )
        )
        check(("ENOSPC hit and counted", errors > 0, f"{errors} cache write errors on w2"))

        # leaks
        warm = getattr(self, "warm_end", 0.0)
        for i, w in enumerate(self.workers):
            lifetimes: dict[int, list] = {}
            for r in self.samples:
                e = r["workers"][i]
                if e.get("alive") and "rss" in e and r["t"] >= warm:
                    lifetimes.setdefault(e["gen"], []).append((r["t"], e["rss"], e["fds"]))
            summary = {}
            for gen, rows in lifetimes.items():
                if len(rows) < 6:
                    continue
                # Early: a fifth of the samples from a third of the lifetime on (RSS
                # rises while the page index, metadata cache, memory tier and
                # connection pools fill, for minutes under 64 readers on 2 cores);
                # late: the last fifth. Also from the first samples, for the report.
                k = max(3, len(rows) // 5)
                third = len(rows) // 3
                early, late = rows[third : third + k], rows[-k:]
                er = statistics.median(x[1] for x in early)
                lr = statistics.median(x[1] for x in late)
                ef = statistics.median(x[2] for x in early)
                lf = statistics.median(x[2] for x in late)
                first_rss = statistics.median(x[1] for x in rows[:k])
                first_fds = statistics.median(x[2] for x in rows[:k])
                half = rows[len(rows) // 2 :]
                minutes = max(1e-9, (half[-1][0] - half[0][0]) / 60)
                summary[gen] = {
                    "rss_ratio_from_start": round(lr / first_rss, 3),
                    "fds_ratio_from_start": round(lf / first_fds, 3),
                    "rss_growth_mib_per_min_second_half": round(
                        (half[-1][1] - half[0][1]) / MiB / minutes, 2
                    ),
                    "seconds": round(rows[-1][0] - rows[0][0], 1),
                    "samples": len(rows),
                    "rss_early_mib": round(er / MiB, 1),
                    "rss_late_mib": round(lr / MiB, 1),
                    "rss_max_mib": round(max(x[1] for x in rows) / MiB, 1),
                    "rss_ratio": round(lr / er, 3),
                    "fds_early": ef,
                    "fds_late": lf,
                    "fds_max": max(x[2] for x in rows),
                    "fds_ratio": round(lf / ef, 3),
                }
            report.workers[w.name] = summary
        ref = report.workers.get("w0", {}).get(1)
        check(("leak reference sampled", ref is not None, "w0 was sampled after the warm-up"))
        if ref:
            check(("RSS flat", ref["rss_ratio"] <= cfg.max_growth,
                   f"w0 RSS late/early {ref['rss_ratio']} (<= {cfg.max_growth})"))  # fmt: skip
            check(
                (
                    "descriptors flat",
                    ref["fds_ratio"] <= cfg.max_growth,
                    f"w0 descriptors late/early {ref['fds_ratio']} (<= {cfg.max_growth})",
                )
            )

    def _write_errors(self, i: int) -> float:
        """Cache write errors of worker ``i``, summed over its lifetimes."""
        best: dict[int, float] = {}
        for r in self.samples:
            e = r["workers"][i]
            if "write_errors" in e:
                best[e["gen"]] = max(best.get(e["gen"], 0.0), e["write_errors"])
        return sum(best.values())


def format_report(report: Report) -> str:
    cfg = report.config
    out = [
        f"soak: {cfg['readers']} readers in {cfg['processes']} processes, "
        f"{cfg['seconds']:.0f} s of reads, {report.wall_seconds:.0f} s wall, "
        f"{report.dataset_bytes / MiB:.0f} MiB of data, {report.bytes_read / MiB:.0f} MiB read",
        "",
        f"{'kind':8} {'phase':12} {'reads':>7} {'p50 ms':>9} {'p99 ms':>9}",
    ]
    for kind, groups in report.reads.items():
        for g, v in groups.items():
            if v["count"]:
                out.append(f"{kind:8} {g:12} {v['count']:7d} {v['p50_ms']:9.2f} {v['p99_ms']:9.2f}")
    for kind, groups in report.reads.items():
        c, f = groups["calm"], groups["faults"]
        if c["count"] and f["count"]:
            out.append(
                f"{kind}: p99 during faults / calm = {f['p99_ms'] / max(c['p99_ms'], 1e-9):.2f}, "
                f"p50 {f['p50_ms'] / max(c['p50_ms'], 1e-9):.2f}"
            )
    out.append("")
    for name, lifetimes in report.workers.items():
        for gen, s in lifetimes.items():
            out.append(
                f"{name} life {gen}: {s['seconds']:.0f} s, RSS {s['rss_early_mib']} -> "
                f"{s['rss_late_mib']} MiB (x{s['rss_ratio']}, max {s['rss_max_mib']}), fds "
                f"{s['fds_early']} -> {s['fds_late']} (x{s['fds_ratio']}, max {s['fds_max']}); "
                f"from the start RSS x{s['rss_ratio_from_start']} fds x{s['fds_ratio_from_start']},"
                f" 2nd half {s['rss_growth_mib_per_min_second_half']} MiB/min"
            )
    for name, c in report.capacity.items():
        out.append(
            f"{name} cache: capacity {c['capacity_mib']:.0f} MiB, max used {c['max_used_mib']} "
            f"MiB (metric), max du {c['max_du_mib']} MiB, max on its disk {c['max_disk_mib']} MiB"
        )
    for pr in report.cold_probes:
        out.append(
            f"cold read while the UFS fails ({pr['mode']}): {pr['outcome']} in {pr['seconds']}s"
            f" {pr['error'][:80]}"
        )
    out.append(
        f"cold files served again, seconds after the UFS passed: {report.ufs_recovery_seconds}"
    )
    out.append(f"small disk: {json.dumps(report.small_fs)}")
    out.append(f"proxy: {json.dumps(report.proxy)}")
    out.append(f"clients: {json.dumps(report.client_stats)}")
    out.append("")
    for what, entry in report.failure_summary.items():
        out.append(f"failed: {what}: {json.dumps(entry)}")
    for name, ok, detail in report.checks:
        out.append(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="the make test parameters")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--readers", type=int)
    ap.add_argument("--processes", type=int)
    ap.add_argument("--kill-every", type=float)
    ap.add_argument("--s3", choices=("garage", "moto"))
    ap.add_argument("--json", type=Path, help="write the report as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    a = ap.parse_args(argv)
    cfg = SoakConfig.short() if a.short else SoakConfig()
    for name in ("seconds", "readers", "processes", "kill_every", "s3"):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    cfg.processes = max(1, min(cfg.processes, cfg.readers))
    if not a.short and a.kill_every is None and cfg.seconds < 4 * cfg.kill_every:
        # A shorter soak keeps the shape of the full one: warm-up, then at least
        # three kill cycles, each with a UFS fault window; one etcd restart.
        cfg.warmup_seconds = min(cfg.warmup_seconds, max(5.0, cfg.seconds / 10))
        cfg.kill_every = max(12.0, (cfg.seconds - cfg.warmup_seconds) / 3)
        cfg.ufs_fault_seconds = min(cfg.ufs_fault_seconds, cfg.kill_every / 4)
        cfg.down_seconds = min(cfg.down_seconds, cfg.kill_every / 4)
    workdir = Path(tempfile.mkdtemp(prefix="alluxiofs-soak-"))
    # SIGTERM (make interrupted, a CI timeout) still stops everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report = Soak(cfg, workdir).run()
    except BaseException:
        traceback.print_exc()
        print(f"soak: logs in {workdir}", file=sys.stderr)
        raise
    print(format_report(report))
    if a.json:
        a.json.write_text(json.dumps(asdict(report), indent=1, default=str))
    if a.keep or not report.ok:
        print(f"logs in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
