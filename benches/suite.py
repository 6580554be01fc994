"""alluxiofs against the readers users would otherwise pick, side by side in one run.

    .bench-venv/bin/python benches/suite.py [--scale 0.25] [--repeat 3] [--rtt-ms 10]
                                            [--rate 1gbit] [--no-netns] [--quick]
                                            [--datasets small,...] [--readers raw,...] [--ray]

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
   with 1 and 3 workers (epoch 1 cold, epochs 2-3 warm) on the reader's node
   (the same-node socket is theirs to use). For ``small`` also: alluxiofs with
   ``fs.prefetch`` (cold, warm), and alluxiofs on a *remote* worker (a network
   namespace of its own whose socket the reader cannot see: ``env.RemoteCluster``)
   read per file and with batched ``fs.cat``. Workers restart with empty caches
   for every repeat. A reader whose API or setup is missing is reported as
   failing, like any other failure, and the run goes on.
4. ``--ray``: ``benches/ray/epochs.py`` at its default scale (its own Garage on
   loopback), its results kept in the JSON for the Ray row of the targets.
5. results: ``benches/results/<date>-<host>.json`` (every epoch of every run
   plus the summary), then ``benches/report.py`` writes the table into
   ``docs/benchmarks.md`` and the charts ``docs/img/bench-*.png``.
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

# (id, reader kind, epochs, workers, options): the readers of one run, in order.
# Options: "datasets" (only these), "remote" (workers in namespaces of their own,
# env.RemoteCluster), and what readers.py reads from the config ("mode", "batch",
# "prefetch_depth").
READERS = [
    ("raw", "raw", 1, 0, {}),
    ("s3fs", "s3fs", 1, 0, {}),
    ("simplecache", "simplecache", 2, 0, {}),
    ("blockcache", "blockcache", 2, 0, {}),
    ("obstore", "obstore", 1, 0, {}),
    ("pypi-1w", "pypi", 3, 1, {}),
    ("alluxiofs-1w", "alluxiofs", 3, 1, {}),
    ("alluxiofs-3w", "alluxiofs", 3, 3, {}),
    (
        "alluxiofs-prefetch",
        "alluxiofs",
        2,
        1,
        {"datasets": ["small"], "mode": "prefetch", "prefetch_depth": 64},
    ),
    ("alluxiofs-remote", "alluxiofs", 3, 1, {"datasets": ["small"], "remote": True}),
    (
        "alluxiofs-remote-batched",
        "alluxiofs",
        3,
        1,
        {"datasets": ["small"], "remote": True, "mode": "batched", "batch": 64},
    ),
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
    ap.add_argument(
        "--ray", action="store_true", help="also run benches/ray/epochs.py (~5 min, needs ray)"
    )
    return ap.parse_args(argv)


def run_ray(timeout: float, scratch: Path) -> dict:
    """``benches/ray/epochs.py`` at its default scale; its JSON (or an error)."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return {"error": "ray is not installed in this venv (requirements-bench.txt)"}
    out_json = scratch / "ray.json"
    with contextlib.suppress(FileNotFoundError):
        out_json.unlink()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    try:
        out = subprocess.run(
            [sys.executable, str(HERE / "ray" / "epochs.py"), "--json", str(out_json)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=scratch,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    if out.returncode != 0 or not out_json.exists():
        return {"error": f"exit {out.returncode}: {out.stderr[-2000:]}"}
    return json.loads(out_json.read_text())


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


def start_cluster(n: int, opts: dict, s3_env: dict, work: Path, target: str, rtt_ms: float):
    """The workers of one measurement: on this node, or remote (``opts["remote"]``)."""
    mount = f"s3://{BUCKET}"
    if opts.get("remote"):
        return env.RemoteCluster(
            n, mount, s3_env, work / "workers", capacity="64GiB", target=target, rtt_ms=rtt_ms
        )
    return env.Cluster(n, mount, s3_env, work / "workers", capacity="64GiB")


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    datasets = [d for d in args.datasets.split(",") if d]
    unknown = set(args.readers.split(",")) - {r[0] for r in READERS}
    if unknown:
        print(f"bench: unknown readers {sorted(unknown)}", file=sys.stderr)
        return 2
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
        garage_addr = server.endpoint_url.split("//", 1)[1]
        proxy = env.DelayProxy(garage_addr, args.rtt_ms, work)
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
            for rid, kind, epochs, n_workers, opts in readers:
                if ds not in opts.get("datasets", DATASETS):
                    continue
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
                        "probe": {"proxy_stats": [str(proxy.stats_path)]},
                        **{k: v for k, v in opts.items() if k not in ("datasets", "remote")},
                    }
                    python = str(COMPAT_PY) if kind == "pypi" else sys.executable
                    t0 = time.perf_counter()
                    cluster = None
                    try:
                        if n_workers:
                            cluster = start_cluster(
                                n_workers, opts, s3_env, work, garage_addr, args.rtt_ms
                            )
                            cfg["workers"] = {
                                "hosts": cluster.hosts,
                                "port": getattr(cluster, "port", 0),
                                "addrs": cluster.addrs(),
                            }
                            cfg["probe"]["worker_pids"] = cluster.pids()
                            cfg["probe"]["worker_urls"] = cluster.urls()
                            if opts.get("remote"):
                                cfg["probe"]["proxy_stats"] += cluster.proxy_stats_paths()
                    except (OSError, RuntimeError, TimeoutError) as e:
                        # e.g. no root for a remote worker's namespace: a failing reader
                        res = {"error": f"workers did not start: {type(e).__name__}: {e}"[:2000]}
                        res["epochs"] = []
                    else:
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
                        f"bench: {ds:8s} {rid:24s} #{rep} {time.perf_counter() - t0:6.1f}s "
                        f"{line} {res.get('error', '')}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if "error" in res and rep == 1:
                        break  # a reader that fails fails every time: say so once
    finally:
        net_note = net.note
        env._cleanup_all()
    ray = None
    if args.ray:
        print("bench: Ray Data epochs (benches/ray/epochs.py)", file=sys.stderr, flush=True)
        ray = run_ray(args.timeout * 2, work / "scratch")
        print(f"bench: ray {ray.get('error', 'done')}", file=sys.stderr, flush=True)

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
    if ray is not None:
        results["ray"] = ray
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
