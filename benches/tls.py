"""What TLS costs a reader: the same warm reads from one worker over HTTP and over HTTPS.

    make bench-tls                                 # or: .venv/bin/python benches/tls.py
    .venv/bin/python benches/tls.py --repeat 5 --small 2000

One worker (the installed package's, so ``make develop-release`` for release numbers)
mounts a local directory (``file://``: the UFS is out of the picture once the cache is
warm) and is started twice on the same cache directory: once plain, once with a
certificate from a throwaway CA (``trustme``). Each is primed with one pass, then measured
warm, the two interleaved per repeat so that drift hits both alike:

- **small**: ``--small`` files of ``--small-kib`` KiB read whole by ``cat_file`` from a
  pool of ``--threads`` threads: files/s;
- **large**: one ``--large-mib`` MiB file read in 8 MiB ``cat_file`` ranges: MB/s.

Prints each measure's median and the ratio HTTPS / HTTP (1.0 = TLS costs nothing).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import fsspec  # noqa: E402
import trustme  # noqa: E402
from harness import Worker  # noqa: E402  (tests/harness.py: a worker process)

KiB, MiB = 1 << 10, 1 << 20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--small-kib", type=int, default=64)
    ap.add_argument("--large-mib", type=int, default=256)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="alluxiofs-bench-tls-") as tmp:
        root = Path(tmp)
        data = root / "data"
        (data / "small").mkdir(parents=True)
        rnd = random.Random(1)
        small = []
        for i in range(args.small):
            p = data / "small" / f"f{i:05d}.bin"
            p.write_bytes(rnd.randbytes(args.small_kib * KiB))
            small.append(f"file://{p}")
        large = data / "large.bin"
        with open(large, "wb") as f:
            for _ in range(args.large_mib):
                f.write(rnd.randbytes(MiB))
        large_url = f"file://{large}"

        ca = trustme.CA()
        ca_file = str(root / "ca.pem")
        ca.cert_pem.write_to_path(ca_file)
        cert = ca.issue_cert("127.0.0.1", "localhost")
        cert_file, key_file = str(root / "w.crt"), str(root / "w.key")
        cert.cert_chain_pems[0].write_to_path(cert_file)
        cert.private_key_pem.write_to_path(key_file)

        capacity = f"{args.small * args.small_kib // 1024 + args.large_mib * 2 + 64}MiB"
        base = ["--mount", f"file://{data}", "--capacity", capacity, "--metadata-ttl", "1h"]
        env = dict(os.environ)
        runs = root / "run"
        runs.mkdir()
        workers = {
            "http": Worker(
                [*base, "--cache-dir", str(root / "cache-http")], env, runs, "http"
            ),
            "https": Worker(
                [*base, "--cache-dir", str(root / "cache-https"),
                 "--tls-cert", cert_file, "--tls-key", key_file],
                env, runs, "https", http={"verify": ca_file},
            ),
        }  # fmt: skip
        try:
            systems = {
                "http": fsspec.filesystem(
                    "alluxiofs", worker_hosts=workers["http"].addr, skip_instance_cache=True,
                    fallback=False,
                ),
                "https": fsspec.filesystem(
                    "alluxiofs", worker_hosts=workers["https"].addr, skip_instance_cache=True,
                    fallback=False, tls_ca=ca_file,
                ),
            }  # fmt: skip
            expected_small = {u: Path(u[len("file://") :]).read_bytes() for u in small}

            def read_small(fs) -> float:
                t0 = time.perf_counter()
                with ThreadPoolExecutor(args.threads) as pool:
                    for u, got in zip(small, pool.map(fs.cat_file, small), strict=True):
                        assert got == expected_small[u], u
                return len(small) / (time.perf_counter() - t0)

            def read_large(fs) -> float:
                size = args.large_mib * MiB
                t0 = time.perf_counter()
                n = 0
                for off in range(0, size, 8 * MiB):
                    n += len(fs.cat_file(large_url, start=off, end=min(off + 8 * MiB, size)))
                assert n == size
                return size / MiB / (time.perf_counter() - t0)

            for fs in systems.values():  # prime: every page cached, metadata known
                read_small(fs)
                read_large(fs)
            misses = {n: w.metric("alluxiofs_cache_misses_total") for n, w in workers.items()}
            results: dict[str, dict[str, list[float]]] = {
                m: {k: [] for k in systems} for m in ("small", "large")
            }
            for _ in range(args.repeat):
                for name, fs in systems.items():
                    results["small"][name].append(read_small(fs))
                    results["large"][name].append(read_large(fs))
            for name, w in workers.items():  # warm: nothing read from the UFS while measured
                assert w.metric("alluxiofs_cache_misses_total") == misses[name], name
        finally:
            for w in workers.values():
                w.stop()

    print(
        f"TLS overhead: one worker, warm, {args.repeat} repeats (median); "
        f"{args.small} x {args.small_kib} KiB files with {args.threads} threads, "
        f"{args.large_mib} MiB in 8 MiB ranges"
    )
    print(f"{'measure':<8} {'http':>12} {'https':>12} {'https/http':>11}")
    for measure, unit in (("small", "files/s"), ("large", "MB/s")):
        h = statistics.median(results[measure]["http"])
        s = statistics.median(results[measure]["https"])
        print(f"{measure:<8} {h:>8.0f} {unit:<3} {s:>8.0f} {unit:<3} {s / h:>10.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
