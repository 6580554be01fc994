"""FUSE mounts side by side: alluxiofs mount, s3fs-fuse, rclone mount, the raw local read.

    make bench-fuse                         # or: .bench-venv/bin/python benches/fuse.py
    .bench-venv/bin/python benches/fuse.py --small 2000 --large-mib 256

One Garage S3 server on loopback holds the dataset: ``--small`` files of
``--small-kib`` KiB in directories of 1,000 (the small-file and ``ls -lR``
tree) and one file of ``--large-mib`` MiB. Each peer mounts the bucket and is
read with plain Python file I/O:

- **small**: every small file read whole by 16 threads (files/s), cold (a
  fresh mount, nothing cached), then warm (the same mount again);
- **large**: the large file read sequentially in 8 MiB ``read`` calls (MB/s),
  cold, then warm;
- **pread**: 2,000 random 4 KiB ``os.pread``s of the large file, warm;
- **large, caches dropped**: the large file read again after
  ``echo 1 > /proc/sys/vm/drop_caches`` (root): the kernel's page cache holds
  nothing, neither the mount's pages nor the files behind them (the worker's
  page files, rclone's cache, the raw file), so each tier below the kernel is
  measured from the disk, against the raw read of the same disk;
- **parquet**: ``pq.read_table`` of a ``--parquet-mib`` MiB Parquet file by its
  local path (MB/s of the file), cold, then warm;
- **ls -lR**: ``ls -lR`` of the small-file tree on a fresh mount (the
  metadata each peer must fetch), seconds.

Peers: ``alluxiofs`` (one worker over the bucket, ``alluxiofs mount``),
``alluxiofs-nokc`` (the same warm worker, mounted with ``--no-kernel-cache``:
every read reaches the worker; the node-local tier alone), ``s3fs-fuse``
(``s3fs``, the peer Alluxio measured against), ``rclone`` (``rclone mount
--vfs-cache-mode full``), and ``raw`` (the same files on the local disk, in
the page cache: the limit). The ratios are of alluxiofs to each peer, from
this one run. Writes ``benches/results/fuse-<date>.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

import s3server  # noqa: E402
from alluxiofs import _alluxiofs  # noqa: E402
from harness import Worker  # noqa: E402

MiB = 1 << 20
BUCKET = "fusebench"


def make_parquet(path: Path, mib: int) -> None:
    """A Parquet file of about ``mib`` MiB: 8 float64 columns, 8 row groups."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = max(8, mib * MiB // 64)
    rng = np.random.default_rng(3)
    table = pa.table({f"c{i}": rng.random(rows) for i in range(8)})
    pq.write_table(table, path, row_group_size=rows // 8, compression="none")


def make_dataset(
    root: Path, small: int, small_kib: int, large_mib: int, parquet_mib: int
) -> list[str]:
    """Write the dataset under ``root``; returns the small files' relative paths."""
    rels = []
    for i in range(small):
        rel = f"small/d{i // 1000:03d}/f{i:05d}.bin"
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(random.Random(i).randbytes(small_kib * 1024))
        rels.append(rel)
    with open(root / "large.bin", "wb") as f:
        for _ in range(large_mib):
            f.write(os.urandom(MiB))
    make_parquet(root / "table.parquet", parquet_mib)
    return rels


def upload(server: s3server.S3Server, root: Path) -> None:
    fs = server.s3fs()
    paths = [p for p in root.rglob("*") if p.is_file()]

    def put(p: Path) -> None:
        fs.put_file(str(p), f"{BUCKET}/{p.relative_to(root)}")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, paths))


def wait_mounted(mp: Path, proc: subprocess.Popen | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _alluxiofs.mount_state(str(mp)) != "mounted":
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"{mp} did not mount")
        time.sleep(0.05)
    # s3fs and rclone answer statfs before they serve: wait for a listing.
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if os.listdir(mp):
                return
        time.sleep(0.1)
    raise RuntimeError(f"{mp} mounted but lists nothing")


@contextlib.contextmanager
def fuse_mount(cmd: list[str], mp: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    """Run ``cmd`` (a foreground FUSE daemon) until the block ends; always unmount."""
    mp.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        try:
            wait_mounted(mp, proc)
        except RuntimeError:
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        yield
    finally:
        with contextlib.suppress(Exception):
            _alluxiofs.unmount(str(mp))
        with contextlib.suppress(Exception):
            proc.terminate()
            proc.wait(timeout=30)
        if proc.poll() is None:
            proc.kill()


def read_small(root: Path, rels: list[str], threads: int = 16) -> dict:
    def one(rel: str) -> int:
        with open(root / rel, "rb") as f:
            return len(f.read())

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(one, rels))
    s = time.perf_counter() - t
    return {"files_per_s": len(rels) / s, "MBps": n / s / 1e6, "seconds": s}


def read_large(path: Path) -> dict:
    t = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 * MiB):
            n += len(chunk)
    s = time.perf_counter() - t
    return {"MBps": n / s / 1e6, "seconds": s}


def preads(path: Path, count: int = 2000) -> dict:
    size = path.stat().st_size
    rnd = random.Random(7)
    offs = [rnd.randrange(0, size - 4096) for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.perf_counter()
        for o in offs:
            os.pread(fd, 4096, o)
        s = time.perf_counter() - t
    finally:
        os.close(fd)
    return {"reads_per_s": count / s}


def read_parquet(path: Path) -> dict:
    import pyarrow.parquet as pq

    t = time.perf_counter()
    rows = pq.read_table(path).num_rows
    s = time.perf_counter() - t
    return {"MBps": path.stat().st_size / s / 1e6, "seconds": s, "rows": rows}


def drop_caches() -> bool:
    """Empty the kernel's page cache (root only); whether it was done."""
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as e:
        print(f"fuse: cannot drop the page cache ({e}): that row is left out", file=sys.stderr)
        return False
    return True


def ls_lr(path: Path) -> dict:
    t = time.perf_counter()
    out = subprocess.run(["ls", "-lR", str(path)], capture_output=True, check=True).stdout
    return {"seconds": time.perf_counter() - t, "lines": out.count(b"\n")}


def measure(name: str, root: Path, rels: list[str], warm_only: bool = False) -> dict:
    print(f"fuse: {name}", file=sys.stderr, flush=True)
    r: dict = {}
    if warm_only:
        # Into the page cache again (an earlier peer's row dropped it).
        read_small(root, rels)
        read_large(root / "large.bin")
    else:
        r["ls_lR"] = ls_lr(root / "small")
        r["small_cold"] = read_small(root, rels)
        r["large_cold"] = read_large(root / "large.bin")
        r["parquet_cold"] = read_parquet(root / "table.parquet")
    r["small_warm"] = read_small(root, rels)
    r["large_warm"] = read_large(root / "large.bin")
    r["pread_warm"] = preads(root / "large.bin")
    r["parquet_warm"] = read_parquet(root / "table.parquet")
    if not warm_only and drop_caches():
        r["large_dropped"] = read_large(root / "large.bin")
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=10_000, help="small files (10,000)")
    ap.add_argument("--small-kib", type=int, default=64, help="KiB each (64)")
    ap.add_argument("--large-mib", type=int, default=512, help="MiB of the large file (512)")
    ap.add_argument("--parquet-mib", type=int, default=128, help="MiB of the Parquet file (128)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--peers", default="alluxiofs,s3fs-fuse,rclone,raw")
    args = ap.parse_args(argv)
    peers = args.peers.split(",")
    work = Path(tempfile.mkdtemp(prefix="fusebench-"))
    results: dict = {
        "meta": {
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "ufs": "Garage S3 on loopback (no added latency)",
        },
        "peers": {},
    }
    server = None
    try:
        data = work / "data"
        rels = make_dataset(data, args.small, args.small_kib, args.large_mib, args.parquet_mib)
        server = s3server.start_s3_server("garage", bucket=BUCKET, workdir=work / "garage")
        upload(server, data)
        env = dict(os.environ)
        if "raw" in peers:
            read_small(data, rels)  # into the page cache: the limit
            results["peers"]["raw"] = measure("raw (local disk, page cache)", data, rels)
        if "alluxiofs" in peers:
            wenv = {**env, **server.worker_env()}
            w = Worker(
                [
                    "--mount",
                    f"s3://{BUCKET}",
                    "--cache-dir",
                    str(work / "cache"),
                    "--capacity",
                    "20GiB",
                    "--log-level",
                    "warn",
                ],
                wenv,
                work,
                "worker",
            )
            try:
                cli = [sys.executable, "-m", "alluxiofs", "--worker-hosts", w.addr, "mount"]
                mp = work / "mnt-alluxiofs"
                with fuse_mount([*cli, str(mp), f"s3://{BUCKET}"], mp, wenv, work / "a.log"):
                    results["peers"]["alluxiofs"] = measure("alluxiofs mount", mp, rels)
                mp = work / "mnt-nokc"
                cmd = [*cli, "--no-kernel-cache", str(mp), f"s3://{BUCKET}"]
                with fuse_mount(cmd, mp, wenv, work / "a2.log"):
                    results["peers"]["alluxiofs-nokc"] = measure(
                        "alluxiofs mount --no-kernel-cache (warm worker)", mp, rels, warm_only=True
                    )
            finally:
                w.stop()
        if "s3fs-fuse" in peers:
            pw = work / "s3fs.passwd"
            pw.write_text(f"{server.access_key}:{server.secret_key}\n")
            pw.chmod(0o600)
            mp = work / "mnt-s3fs"
            cmd = [
                "s3fs",
                BUCKET,
                str(mp),
                "-f",
                "-o",
                f"url={server.endpoint_url},use_path_request_style,passwd_file={pw},"
                f"endpoint={server.region},parallel_count=16",
            ]
            with fuse_mount(cmd, mp, env, work / "s3fs.log"):
                results["peers"]["s3fs-fuse"] = measure("s3fs-fuse", mp, rels)
        if "rclone" in peers:
            mp = work / "mnt-rclone"
            renv = {
                **env,
                "RCLONE_CONFIG_UFS_TYPE": "s3",
                "RCLONE_CONFIG_UFS_PROVIDER": "Other",
                "RCLONE_CONFIG_UFS_ENDPOINT": server.endpoint_url,
                "RCLONE_CONFIG_UFS_ACCESS_KEY_ID": server.access_key,
                "RCLONE_CONFIG_UFS_SECRET_ACCESS_KEY": server.secret_key,
                "RCLONE_CONFIG_UFS_REGION": server.region,
            }
            # rclone 1.60 (Debian 12) cannot build its S3 client with a CA
            # bundle set ("LoadCustomCABundleError"); the server is plain HTTP.
            renv.pop("AWS_CA_BUNDLE", None)
            cmd = [
                "rclone",
                "mount",
                f"ufs:{BUCKET}",
                str(mp),
                "--config",
                str(work / "rclone.conf"),
                "--vfs-cache-mode",
                "full",
                "--cache-dir",
                str(work / "rclone-cache"),
            ]
            with fuse_mount(cmd, mp, renv, work / "rclone.log"):
                results["peers"]["rclone"] = measure("rclone mount --vfs-cache-mode full", mp, rels)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = args.out or HERE / "results" / f"fuse-{dt.date.today():%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(table(results["peers"]))
    print(f"\nfuse: results in {out}", file=sys.stderr)
    return 0


def table(peers: dict) -> str:
    """Markdown table: each measure per peer, then alluxiofs (and alluxiofs with the
    kernel cache dropped) over each peer, higher is better for alluxiofs."""
    rows: list[tuple[str, Callable[[dict], float | None], bool]] = [
        ("ls -lR s (fresh mount)", lambda r: r.get("ls_lR", {}).get("seconds"), False),
        ("small cold files/s", lambda r: r.get("small_cold", {}).get("files_per_s"), True),
        ("small warm files/s", lambda r: r["small_warm"]["files_per_s"], True),
        ("large cold MB/s", lambda r: r.get("large_cold", {}).get("MBps"), True),
        ("large warm MB/s", lambda r: r["large_warm"]["MBps"], True),
        ("large MB/s, caches dropped", lambda r: r.get("large_dropped", {}).get("MBps"), True),
        ("4 KiB pread/s (warm)", lambda r: r["pread_warm"]["reads_per_s"], True),
        ("parquet cold MB/s", lambda r: r.get("parquet_cold", {}).get("MBps"), True),
        ("parquet warm MB/s", lambda r: r["parquet_warm"]["MBps"], True),
    ]
    names = list(peers)
    ours = [n for n in ("alluxiofs", "alluxiofs-nokc") if n in peers]
    others = [n for n in names if n not in ours]
    pairs = [(a, b) for a in ours for b in others]
    head = "| measure | " + " | ".join(names) + " | " + " | ".join(f"{a} / {b}" for a, b in pairs)
    lines = [head + " |", "|---" * (1 + len(names) + len(pairs)) + "|"]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:,.2f}" if v < 10 else f"{v:,.0f}"

    for label, get, higher_better in rows:
        cells = [fmt(get(peers[n])) for n in names]
        ratios = []
        for a, b in pairs:
            va, vb = get(peers[a]), get(peers[b])
            if not va or not vb:
                ratios.append("-")
            else:
                ratios.append(f"{(va / vb if higher_better else vb / va):.2f}x")
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
