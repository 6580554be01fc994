"""The worker's S3 endpoint against our fsspec client and against S3 clients straight to the UFS.

    make bench-s3                           # or: .bench-venv/bin/python benches/s3_api.py
    .bench-venv/bin/python benches/s3_api.py --quick --repeat 3

The remote UFS is the suite's (``benches/env.py``): Garage in a network
namespace behind a veth shaped by ``tc tbf`` (``--rate``), reached through
``alluxiofs-delay-proxy`` (``--rtt-ms``); without root, loopback plus the
proxy. One release-build worker (``env.Cluster``, the wheel of
``.bench-venv``) mounts the bucket and serves its S3 endpoint on a free port
(``--s3-port 0``), with SigV4 keys given in ``ALLUXIOFS_WORKER_S3_ACCESS_KEY``
/ ``ALLUXIOFS_WORKER_S3_SECRET_KEY``, and a metadata TTL longer than the run
(``--metadata-ttl``, default 1h: past the worker's default of 60 s a warm
pass would revalidate every file with the UFS, one HEAD each). Every client
of the endpoint uses the UFS's bucket and object keys: only the endpoint URL
(and the access keys) change.

Dataset (generated once into ``benches/results/tmp/s3api-data``, uploaded
straight to Garage): ``--parquet-files`` Parquet files of ``--parquet-rows``
rows, 20 float64 columns, row groups of ``--row-group`` rows; ``--small``
files of ``--small-kib`` KiB.

Measures, each ``--repeat`` times (median; the readers interleaved per
repeat, so drift hits all of them alike):

- **parquet**: ``pq.read_table(path, columns=[2 of 20], pre_buffer=True)`` of
  every file, one after the other (``--passes`` times per run), by
  ``pyarrow.fs.S3FileSystem`` to the worker's endpoint (warm: after one
  priming pass), by our fsspec filesystem (``fsspec.filesystem("alluxiofs",
  ...)`` as ``benches/readers.py`` builds it; warm, same worker), and by
  ``S3FileSystem`` straight to the UFS (through the proxy: every read is
  remote). MB/s of the projected column chunks.
- **small**: every small file read whole (``get_object``, ``obstore.get``)
  by a pool of ``--threads`` threads, by boto3 and by obstore, to the
  endpoint (warm) and straight to the UFS; files/s and MB/s. Our fsspec
  client's ``cat_file`` (warm) is a reference row.

The first pass through the endpoint (the worker reading through to the
UFS) is reported once, as "cold". UFS requests (the proxy's counter) are
kept per measure: a warm measure through the worker should have none.
Prints the table with the ratios and a line per target; writes
``benches/results/s3-api-<date>.json`` (``-quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import env  # noqa: E402  (benches/env.py: namespace, Garage, delay proxy, workers)
import report  # noqa: E402  (benches/report.py: package versions)
import suite  # noqa: E402  (benches/suite.py: upload, bucket name)

KiB, MiB = 1 << 10, 1 << 20
BUCKET = suite.BUCKET
COLUMNS = [f"c{j:02d}" for j in range(20)]
PROJECTED = ["c03", "c11"]  # the suite's two columns
# The endpoint's keys (the worker checks SigV4 against them; not the UFS's).
EP_KEY, EP_SECRET = "s3apibench", "s3apibench-secret-key-0123456789"
EP_REGION = "us-east-1"
# (measure, peer, the least ratio of their MB/s the issue asks)
TARGETS = [
    ("parquet_endpoint_warm", "parquet_fsspec_warm", 1.3),
    ("parquet_endpoint_warm", "parquet_ufs_pyarrow", 10.0),
]


# -- dataset -----------------------------------------------------------------------


def generate(data: Path, spec: dict) -> dict[str, list[tuple[str, int]]]:
    """Write the dataset under ``data`` (reused while the spec is unchanged)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = data / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if m.get("spec") == spec:
            return {k: [tuple(x) for x in v] for k, v in m["files"].items()}
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    rng = np.random.default_rng(2027)
    files: dict[str, list[tuple[str, int]]] = {"parquet": [], "small": []}
    (data / "parquet").mkdir()
    for i in range(spec["parquet_files"]):
        rel = f"parquet/part-{i:03d}.parquet"
        cols = rng.standard_normal((len(COLUMNS), spec["parquet_rows"]))
        table = pa.table({c: cols[j] for j, c in enumerate(COLUMNS)})
        pq.write_table(table, data / rel, row_group_size=spec["row_group"])
        files["parquet"].append((rel, (data / rel).stat().st_size))
    for i in range(spec["small"]):
        rel = f"small/shard-{i % 32:02d}/obj-{i:06d}.bin"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(rng.bytes(spec["small_kib"] * KiB))
        files["small"].append((rel, spec["small_kib"] * KiB))
    manifest.write_text(json.dumps({"spec": spec, "files": files}))
    return files


def projected_bytes(path: Path) -> int:
    """Bytes of the projected columns' chunks in one file (what a reader must fetch)."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    idx = [COLUMNS.index(c) for c in PROJECTED]
    return sum(
        md.row_group(rg).column(j).total_compressed_size
        for rg in range(md.num_row_groups)
        for j in idx
    )


# -- clients -----------------------------------------------------------------------


def arrow_s3(endpoint: str, key: str, secret: str, region: str):
    from pyarrow import fs as pafs

    scheme, addr = endpoint.split("://", 1)
    return pafs.S3FileSystem(
        access_key=key, secret_key=secret, endpoint_override=addr, scheme=scheme, region=region
    )


def boto3_client(endpoint: str, key: str, secret: str, region: str, threads: int):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=threads * 2,
            retries={"max_attempts": 2},
        ),
    )


def obstore_store(endpoint: str, key: str, secret: str, region: str):
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=endpoint,
        access_key_id=key,
        secret_access_key=secret,
        region=region,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


# -- measures ----------------------------------------------------------------------


def parquet_pass(
    read: Callable[[str], object], keys: list[str], nbytes: int, passes: int = 1
) -> dict:
    """``read(key)`` of every file in turn, ``passes`` times; MB/s of the projected chunks."""
    t = time.perf_counter()
    rows = sum(read(k).num_rows for _ in range(passes) for k in keys)
    s = time.perf_counter() - t
    return {"seconds": s, "MBps": nbytes * passes / s / 1e6, "rows": rows, "passes": passes}


def small_pass(get: Callable[[str], int], keys: list[str], size: int, threads: int) -> dict:
    """``get(key)`` of every small file by ``threads`` threads; files/s and MB/s."""
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(get, keys))
    s = time.perf_counter() - t
    if n != size * len(keys):
        raise RuntimeError(f"read {n} bytes of {len(keys)} files, expected {size * len(keys)}")
    return {"seconds": s, "MBps": n / s / 1e6, "files_per_s": len(keys) / s}


def ufs_requests(proxy: env.DelayProxy) -> int:
    return int(proxy.stats().get("http_requests", 0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small dataset (a first try)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measure (5, median)")
    ap.add_argument("--parquet-files", type=int, default=4, help="Parquet files (4)")
    ap.add_argument(
        "--parquet-rows", type=int, default=None, help="rows each (209,715: 32 MiB of values)"
    )
    ap.add_argument("--row-group", type=int, default=65_536, help="rows per row group (65,536)")
    ap.add_argument(
        "--passes",
        type=int,
        default=10,
        help="passes over the Parquet files per run (10: a warm pass is ~50 ms, too short "
        "to time alone on a busy machine)",
    )
    ap.add_argument("--small", type=int, default=None, help="small files (2,000)")
    ap.add_argument("--small-kib", type=int, default=100, help="KiB each (100)")
    ap.add_argument("--threads", type=int, default=16, help="small-file reader threads (16)")
    ap.add_argument("--rtt-ms", type=float, default=10.0, help="proxy round trip (10 ms)")
    ap.add_argument("--rate", default="1gbit", help="tc tbf rate of the S3 link (1gbit)")
    ap.add_argument("--no-netns", action="store_true", help="S3 server on loopback")
    ap.add_argument(
        "--metadata-ttl",
        default="1h",
        help="the worker's --metadata-ttl (1h: longer than the run, so no warm pass "
        "revalidates every file with the UFS, as one would past the default 60s)",
    )
    ap.add_argument(
        "--target-dir",
        type=Path,
        default=Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")),
        help="cargo target dir with release/alluxiofs-delay-proxy ($CARGO_TARGET_DIR, ./target)",
    )
    ap.add_argument("--workdir", type=Path, default=HERE / "results" / "tmp")
    ap.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = ap.parse_args(argv)
    if args.parquet_rows is None:
        args.parquet_rows = 52_429 if args.quick else 209_715
    if args.small is None:
        args.small = 400 if args.quick else 2_000
    if args.quick:
        args.row_group = min(args.row_group, 16_384)
    env.PROXY_BIN = args.target_dir / "release" / "alluxiofs-delay-proxy"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    spec = {
        "parquet_files": args.parquet_files,
        "parquet_rows": args.parquet_rows,
        "row_group": args.row_group,
        "small": args.small,
        "small_kib": args.small_kib,
    }
    work = args.workdir / "s3api"
    data = args.workdir / "s3api-data"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files = generate(data, spec)
    pq_keys = [rel for rel, _ in files["parquet"]]
    pq_need = sum(projected_bytes(data / rel) for rel in pq_keys)
    small_keys = [rel for rel, _ in files["small"]]
    small_size = spec["small_kib"] * KiB
    print(f"s3api: dataset ready in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    started = dt.datetime.now(dt.UTC)

    import fsspec
    import obstore
    import pyarrow.parquet as pq

    net = env.Network(use_netns=not args.no_netns, rate=args.rate)
    runs: dict[str, list[dict]] = {}
    ufs_req: dict[str, int] = {}
    cold: dict[str, dict] = {}
    worker_info: dict = {}
    try:
        garage_dir = work / "garage"
        shutil.rmtree(garage_dir, ignore_errors=True)
        server = env.start_garage(net, garage_dir, BUCKET)
        suite.upload(server, data, files)
        proxy = env.DelayProxy(server.endpoint_url.split("//", 1)[1], args.rtt_ms, work)
        ufs = f"http://{proxy.addr}"
        s3_env = dict(
            server.worker_env(),
            AWS_ENDPOINT=ufs,
            AWS_ENDPOINT_URL=ufs,
            ALLUXIOFS_WORKER_S3_ACCESS_KEY=EP_KEY,
            ALLUXIOFS_WORKER_S3_SECRET_KEY=EP_SECRET,
            ALLUXIOFS_WORKER_METADATA_TTL=args.metadata_ttl,
        )
        cluster = env.Cluster(1, f"s3://{BUCKET}", s3_env, work / "workers", capacity="16GiB")
        w = cluster.workers[0]
        if w.s3_port is None:
            raise RuntimeError("the worker has no S3 endpoint (no s3_port in its ready file)")
        ep = w.s3_url
        worker_info = {"addr": w.addr, "s3": ep}
        print(f"s3api: worker {w.addr}, S3 endpoint {ep}, UFS {ufs}", file=sys.stderr)

        ufs_keys = (server.access_key, server.secret_key, server.region)
        ep_keys = (EP_KEY, EP_SECRET, EP_REGION)
        pa_ep = arrow_s3(ep, *ep_keys)
        pa_ufs = arrow_s3(ufs, *ufs_keys)
        afs = fsspec.filesystem(
            "alluxiofs",
            worker_hosts=w.addr,
            target_protocol="s3",
            target_options=server.target_options() | {"client_kwargs": {
                "endpoint_url": ufs, "region_name": server.region}},
            skip_instance_cache=True,
        )  # fmt: skip
        bt_ep = boto3_client(ep, *ep_keys, args.threads)
        bt_ufs = boto3_client(ufs, *ufs_keys, args.threads)
        ob_ep = obstore_store(ep, *ep_keys)
        ob_ufs = obstore_store(ufs, *ufs_keys)

        def pq_reader(fs, prefix: str) -> Callable[[str], object]:
            return lambda k: pq.read_table(
                f"{prefix}{k}", columns=PROJECTED, filesystem=fs, pre_buffer=True
            )

        parquet = {
            "parquet_endpoint_warm": pq_reader(pa_ep, f"{BUCKET}/"),
            "parquet_fsspec_warm": pq_reader(afs, f"s3://{BUCKET}/"),
            "parquet_ufs_pyarrow": pq_reader(pa_ufs, f"{BUCKET}/"),
        }

        def body_len(r: dict) -> int:
            return len(r["Body"].read())

        small = {
            "small_boto3_endpoint_warm": lambda k: body_len(bt_ep.get_object(Bucket=BUCKET, Key=k)),
            "small_boto3_ufs": lambda k: body_len(bt_ufs.get_object(Bucket=BUCKET, Key=k)),
            "small_obstore_endpoint_warm": lambda k: len(obstore.get(ob_ep, k).bytes()),
            "small_obstore_ufs": lambda k: len(obstore.get(ob_ufs, k).bytes()),
            "small_fsspec_warm": lambda k: len(afs.cat_file(f"s3://{BUCKET}/{k}")),
        }

        # The same bytes every way: each client's first table against the UFS's.
        want = [parquet["parquet_ufs_pyarrow"](k) for k in pq_keys]
        # Cold: the first pass through the endpoint reads through to the UFS.
        before = ufs_requests(proxy)
        cold["parquet_endpoint_cold"] = parquet_pass(
            parquet["parquet_endpoint_warm"], pq_keys, pq_need
        )
        cold["parquet_endpoint_cold"]["ufs_requests"] = ufs_requests(proxy) - before
        before = ufs_requests(proxy)
        cold["small_boto3_endpoint_cold"] = small_pass(
            small["small_boto3_endpoint_warm"], small_keys, small_size, args.threads
        )
        cold["small_boto3_endpoint_cold"]["ufs_requests"] = ufs_requests(proxy) - before
        # Priming: every warm reader once (its connections, the worker's metadata).
        for name, read in parquet.items():
            for k, t in zip(pq_keys, want, strict=True):
                got = read(k)
                if not got.equals(t):
                    raise RuntimeError(f"{name}: {k} differs from the UFS's table")
        for name, get in small.items():
            if name.endswith("_warm"):
                small_pass(get, small_keys, small_size, args.threads)
        for rep in range(1, args.repeat + 1):
            for name, read in parquet.items():
                before = ufs_requests(proxy)
                r = parquet_pass(read, pq_keys, pq_need, args.passes)
                ufs_req[name] = ufs_req.get(name, 0) + ufs_requests(proxy) - before
                runs.setdefault(name, []).append(r)
                print(f"s3api: #{rep} {name:28s} {r['MBps']:8.1f} MB/s", file=sys.stderr)
            for name, get in small.items():
                before = ufs_requests(proxy)
                r = small_pass(get, small_keys, small_size, args.threads)
                ufs_req[name] = ufs_req.get(name, 0) + ufs_requests(proxy) - before
                runs.setdefault(name, []).append(r)
                print(
                    f"s3api: #{rep} {name:28s} {r['files_per_s']:8.0f} files/s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        net_note = net.note
        env._cleanup_all()

    summary = {
        name: {
            "MBps": statistics.median(r["MBps"] for r in rs),
            "MBps_min": min(r["MBps"] for r in rs),
            "MBps_max": max(r["MBps"] for r in rs),
            **(
                {"files_per_s": statistics.median(r["files_per_s"] for r in rs)}
                if "files_per_s" in rs[0]
                else {}
            ),
            "ufs_requests_per_run": ufs_req[name] / len(rs),
        }
        for name, rs in runs.items()
    }
    targets = []
    for a, b, want_ratio in TARGETS:
        ratio = summary[a]["MBps"] / summary[b]["MBps"]
        targets.append({"measure": a, "peer": b, "ratio": ratio, "target": want_ratio,
                        "met": ratio >= want_ratio})  # fmt: skip
    results = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "quick": args.quick,
            "repeat": args.repeat,
            "rtt_ms": args.rtt_ms,
            "rate": args.rate if "namespace" in net_note else None,
            "network": net_note,
            "threads": args.threads,
            "parquet_passes": args.passes,
            "worker_metadata_ttl": args.metadata_ttl,
            "spec": spec,
            "columns": PROJECTED,
            "parquet_bytes": sum(sz for _, sz in files["parquet"]),
            "parquet_projected_bytes": pq_need,
            "small_bytes": small_size * len(small_keys),
            "worker": worker_info,
            "endpoint_auth": "SigV4 (ALLUXIOFS_WORKER_S3_ACCESS_KEY/SECRET_KEY)",
            "versions": report.versions() | {"boto3": _version("boto3")},
            "commit": suite._git("rev-parse", "--short", "HEAD"),
        },
        "runs": runs,
        "cold": cold,
        "summary": summary,
        "targets": targets,
    }
    name = f"s3-api-{started:%Y-%m-%d}{'-quick' if args.quick else ''}.json"
    out = args.out or HERE / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(table(summary, cold))
    print()
    for t in targets:
        print(
            f"target: {t['measure']} >= {t['target']:g}x {t['peer']}: {t['ratio']:.2f}x, "
            f"{'met' if t['met'] else 'MISSED'}"
        )
    print(f"\ns3api: results in {out}", file=sys.stderr)
    return 0


def _version(pkg: str) -> str:
    import importlib.metadata

    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version(pkg)
    return "missing"


def table(summary: dict, cold: dict) -> str:
    """Markdown: per comparison the endpoint's number, the peer's, and their ratio."""
    rows = [
        ("Parquet 2/20 cols, MB/s of their chunks", "parquet_endpoint_warm", "parquet_fsspec_warm",
         "MBps"),
        ("Parquet 2/20 cols, MB/s of their chunks", "parquet_endpoint_warm", "parquet_ufs_pyarrow",
         "MBps"),
        ("small files/s", "small_boto3_endpoint_warm", "small_boto3_ufs", "files_per_s"),
        ("small files/s", "small_obstore_endpoint_warm", "small_obstore_ufs", "files_per_s"),
        ("small files/s", "small_boto3_endpoint_warm", "small_fsspec_warm", "files_per_s"),
        ("small files/s", "small_obstore_endpoint_warm", "small_fsspec_warm", "files_per_s"),
        ("Parquet MB/s, cold (1 run)", "parquet_endpoint_cold", "parquet_ufs_pyarrow", "MBps"),
        ("small files/s, cold (1 run)", "small_boto3_endpoint_cold", "small_boto3_ufs",
         "files_per_s"),
    ]  # fmt: skip
    vals = summary | cold
    lines = [
        "| measure | endpoint reader | value | peer | value | endpoint / peer |",
        "|---|---|---|---|---|---|",
    ]

    def fmt(v: float) -> str:
        return f"{v:,.2f}" if v < 10 else f"{v:,.0f}"

    for label, a, b, key in rows:
        if a not in vals or b not in vals:
            continue
        va, vb = vals[a][key], vals[b][key]
        lines.append(f"| {label} | {a} | {fmt(va)} | {b} | {fmt(vb)} | {va / vb:.2f}x |")
    lines.append("")
    lines.append("| measure | MB/s (median) | min | max | UFS requests per run |")
    lines.append("|---|---|---|---|---|")
    for name, s in summary.items():
        lines.append(
            f"| {name} | {fmt(s['MBps'])} | {fmt(s['MBps_min'])} | {fmt(s['MBps_max'])} "
            f"| {s['ufs_requests_per_run']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
