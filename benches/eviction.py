"""Eviction benchmark: hit ratio per epoch of each eviction policy, data larger than the cache.

A real worker with a small disk cache (default 64 MiB, no memory tier) reads a
dataset of 1.5x that size (96 files of 1 MiB, one page each, on a local
``file://`` mount) for 4 epochs, in sequential order (the same order every
epoch) and in shuffled order (a new permutation every epoch), once per
policy, each run on a fresh cache. The hit ratio of an epoch is the worker's
own count: ``alluxiofs_cache_hits_total / (hits + misses)`` over that epoch.

    .venv/bin/python benches/eviction.py            # or: make bench-eviction
    .venv/bin/python benches/eviction.py --json out.json --cache-mib 32

The table it prints is the one in docs/eviction.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness import Worker  # noqa: E402  (tests/harness.py: worker process + metrics)

MiB = 1 << 20


def make_dataset(root: Path, files: int, file_mib: int) -> list[str]:
    """``files`` files of ``file_mib`` MiB of random bytes under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        p = root / f"part-{i:04d}.bin"
        p.write_bytes(os.urandom(file_mib * MiB))
        paths.append(str(p))
    return paths


def run_policy(
    policy: str, order: str, paths: list[str], data_root: Path, work: Path, args: argparse.Namespace
) -> list[dict[str, float]]:
    """Start a worker with ``policy``, read ``paths`` for ``args.epochs`` epochs in ``order``."""
    import fsspec

    run_dir = work / f"{policy}-{order}"
    cache = run_dir / "cache"
    cache.mkdir(parents=True)
    worker = Worker(
        [
            "--mount",
            f"file://{data_root}",
            "--cache-dir",
            str(cache),
            "--capacity",
            f"{args.cache_mib}MiB",
            "--memory-capacity",
            "0",
            "--page-size",
            "1MiB",
            "--eviction-policy",
            policy,
            "--log-level",
            "warn",
        ],
        dict(os.environ),
        run_dir,
        "worker",
    )
    try:
        fs = fsspec.filesystem(
            "alluxiofs",
            worker_hosts=worker.addr,
            target_protocol="file",
            skip_instance_cache=True,
        )
        rnd = random.Random(args.seed)
        epochs = []
        for epoch in range(args.epochs):
            seq = list(paths)
            if order == "shuffled":
                rnd.shuffle(seq)
            h0 = worker.metric("alluxiofs_cache_hits_total")
            m0 = worker.metric("alluxiofs_cache_misses_total")
            t = time.perf_counter()
            for p in seq:
                fs.cat_file(p)
            secs = time.perf_counter() - t
            hits = worker.metric("alluxiofs_cache_hits_total") - h0
            misses = worker.metric("alluxiofs_cache_misses_total") - m0
            epochs.append(
                {
                    "epoch": epoch + 1,
                    "hits": hits,
                    "misses": misses,
                    "hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
                    "seconds": secs,
                    "used_bytes": worker.metric("alluxiofs_cache_used_bytes"),
                }
            )
        return epochs
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> int:
    """Run every (policy, order) and print the table; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-mib", type=int, default=64, help="disk cache of the worker (64)")
    p.add_argument("--ratio", type=float, default=1.5, help="dataset size / cache size (1.5)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--policies", default="lru,s3fifo")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    files = round(args.cache_mib * args.ratio)
    with tempfile.TemporaryDirectory(prefix="alluxiofs-eviction-") as tmp:
        work = Path(tmp)
        data_root = work / "data"
        paths = make_dataset(data_root, files, 1)
        results = []
        for order in ("sequential", "shuffled"):
            for policy in args.policies.split(","):
                epochs = run_policy(policy, order, paths, data_root, work, args)
                results.append({"policy": policy, "order": order, "epochs": epochs})
                cap = args.cache_mib * MiB
                assert all(e["used_bytes"] <= cap for e in epochs), "capacity exceeded"
    head = " | ".join(f"epoch {i + 1}" for i in range(args.epochs))
    print(
        f"cache {args.cache_mib} MiB, dataset {files} x 1 MiB ({args.ratio}x), "
        f"{args.epochs} epochs, hit ratio per epoch (worker metrics)\n"
    )
    print(f"| order | policy | {head} | epochs 2-{args.epochs} |")
    print("|---|---|" + "---:|" * (args.epochs + 1))
    for r in results:
        ratios = [e["hit_ratio"] for e in r["epochs"]]
        warm = ratios[1:]
        cells = " | ".join(f"{100 * x:.1f}%" for x in ratios)
        mean = f"{100 * sum(warm) / len(warm):.1f}%" if warm else "-"
        print(f"| {r['order']} | {r['policy']} | {cells} | {mean} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
