"""Ray Data epochs: s3fs direct against alluxiofs cold and warm.

For ``read_parquet`` and ``read_images``, each reader runs ``--epochs``
full passes (``iter_batches`` over every row) on a local Ray cluster
(``ray.init(num_cpus=2)``), twice: with a roomy object store and under
memory pressure (a small ``object_store_memory``, so blocks spill). alluxiofs
gets a fresh cache worker per object-store setting: its first epoch is
*cold* (read through to S3), the later ones *warm*. Prints seconds per
epoch, rows/s and the ratios s3fs / alluxiofs.

    .venv/bin/python benches/ray/epochs.py                      # small scale, ~3 min
    .venv/bin/python benches/ray/epochs.py --parquet-files 16 --rows 400000 --images 2000
    .venv/bin/python benches/ray/epochs.py --json out.json     # also the table as JSON

``benches/suite.py --ray`` (part of ``make bench``) runs it at the default
scale with ``--json`` and puts the table in the suite's results: the Ray
row of the targets in docs/benchmarks.md comes from there.

S3 is Garage on loopback (moto_server if Garage is missing): a near, fast
S3. Against a remote store the cold and s3fs columns grow, the warm one
does not.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # harness: the worker process launcher
sys.path.insert(0, str(ROOT / "scripts"))

MiB = 1 << 20
EPOCH_KEYS = ("store", "dataset", "reader", "epoch", "s", "rows")  # of one result tuple


def upload(server, args) -> dict[str, str]:
    """Parquet files and PNG images in the bucket; their directories (no scheme)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    s3 = server.s3fs()
    rng = np.random.default_rng(0)
    files = {}
    for i in range(args.parquet_files):
        n = args.rows
        t = pa.table(
            {
                "id": np.arange(n, dtype=np.int64) + i * n,
                **{f"f{j}": rng.standard_normal(n).astype(np.float32) for j in range(8)},
                "label": rng.integers(0, 1000, n, dtype=np.int32),
            }
        )
        b = io.BytesIO()
        pq.write_table(t, b, row_group_size=max(1, n // 4))
        files[f"{server.bucket}/epochs/parquet/part-{i:03d}.parquet"] = b.getvalue()
    for i in range(args.images):
        arr = rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
        b = io.BytesIO()
        Image.fromarray(arr).save(b, format="PNG")
        files[f"{server.bucket}/epochs/images/img-{i:05d}.png"] = b.getvalue()
    s3.pipe(files)
    total = sum(len(v) for v in files.values())
    print(
        f"data: {args.parquet_files} Parquet files x {args.rows} rows, {args.images} PNG images "
        f"{args.image_size}x{args.image_size}; {total / MiB:.1f} MiB in {server.kind} S3"
    )
    return {
        "read_parquet": f"{server.bucket}/epochs/parquet",
        "read_images": f"{server.bucket}/epochs/images",
    }


def epoch(ray, kind: str, path: str, fs) -> tuple[float, int]:
    """One full pass: seconds and rows."""
    t0 = time.perf_counter()
    if kind == "read_parquet":
        ds = ray.data.read_parquet(path, filesystem=fs)
    else:
        ds = ray.data.read_images(path, filesystem=fs)
    rows = 0
    for batch in ds.iter_batches(batch_size=1024, batch_format="numpy"):
        rows += len(next(iter(batch.values())))
    return time.perf_counter() - t0, rows


def run_setting(label: str, store_bytes: int, server, paths, args, results) -> None:
    import fsspec
    import ray
    from harness import Worker

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        object_store_memory=store_bytes,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    run_dir = Path(tempfile.mkdtemp(prefix="alluxiofs-ray-bench-"))
    env = dict(os.environ)
    env.update(server.worker_env())
    worker = Worker(
        ["--mount", f"s3://{server.bucket}", "--cache-dir", str(run_dir / "cache")],
        env,
        run_dir,
        "w0",
    )
    try:
        afs = fsspec.filesystem(
            "alluxiofs",
            worker_hosts=worker.addr,
            target_protocol="s3",
            target_options=server.target_options(),
        )
        s3 = server.s3fs()
        # Start Ray's worker processes before timing anything.
        ray.data.range(100).materialize()
        for kind, path in paths.items():
            for reader, fs in (("s3fs", s3), ("alluxiofs", afs)):
                for e in range(args.epochs):
                    secs, rows = epoch(ray, kind, path, fs)
                    name = (
                        reader
                        if reader == "s3fs"
                        else ("alluxiofs cold" if e == 0 else "alluxiofs warm")
                    )
                    results.append((label, kind, name, e + 1, secs, rows))
                    print(
                        f"  {label:9s} {kind:13s} {name:15s} epoch {e + 1}: "
                        f"{secs:7.3f} s {rows / secs:10.0f} rows/s"
                    )
    finally:
        worker.stop()
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--parquet-files", type=int, default=8)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--roomy-store", type=int, default=1024, help="MiB")
    ap.add_argument("--small-store", type=int, default=80, help="MiB (memory pressure)")
    ap.add_argument("--s3-server", choices=["garage", "moto"], default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the table here as JSON too")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import s3server

    server = s3server.start_s3_server(args.s3_server, bucket="raybench")
    results: list[tuple] = []
    try:
        paths = upload(server, args)
        for label, mib in (("roomy", args.roomy_store), ("pressure", args.small_store)):
            print(f"object store {label}: {mib} MiB")
            run_setting(label, mib * MiB, server, paths, args, results)
    finally:
        server.stop()

    table = []
    head = ("store", "dataset", "reader", "s/epoch", "rows/s", "s3fs/this")
    print("\n{:9s} {:13s} {:15s} {:>8s} {:>10s} {:>9s}".format(*head))
    for label in ("roomy", "pressure"):
        for kind in ("read_parquet", "read_images"):
            rows = [r for r in results if r[0] == label and r[1] == kind]
            s3 = [r[4] for r in rows if r[2] == "s3fs"]
            s3_mean = sum(s3) / len(s3)
            for name in ("s3fs", "alluxiofs cold", "alluxiofs warm"):
                secs = [r[4] for r in rows if r[2] == name]
                if not secs:
                    continue
                mean = sum(secs) / len(secs)
                n = rows[0][5]
                ratio = s3_mean / mean
                print(f"{label:9s} {kind:13s} {name:15s} {mean:8.3f} {n / mean:10.0f} {ratio:9.2f}")
                table.append(
                    {"store": label, "dataset": kind, "reader": name, "s_per_epoch": mean,
                     "rows_per_s": n / mean, "s3fs_over_this": ratio, "epochs": len(secs)}
                )  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "s3": server.kind,
                    "store_mib": {"roomy": args.roomy_store, "pressure": args.small_store},
                    "table": table,
                    "epochs": [dict(zip(EPOCH_KEYS, r, strict=True)) for r in results],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
