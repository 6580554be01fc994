"""Parquet column projection: alluxiofs against s3fs, fsspec's open_parquet_file and Arrow's S3.

A file of 20 float64 columns is written to a local S3 server (Garage, or
moto_server when Garage is missing) and 2 columns are read with
``pq.read_table(..., columns=[...])`` by each reader; the median of
``--repeat`` reads is reported with its ratio to alluxiofs warm, plus the
bytes alluxiofs asked of its worker over the bytes of the needed column chunks.
``--trace`` also prints which file-object methods PyArrow and pandas call
(the table in docs/columnar.md). ``--worker-rtt-ms N`` also runs a cache
worker behind ``alluxiofs-delay-proxy`` (N ms per round trip, as a worker on
another node) and compares the Parquet prefetch off and on there.

    .venv/bin/python benches/parquet_projection.py [--rows 1000000] [--repeat 5] [--trace]
    cargo build -p alluxiofs-delay-proxy && \
        .venv/bin/python benches/parquet_projection.py --worker-rtt-ms 2

The embedded local worker is used (the build `make develop` made: a dev
build is slower than `make develop-release`).
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

COLUMNS = [f"c{i:02d}" for i in range(20)]
PROJECTED = ["c03", "c14"]


def make_file(rows: int, row_group: int) -> tuple[bytes, int]:
    """The Parquet bytes and the bytes of the projected columns' chunks."""
    rng = np.random.default_rng(1)
    table = pa.table({c: rng.standard_normal(rows) for c in COLUMNS})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group)
    data = buf.getvalue()
    md = pq.ParquetFile(io.BytesIO(data)).metadata
    needed = sum(
        md.row_group(rg).column(COLUMNS.index(c)).total_compressed_size
        for rg in range(md.num_row_groups)
        for c in PROJECTED
    )
    return data, needed


def timed(fn, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def trace_calls(fs, url: str, storage_options: dict) -> None:
    """Print the AlluxioFile methods each way of reading calls, and how often."""
    import pandas as pd
    from alluxiofs.file import AlluxioFile

    calls: collections.Counter[str] = collections.Counter()
    originals = {}
    names = ["read", "readinto", "readinto1", "seek", "tell", "readable", "seekable", "close"]
    for name in names:
        orig = getattr(AlluxioFile, name)
        originals[name] = orig

        def wrapper(self, *a, _orig=orig, _name=name, **k):
            calls[_name] += 1
            return _orig(self, *a, **k)

        setattr(AlluxioFile, name, wrapper)
    ways = {
        "pq.read_table(columns=2, pre_buffer=True)": lambda: pq.read_table(
            url, filesystem=fs, columns=PROJECTED, pre_buffer=True
        ),
        "pq.read_table(columns=2, pre_buffer=False)": lambda: pq.read_table(
            url, filesystem=fs, columns=PROJECTED, pre_buffer=False
        ),
        "pq.ParquetFile(fs.open()).read(columns=2)": lambda: pq.ParquetFile(fs.open(url)).read(
            columns=PROJECTED
        ),
        "pd.read_parquet(alluxiofs://, columns=2)": lambda: pd.read_parquet(
            "alluxiofs://" + url.split("://", 1)[1],
            columns=PROJECTED,
            storage_options=storage_options,
        ),
    }
    try:
        print("\nAlluxioFile calls per way of reading (2 columns of every row group):")
        for label, fn in ways.items():
            calls.clear()
            fn()
            print(f"  {label:46s} {dict(sorted(calls.items()))}")
    finally:
        for name, orig in originals.items():
            setattr(AlluxioFile, name, orig)


def remote_worker(server, key: str, url: str, want, needed: int, args) -> None:
    """Prefetch off/on through a worker behind the delaying proxy (warm cache)."""
    import json
    import subprocess

    import fsspec

    sys.path.insert(0, str(ROOT / "tests"))
    from harness import Worker

    proxy_bin = next(
        (p for p in (ROOT / "target" / d / "alluxiofs-delay-proxy" for d in ("release", "debug"))
         if p.exists()),
        None,
    )  # fmt: skip
    if proxy_bin is None:
        sys.exit("build the proxy first: cargo build -p alluxiofs-delay-proxy")
    run_dir = Path(tempfile.mkdtemp(prefix="alluxiofs-pq-bench-"))
    env = dict(os.environ)
    env.update(server.worker_env())
    worker = Worker(
        ["--mount", f"s3://{server.bucket}", "--cache-dir", str(run_dir / "cache")],
        env,
        run_dir,
        "w0",
    )
    ready = run_dir / "proxy.json"
    proxy = subprocess.Popen(
        [str(proxy_bin), "--listen", "127.0.0.1:0", "--target", worker.addr,
         "--rtt-ms", str(args.worker_rtt_ms), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(500):
            if ready.exists() and ready.read_text():
                break
            time.sleep(0.01)
        addr = json.loads(ready.read_text())["addr"]
        print(
            f"\nworker behind a {args.worker_rtt_ms:g} ms round trip "
            f"(warm cache, median of {args.repeat}):"
        )
        print(f"{'pre_buffer':>10s} {'depth 0 s':>10s} {'depth 2 s':>10s} {'speed-up':>9s}")
        fss = {
            d: fsspec.filesystem(
                "alluxiofs",
                worker_hosts=addr,
                target_protocol="s3",
                target_options=server.target_options(),
                parquet_prefetch_depth=d,
            )
            for d in (0, 2)
        }
        for pb in (False, True):
            secs = {}
            for d, fs in fss.items():

                def run(fs=fs, pb=pb):
                    t = pq.read_table(url, filesystem=fs, columns=PROJECTED, pre_buffer=pb)
                    assert t.equals(want)

                run()  # warm the worker's cache and this process's footer
                before = fs.stats()["bytes_read"]
                secs[d] = timed(run, args.repeat)[0]
                ratio = (fs.stats()["bytes_read"] - before) / args.repeat / needed
                assert ratio <= 1.1, ratio
            print(f"{pb!s:>10s} {secs[0]:10.4f} {secs[2]:10.4f} {secs[0] / secs[2]:9.2f}")
    finally:
        proxy.terminate()
        proxy.wait(5)
        worker.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--row-group", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--s3-server", choices=["garage", "moto"], default=None)
    ap.add_argument("--trace", action="store_true", help="print the file methods PyArrow calls")
    ap.add_argument("--worker-rtt-ms", type=float, default=0.0, help="also: a delayed worker")
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="alluxiofs-bench-")
    os.environ["ALLUXIOFS_HOME"] = home  # a cold embedded worker of its own
    import alluxiofs.embedded
    import fsspec
    import s3server
    from fsspec.parquet import open_parquet_file
    from pyarrow import fs as pafs

    data, needed = make_file(args.rows, args.row_group)
    server = s3server.start_s3_server(args.s3_server, bucket="bench")
    try:
        s3 = server.s3fs()
        key = "bench/wide.parquet"
        s3.pipe_file(key, data)
        url = f"s3://{key}"
        print(
            f"file: {len(data) / 2**20:.1f} MiB, {len(COLUMNS)} columns, "
            f"{args.rows // args.row_group} row groups; reading {PROJECTED} "
            f"({needed / 2**20:.2f} MiB of column chunks); {server.kind} S3; "
            f"median of {args.repeat}"
        )
        opts = server.target_options()
        afs = fsspec.filesystem("alluxiofs", target_protocol="s3", target_options=opts)
        afs0 = fsspec.filesystem(
            "alluxiofs", target_protocol="s3", target_options=opts, parquet_prefetch_depth=0
        )
        ep = opts["client_kwargs"]["endpoint_url"]
        arrow_s3 = pafs.S3FileSystem(
            access_key=opts["key"],
            secret_key=opts["secret"],
            endpoint_override=ep.split("://", 1)[1],
            scheme=ep.split("://", 1)[0],
            region=server.region,
        )
        want = pq.read_table(io.BytesIO(data), columns=PROJECTED)

        def check(t):
            assert t.equals(want)

        def opf(fs):
            with open_parquet_file(key, fs=fs, columns=PROJECTED) as f:
                check(pq.read_table(f, columns=PROJECTED))

        # Cold: the first read through a fresh worker (reads through to S3).
        before = afs.stats()["bytes_read"]
        t0 = time.perf_counter()
        check(pq.read_table(url, filesystem=afs, columns=PROJECTED))
        cold = time.perf_counter() - t0
        first_bytes = afs.stats()["bytes_read"] - before
        before = afs.stats()["bytes_read"]
        check(pq.read_table(url, filesystem=afs, columns=PROJECTED))
        again_bytes = afs.stats()["bytes_read"] - before
        results = {
            "alluxiofs warm (prefetch depth 2)": timed(
                lambda: check(pq.read_table(url, filesystem=afs, columns=PROJECTED)), args.repeat
            )[0],
            "alluxiofs warm, prefetch off": timed(
                lambda: check(pq.read_table(url, filesystem=afs0, columns=PROJECTED)), args.repeat
            )[0],
            "alluxiofs warm + open_parquet_file": timed(lambda: opf(afs), args.repeat)[0],
            "alluxiofs cold (first read)": cold,
            "s3fs read_table": timed(
                lambda: check(pq.read_table(key, filesystem=s3, columns=PROJECTED)), args.repeat
            )[0],
            "s3fs + open_parquet_file": timed(lambda: opf(s3), args.repeat)[0],
            "pyarrow S3FileSystem (native)": timed(
                lambda: check(pq.read_table(key, filesystem=arrow_s3, columns=PROJECTED)),
                args.repeat,
            )[0],
        }
        base = results["alluxiofs warm (prefetch depth 2)"]
        print(f"\n{'reader':40s} {'seconds':>9s} {'x alluxiofs warm':>17s}")
        for name, secs in results.items():
            print(f"{name:40s} {secs:9.4f} {secs / base:17.2f}")
        print(
            f"\nover-read (bytes asked of the workers / needed chunk bytes): "
            f"first read {first_bytes / needed:.3f}, footer kept {again_bytes / needed:.3f}"
        )
        if args.worker_rtt_ms > 0:
            remote_worker(server, key, url, want, needed, args)
        if args.trace:
            trace_calls(
                afs,
                url,
                {"target_protocol": "s3", "target_options": opts},
            )
    finally:
        alluxiofs.embedded.stop_all()
        server.stop()


if __name__ == "__main__":
    main()
