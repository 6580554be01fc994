"""Known-order prefetch (``fs.prefetch``): a cold and a warm epoch of small files,
read in order without prefetch and with it, per way of keeping ``depth`` reads
in flight (a thread per read, or fewer threads handing batches to the native
``read_ranges``): wall time, and the client process's CPU time (Python and the
native client's I/O threads together, from ``getrusage``).

The UFS is the local S3 server (Garage, else moto) behind
``alluxiofs-delay-proxy`` (``--rtt-ms`` per round trip); each cold epoch gets a
fresh worker with an empty cache, the warm epoch reads a worker's cached pages.

    cargo build -p alluxiofs-delay-proxy   # or --release
    .venv/bin/python benches/prefetch.py --files 300 --size 32768 --rtt-ms 20 --depth 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

import s3server  # noqa: E402
from harness import Worker  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_proxy(target: str, rtt_ms: float, run_dir: Path) -> tuple[subprocess.Popen, str]:
    binary = next(
        (p for p in (ROOT / "target" / d / "alluxiofs-delay-proxy" for d in ("release", "debug"))
         if p.exists()),
        None,
    )  # fmt: skip
    if binary is None:
        sys.exit("build the proxy first: cargo build -p alluxiofs-delay-proxy")
    ready = run_dir / "proxy.json"
    proc = subprocess.Popen(
        [str(binary), "--listen", "127.0.0.1:0", "--target", target, "--rtt-ms", str(rtt_ms),
         "--ready-file", str(ready)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not ready.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            sys.exit("the delay proxy did not start")
        time.sleep(0.02)
    time.sleep(0.02)
    return proc, json.loads(ready.read_text())["addr"]


def main() -> None:
    import fsspec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--size", type=int, default=32 * 1024)
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--s3-server", choices=["garage", "moto"], default=None)
    args = ap.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="alluxiofs-prefetch-bench-"))
    server = s3server.start_s3_server(args.s3_server, bucket="prefetch-bench")
    proxy, addr = start_proxy(server.endpoint_url.rsplit("/", 1)[1], args.rtt_ms, run_dir)
    workers: list[Worker] = []
    try:
        files = {
            f"{server.bucket}/d/f{i:05d}.bin": os.urandom(args.size) for i in range(args.files)
        }
        server.s3fs().pipe(files)
        paths = sorted(files)
        env = dict(os.environ, **server.worker_env())
        env["AWS_ENDPOINT"] = env["AWS_ENDPOINT_URL"] = f"http://{addr}"

        def fresh_fs():
            n = len(workers)
            w = Worker(
                ["--mount", f"s3://{server.bucket}", "--cache-dir", str(run_dir / f"c{n}")],
                env, run_dir, f"w{n}",
            )  # fmt: skip
            workers.append(w)
            return fsspec.filesystem(
                "alluxiofs", worker_hosts=w.addr, target_protocol="s3",
                target_options=server.target_options(), skip_instance_cache=True,
            )  # fmt: skip

        d = args.depth
        ways = {
            "no prefetch": None,
            f"threads={d} batch=1": {"threads": d, "batch": 1},
            f"threads=4 batch={d // 4}": {"threads": 4, "batch": max(1, d // 4)},
            f"threads=2 batch={d // 2}": {"threads": 2, "batch": max(1, d // 2)},
        }

        def epoch(fs, how) -> tuple[float, float, dict]:
            c0, t0 = cpu(), time.perf_counter()
            if how is None:
                for p in paths:
                    assert fs.cat_file(p) == files[p]
                s: dict = {}
            else:
                with fs.prefetch(paths, depth=d, **how) as pf:
                    for p in paths:
                        assert fs.cat_file(p) == files[p]
                    s = pf.stats()
            return time.perf_counter() - t0, cpu() - c0, s

        mib = args.files * args.size / 2**20
        print(f"{args.files} files x {args.size} B ({mib:.1f} MiB), UFS RTT {args.rtt_ms} ms, "
              f"depth {d}, {server.kind}")  # fmt: skip
        print(f"{'':24s} {'cold s':>8s} {'cold CPU s':>10s} {'warm s':>8s} {'warm CPU s':>10s}"
              f" {'CPU ms/file':>11s} hits")  # fmt: skip
        results = {}
        for label, how in ways.items():
            fs = fresh_fs()
            fs.info(paths[0])  # connections and client made outside the timing
            cold, cold_cpu, s = epoch(fs, how)
            warm, warm_cpu, s2 = epoch(fs, how)
            hits = f"{s.get('hits', '-')}/{s2.get('hits', '-')}"
            results[label] = {"cold_s": cold, "cold_cpu_s": cold_cpu, "warm_s": warm,
                              "warm_cpu_s": warm_cpu}  # fmt: skip
            print(f"{label:24s} {cold:8.2f} {cold_cpu:10.2f} {warm:8.2f} {warm_cpu:10.2f}"
                  f" {1000 * warm_cpu / args.files:11.3f} {hits}")  # fmt: skip
        base = results["no prefetch"]["cold_s"]
        best = min(v["cold_s"] for k, v in results.items() if k != "no prefetch")
        print(f"cold epoch: {base / best:.1f}x faster with prefetch")
    finally:
        for w in workers:
            w.stop()
        proxy.kill()
        server.stop()


if __name__ == "__main__":
    main()
