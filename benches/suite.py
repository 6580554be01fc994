"""alluxiofs against the readers users would otherwise pick, side by side in one run.

    .bench-venv/bin/python benches/suite.py [--scale 0.25] [--repeat 3] [--rtt-ms 10]
                                            [--rate 1gbit] [--no-netns] [--quick]

``make bench`` and ``make bench-quick`` run it with a release build of
alluxiofs installed in ``.bench-venv``. See ``benches/README.md`` and
``docs/benchmarks.md`` for the setup, the method and the latest results.

What it does:

1. network: ``scripts/bench-net.sh up`` puts the S3 server (Garage) in its own
   network namespace behind a veth pair shaped by ``tc tbf`` (``--rate``), and
   ``alluxiofs-delay-proxy`` adds ``--rtt-ms`` in front of it; every reader and
   worker reaches S3 through the proxy. Without namespaces: loopback + proxy.
2. datasets (sizes times ``--scale``, generated once into
   ``benches/results/tmp/data`` and uploaded to the fresh server): ``small``
   10,000 files of 100 KiB; ``large`` four files of 512 MiB; ``parquet`` 8
   files of ~128 MiB with 20 columns (2 read); ``random`` 4 KiB reads in one
   1 GiB file.
3. readers, each measurement a fresh subprocess (``benches/readers.py``) run
   ``--repeat`` times: raw local disk, s3fs, ``simplecache::s3`` and
   ``blockcache::s3`` (cold and warm epoch), obstore's fsspec adapter, the
   PyPI alluxiofs client 1.0.3 on our workers (in its own venv), and alluxiofs
   with 1 and 3 workers (epoch 1 cold, epochs 2-3 warm). Workers restart with
   empty caches for every repeat.
4. results: ``benches/results/<date>-<host>.json`` (every epoch of every run
   plus the summary), then ``benches/report.py`` writes the table into
   ``docs/benchmarks.md`` and the charts ``docs/img/bench-*.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import env  # noqa: E402  (benches/env.py)
import report  # noqa: E402  (benches/report.py)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BUCKET = "bench"
# The PyPI client 1.0.3 with pyarrow, in its own venv (make bench-pypi-venv).
COMPAT_PY = Path.home() / ".cache" / "alluxiofs" / "bench-pypi-1.0.3" / "bin" / "python"

# (id, reader kind, epochs, workers): the readers of one run, in order.
READERS = [
    ("raw", "raw", 1, 0),
    ("s3fs", "s3fs", 1, 0),
    ("simplecache", "simplecache", 2, 0),
    ("blockcache", "blockcache", 2, 0),
    ("obstore", "obstore", 1, 0),
    ("pypi-1w", "pypi", 3, 1),
    ("alluxiofs-1w", "alluxiofs", 3, 1),
    ("alluxiofs-3w", "alluxiofs", 3, 3),
]
DATASETS = ["small", "large", "parquet", "random"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="alluxiofs benchmark suite")
    ap.add_argument("--scale", type=float, default=0.25, help="dataset sizes x this (0.25)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (3)")
    ap.add_argument("--rtt-ms", type=float, default=10.0, help="proxy round trip (10 ms)")
    ap.add_argument("--rate", default="1gbit", help="tc tbf rate of the S3 link (1gbit)")
    ap.add_argument("--no-netns", action="store_true", help="S3 server on loopback")
    ap.add_argument("--concurrency", type=int, default=16, help="reader threads (16)")
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset")
    ap.add_argument("--readers", default=",".join(r[0] for r in READERS), help="subset")
    ap.add_argument("--quick", action="store_true", help="label the run as bench-quick")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per reader run (900)")
    ap.add_argument("--workdir", type=Path, default=HERE / "results" / "tmp")
    ap.add_argument("--out", type=Path, default=None, help="results JSON path")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--no-doc", action="store_true", help="write the JSON only")
    return ap.parse_args(argv)


# -- datasets ----------------------------------------------------------------------


def dataset_spec(scale: float) -> dict:
    """Sizes of every dataset at ``scale`` (1.0 = the sizes of the issue)."""
    return {
        "small": {"files": max(200, int(10_000 * scale)), "size": 100 * KiB},
        "large": {"files": 4, "size": max(16 * MiB, int(512 * MiB * scale) // MiB * MiB)},
        "parquet": {"files": 8, "rows": max(16_384, int(838_860 * scale)), "columns": 20},
        "random": {
            "size": max(64 * MiB, int(GiB * scale) // MiB * MiB),
            "reads": max(500, int(8_000 * scale)),
        },
    }


def generate(data: Path, spec: dict) -> dict[str, list[tuple[str, int]]]:
    """Write the datasets under ``data`` (reused when the spec is unchanged)."""
    manifest = data / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if m.get("spec") == spec:
            return {k: [tuple(x) for x in v] for k, v in m["files"].items()}
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    rng = np.random.default_rng(2026)
    files: dict[str, list[tuple[str, int]]] = {}
    t0 = time.perf_counter()
    s = spec["small"]
    files["small"] = []
    for i in range(s["files"]):
        rel = f"small/shard-{i % 64:02d}/img-{i:06d}.bin"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(rng.bytes(s["size"]))
        files["small"].append((rel, s["size"]))
    files["large"] = []
    (data / "large").mkdir()
    for i in range(spec["large"]["files"]):
        rel = f"large/model-{i}.safetensors"
        with open(data / rel, "wb") as f:
            left = spec["large"]["size"]
            while left:
                n = min(left, 64 * MiB)
                f.write(rng.bytes(n))
                left -= n
        files["large"].append((rel, spec["large"]["size"]))
    import pyarrow as pa
    import pyarrow.parquet as pq

    files["parquet"] = []
    (data / "parquet").mkdir()
    p = spec["parquet"]
    for i in range(p["files"]):
        rel = f"parquet/part-{i:03d}.parquet"
        cols = rng.standard_normal((p["columns"], p["rows"]))
        table = pa.table({f"c{j:02d}": cols[j] for j in range(p["columns"])})
        pq.write_table(table, data / rel, row_group_size=131_072)
        files["parquet"].append((rel, (data / rel).stat().st_size))
    files["random"] = []
    (data / "random").mkdir()
    rel = "random/tokens.bin"
    with open(data / rel, "wb") as f:
        left = spec["random"]["size"]
        while left:
            n = min(left, 64 * MiB)
            f.write(rng.bytes(n))
            left -= n
    files["random"].append((rel, spec["random"]["size"]))
    manifest.write_text(json.dumps({"spec": spec, "files": files}))
    print(f"bench: generated datasets in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return files


def upload(server, data: Path, files: dict) -> None:
    """Put every dataset file into the bucket, straight to the server (not via the proxy)."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=server.access_key,
        secret=server.secret_key,
        client_kwargs={"endpoint_url": server.endpoint_url, "region_name": server.region},
        skip_instance_cache=True,
    )
    t0 = time.perf_counter()
    for name in files:
        fs.put(str(data / name), f"{BUCKET}/{name}", recursive=True)
    total = sum(sz for v in files.values() for _, sz in v)
    dt_s = time.perf_counter() - t0
    print(f"bench: uploaded {total / 1e9:.2f} GB in {dt_s:.0f}s", file=sys.stderr)


# -- runs --------------------------------------------------------------------------


def run_reader(cfg: dict, python: str, timeout: float, scratch: Path) -> dict:
    """One measurement in a fresh process; its JSON result (or an error)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=scratch, delete=False) as f:
        json.dump(cfg, f)
    try:
        out = subprocess.run(
            [python, str(HERE / "readers.py"), f.name],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=scratch,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s", "epochs": []}
    finally:
        os.unlink(f.name)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"exit {out.returncode}: {out.stderr[-2000:]}", "epochs": []}


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    datasets = [d for d in args.datasets.split(",") if d]
    readers = [r for r in READERS if r[0] in args.readers.split(",")]
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    spec = dataset_spec(args.scale)
    files = generate(work / "data", spec)
    started = dt.datetime.now(dt.UTC)

    net = env.Network(use_netns=not args.no_netns, rate=args.rate)
    runs: list[dict] = []
    try:
        garage_dir = work / "garage"
        shutil.rmtree(garage_dir, ignore_errors=True)
        server = env.start_garage(net, garage_dir, BUCKET)
        upload(server, work / "data", files)
        proxy = env.DelayProxy(server.endpoint_url.split("//", 1)[1], args.rtt_ms, work)
        endpoint = f"http://{proxy.addr}"
        s3 = {
            "endpoint": endpoint,
            "key": server.access_key,
            "secret": server.secret_key,
            "region": server.region,
        }
        s3_env = dict(server.worker_env(), AWS_ENDPOINT=endpoint, AWS_ENDPOINT_URL=endpoint)
        scratch = work / "scratch"
        scratch.mkdir(exist_ok=True)
        for ds in datasets:
            entries = files[ds]
            for rid, kind, epochs, n_workers in readers:
                if kind == "pypi" and not COMPAT_PY.exists():
                    runs.append(
                        {
                            "dataset": ds,
                            "reader": rid,
                            "repeat": 0,
                            "epochs": [],
                            "error": f"{COMPAT_PY} missing (make bench-pypi-venv)",
                        }
                    )
                    continue
                for rep in range(1, args.repeat + 1):
                    if kind == "raw":
                        paths = [str(work / "data" / rel) for rel, _ in entries]
                    elif kind in ("alluxiofs", "pypi"):
                        paths = [f"s3://{BUCKET}/{rel}" for rel, _ in entries]
                    else:
                        paths = [f"{BUCKET}/{rel}" for rel, _ in entries]
                    cfg = {
                        "reader": kind,
                        "dataset": ds,
                        "epochs": epochs,
                        "paths": paths,
                        "sizes": [sz for _, sz in entries],
                        "s3": s3,
                        "concurrency": args.concurrency,
                        "columns": ["c03", "c11"],
                        "random_reads": spec["random"]["reads"],
                        "seed": rep,
                        "scratch": str(scratch),
                        "probe": {"proxy_stats": str(proxy.stats_path)},
                    }
                    cluster = None
                    if n_workers:
                        cluster = env.Cluster(
                            n_workers, f"s3://{BUCKET}", s3_env, work / "workers", capacity="64GiB"
                        )
                        cfg["workers"] = {"hosts": cluster.hosts, "port": cluster.port}
                        cfg["probe"].update(worker_pids=cluster.pids(), worker_urls=cluster.urls())
                    python = str(COMPAT_PY) if kind == "pypi" else sys.executable
                    t0 = time.perf_counter()
                    try:
                        res = run_reader(cfg, python, args.timeout, scratch)
                    finally:
                        if cluster is not None:
                            cluster.stop()
                        for p in scratch.glob("bench-*"):
                            shutil.rmtree(p, ignore_errors=True)
                    res.update(dataset=ds, reader=rid, repeat=rep, workers=n_workers)
                    res.pop("traceback", None) if "error" not in res else None
                    runs.append(res)
                    line = ", ".join(
                        f"e{e['epoch']} {e['bytes'] / e['wall_s'] / 1e6:.0f} MB/s"
                        for e in res.get("epochs", [])
                    )
                    print(
                        f"bench: {ds:8s} {rid:13s} #{rep} {time.perf_counter() - t0:6.1f}s "
                        f"{line} {res.get('error', '')}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if "error" in res and rep == 1:
                        break  # a reader that fails fails every time: say so once
    finally:
        net_note = net.note
        env._cleanup_all()

    host = socket.gethostname()
    results = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": host,
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "quick": args.quick,
            "scale": args.scale,
            "repeat": args.repeat,
            "rtt_ms": args.rtt_ms,
            "rate": args.rate if "namespace" in net_note else None,
            "network": net_note,
            "concurrency": args.concurrency,
            "spec": spec,
            "dataset_bytes": {k: sum(sz for _, sz in v) for k, v in files.items()},
            "versions": report.versions(),
            "commit": _git("rev-parse", "--short", "HEAD"),
            # make bench builds the working tree; say so when it differs from the commit.
            "build": os.environ.get("ALLUXIOFS_BENCH_BUILD")
            or (
                "release, working tree with local changes"
                if _git("status", "--porcelain", "--untracked-files=no")
                else "release, working tree = commit"
            ),
        },
        "runs": runs,
    }
    results["summary"] = report.summarize(results)
    name = f"{started:%Y-%m-%d}-{host}{'-quick' if args.quick else ''}.json"
    out = args.out or HERE / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"bench: results in {out}", file=sys.stderr)
    if not args.no_doc:
        report.write_doc(results, out, args.doc)
        print(f"bench: table in {args.doc}", file=sys.stderr)
    print(report.markdown_tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
