"""alluxiofs demo: a training-style read loop over an S3 dataset, three epochs.

What it does:

1. starts a local S3 server on free loopback ports (Garage when installed by
   ``make garage``, else moto_server);
2. generates a dataset with numpy/pyarrow (``--files`` small files of 50-100
   KiB, plus a few Parquet files) and uploads it;
3. opens ``fsspec.filesystem("alluxiofs", target_protocol="s3", ...)`` with no
   ``worker_hosts``: the embedded local cache worker starts on first use, its
   pages in a temporary ``ALLUXIOFS_HOME``;
4. reads everything once per epoch: the small files with ``fs.cat`` on batches
   of paths, the Parquet files with ``pq.read_table(..., filesystem=fs)``,
   checking every byte against the generated data;
5. prints per epoch: files/s, MB/s, cache hit ratio and UFS requests, from the
   worker's own metrics. From epoch 2 on the UFS is not asked anything.

Everything it starts (S3 server, embedded worker, temporary files) is stopped
and removed at exit. Run with ``make demo`` (release build), or
``.venv/bin/python examples/demo.py --files 500 --ufs file``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import s3server  # noqa: E402  (shared with the tests: scripts/s3server.py)

BATCH = 64  # paths per fs.cat call, like a data loader's batch of samples
MB = 1e6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description="alluxiofs end-to-end demo")
    ap.add_argument("--files", type=int, default=2000, help="number of small files (2000)")
    ap.add_argument("--parquet-files", type=int, default=4, help="number of Parquet files (4)")
    ap.add_argument("--epochs", type=int, default=3, help="read passes over the data (3)")
    ap.add_argument(
        "--ufs",
        choices=["s3", "file"],
        default="s3",
        help="where the dataset lives: a local S3 server (default) or a local directory",
    )
    ap.add_argument(
        "--s3-server",
        choices=["garage", "moto"],
        default=None,
        help="force an S3 server (default: Garage when installed, else moto)",
    )
    args = ap.parse_args(argv)
    if args.files < 1 or args.epochs < 1 or args.parquet_files < 0:
        ap.error("--files and --epochs must be >= 1, --parquet-files >= 0")
    return args


def progress(label: str, done: int, total: int, t0: float) -> None:
    """One self-overwriting progress line on stderr."""
    end = "\n" if done >= total else ""
    rate = done / max(time.perf_counter() - t0, 1e-9)
    print(f"\r  {label}: {done}/{total} ({rate:,.0f}/s)", end=end, file=sys.stderr, flush=True)


def generate(n_files: int, n_parquet: int) -> tuple[dict[str, bytes], dict[str, pa.Table]]:
    """Small binary samples (50-100 KiB) and Parquet tables, from fixed seeds."""
    rng = np.random.default_rng(2026)
    t0 = time.perf_counter()
    small: dict[str, bytes] = {}
    sizes = rng.integers(50 * 1024, 100 * 1024 + 1, n_files)
    for i, size in enumerate(sizes):
        small[f"train/samples/shard-{i % 16:02d}/sample-{i:06d}.bin"] = rng.bytes(int(size))
        if (i + 1) % 250 == 0 or i + 1 == n_files:
            progress("generating samples", i + 1, n_files, t0)
    tables: dict[str, pa.Table] = {}
    rows = 250_000
    t0 = time.perf_counter()
    for j in range(n_parquet):
        feats = rng.standard_normal((rows, 8), dtype=np.float32)
        table = pa.table(
            {
                "id": np.arange(j * rows, (j + 1) * rows, dtype=np.int64),
                "label": rng.integers(0, 10, rows, dtype=np.int32),
                **{f"f{k}": feats[:, k] for k in range(8)},
                "tag": pa.array(np.array(["cat", "dog", "bird", "fish"])[rng.integers(0, 4, rows)]),
            }
        )
        tables[f"train/tables/part-{j:03d}.parquet"] = table
        progress("generating parquet", j + 1, n_parquet, t0)
    return small, tables


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as a Parquet file (several row groups)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=64_000)
    return buf.getvalue()


def upload_s3(server: s3server.S3Server, objects: dict[str, bytes]) -> dict[str, str]:
    """Upload ``{key: bytes}`` into the server's bucket; return ``{key: bucket/key}``."""
    s3 = server.s3fs()
    names = {k: f"{server.bucket}/{k}" for k in objects}
    keys = list(objects)
    t0 = time.perf_counter()
    for i in range(0, len(keys), 200):
        chunk = keys[i : i + 200]
        s3.pipe({names[k]: objects[k] for k in chunk})
        progress("uploading to S3", i + len(chunk), len(keys), t0)
    return names


def write_local(root: Path, objects: dict[str, bytes]) -> dict[str, str]:
    """Write ``{key: bytes}`` under ``root``; return ``{key: absolute path}``."""
    names = {}
    t0 = time.perf_counter()
    for i, (k, data) in enumerate(objects.items()):
        p = root / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        names[k] = str(p)
        if (i + 1) % 500 == 0 or i + 1 == len(objects):
            progress("writing local files", i + 1, len(objects), t0)
    return names


COUNTERS = (
    "alluxiofs_cache_hits_total",
    "alluxiofs_cache_misses_total",
    "alluxiofs_ufs_requests_total",
)


def worker_counters(fs) -> dict[str, float]:
    """The demo's counters, summed over the workers the filesystem uses."""
    out = dict.fromkeys(COUNTERS, 0.0)
    for metrics in fs.worker_metrics().values():
        for name in COUNTERS:
            out[name] += metrics.get(name, 0.0)
    return out


def run_epoch(fs, small: dict[str, bytes], tables: dict[str, pa.Table], names: dict[str, str]):
    """Read every file once, verifying the bytes; return (files, bytes, seconds)."""
    keys = list(small)
    t0 = time.perf_counter()
    nbytes = 0
    for i in range(0, len(keys), BATCH):
        batch = keys[i : i + BATCH]
        got = fs.cat([names[k] for k in batch])
        for k in batch:
            data = got[fs._strip_protocol(names[k])]
            if data != small[k]:
                raise AssertionError(f"{names[k]}: wrong bytes read through alluxiofs")
            nbytes += len(data)
    for k, table in tables.items():
        got = pq.read_table(names[k], filesystem=fs)
        if not got.equals(table):
            raise AssertionError(f"{names[k]}: Parquet table differs")
        nbytes += fs.size(names[k])
    return len(keys) + len(tables), nbytes, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when every read was exact and later epochs made no UFS request."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="alluxiofs-demo-"))
    # A private cache home: the demo never touches ~/.cache/alluxiofs.
    os.environ["ALLUXIOFS_HOME"] = str(work / "home")
    # Training data does not change during a run: keep metadata for the whole
    # demo, so a slow first epoch (moto) cannot let entries expire.
    os.environ.setdefault("ALLUXIOFS_WORKER_METADATA_TTL", "1h")
    server = None
    try:
        import alluxiofs
        import alluxiofs.embedded
        import fsspec

        print(
            f"alluxiofs {alluxiofs.__version__} demo: {args.files} files, "
            f"{args.parquet_files} Parquet files, {args.epochs} epochs, UFS {args.ufs}"
        )
        small, tables = generate(args.files, args.parquet_files)
        objects = {**small, **{k: parquet_bytes(t) for k, t in tables.items()}}
        total_mb = sum(len(v) for v in objects.values()) / MB
        if args.ufs == "s3":
            t0 = time.perf_counter()
            server = s3server.start_s3_server(args.s3_server, bucket="demo")
            print(
                f"  {server.kind} S3 server at {server.endpoint_url} "
                f"(started in {time.perf_counter() - t0:.1f}s)"
            )
            names = upload_s3(server, objects)
            fs = fsspec.filesystem(
                "alluxiofs", target_protocol="s3", target_options=server.target_options()
            )
        else:
            names = write_local(work / "ufs", objects)
            fs = fsspec.filesystem("alluxiofs", target_protocol="file")
        print(f"  dataset: {len(objects)} objects, {total_mb:,.1f} MB")

        header = (
            f"{'epoch':>5} {'files':>6} {'seconds':>8} {'files/s':>9} {'MB/s':>8} "
            f"{'hit ratio':>9} {'UFS requests':>12}"
        )
        print("\n" + header + "\n" + "-" * len(header))
        later_ufs = 0.0
        warm_secs: list[float] = []
        before = worker_counters(fs)  # starts the embedded worker
        for epoch in range(1, args.epochs + 1):
            files, nbytes, secs = run_epoch(fs, small, tables, names)
            after = worker_counters(fs)
            d = {k: after[k] - before[k] for k in COUNTERS}
            before = after
            lookups = d["alluxiofs_cache_hits_total"] + d["alluxiofs_cache_misses_total"]
            ratio = d["alluxiofs_cache_hits_total"] / lookups if lookups else float("nan")
            ufs = d["alluxiofs_ufs_requests_total"]
            if epoch > 1:
                later_ufs += ufs
                warm_secs.append(secs)
            print(
                f"{epoch:>5} {files:>6} {secs:>8.2f} {files / secs:>9,.0f} "
                f"{nbytes / MB / secs:>8,.1f} {ratio:>9.1%} {ufs:>12,.0f}"
            )
        # The same epoch without the cache, through the target filesystem
        # itself (s3fs against the same server, or the plain local read), so
        # the ratio below comes from one run on one machine.
        label = "s3fs" if args.ufs == "s3" else "local"
        files, nbytes, secs = run_epoch(fs.target_fs, small, tables, names)
        rate = f"{files / secs:>9,.0f} {nbytes / MB / secs:>8,.1f}"
        print(f"{label:>5} {files:>6} {secs:>8.2f} {rate} {'(direct, no cache)':>22}")
        if warm_secs:
            ratios = ", ".join(f"{secs / w:.1f}x" for w in warm_secs)
            print(f"\nwarm alluxiofs epochs vs {label} direct: {ratios} the throughput")
        stats = fs.stats()
        print(
            f"\nclient: {stats['bytes_read'] / MB:,.1f} MB from the cache worker, "
            f"{stats['worker_requests']:,} worker requests, "
            f"fallbacks to the UFS: {sum(stats['fallbacks'].values())}"
        )
        if args.epochs > 1 and later_ufs:
            print(f"FAIL: epochs 2-{args.epochs} made {later_ufs:.0f} UFS requests (expected 0)")
            return 1
        print(
            "OK: every byte verified"
            + (
                f"; epochs 2-{args.epochs} were served from the cache with 0 UFS requests"
                if args.epochs > 1
                else ""
            )
        )
        return 0
    finally:
        try:
            import alluxiofs.embedded

            alluxiofs.embedded.stop_all()
        except ImportError:
            pass
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
