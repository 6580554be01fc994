"""The ``DataLoader`` of ``examples/torch_dataset.py`` with known-order prefetch.

A shuffled epoch is still a known order: draw the permutation first, give it
to the ``DataLoader`` as its sampler, and prefetch the same order
(``fs.prefetch``), so a cold epoch keeps ``--depth`` reads in flight instead of
paying one UFS round trip per sample.

* ``--num-workers 0``: the main process prefetches the whole order.
* ``--num-workers N``: each forked loader worker prefetches its own share from
  ``worker_init_fn``: a map-style ``DataLoader`` hands batch ``b`` to worker
  ``b % N``, which :func:`alluxiofs.prefetch.worker_share` computes. Workers
  are forked again each epoch (``persistent_workers=False``), so each sees the
  new order; a prefetch never crosses a fork.

``__getitem__`` is unchanged (``fs.open(path).readinto(tensor)``): a
prefetched path is served from memory, any other is read as usual, so an
order that is a little off costs speed, never correctness.

Run it (needs torch: ``make test-extras`` installs it into .venv)::

    .venv/bin/python examples/torch_prefetch.py --files 512 --epochs 2 --num-workers 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "examples"))

from alluxiofs.prefetch import worker_share  # noqa: E402
from torch_dataset import DIM, AlluxioDataset, encode  # noqa: E402


class PrefetchingDataset(AlluxioDataset):
    """``AlluxioDataset`` that knows the epoch's order and prefetches its share of it."""

    def __init__(self, fs: Any, paths: list[str], batch_size: int, depth: int = 16):
        super().__init__(fs, paths)
        self.batch_size = batch_size
        self.depth = depth
        self.order: list[int] = []
        self.prefetch: Any = None

    def start_prefetch(self, worker_id: int = 0, num_workers: int = 0) -> None:
        """Prefetch the items this process will load this epoch, in its order."""
        share = worker_share(self.order, self.batch_size, num_workers, worker_id)
        self.prefetch = self.fs.prefetch([self.paths[i] for i in share], depth=self.depth)


def worker_init_fn(worker_id: int) -> None:
    """In each forked loader worker: prefetch that worker's share of the order."""
    info = get_worker_info()
    info.dataset.start_prefetch(info.id, info.num_workers)


def make_loader(ds: PrefetchingDataset, epoch: int, num_workers: int) -> DataLoader:
    """The loader of one shuffled epoch, its order drawn now and known to the dataset."""
    ds.order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(epoch)).tolist()
    if num_workers == 0:
        ds.start_prefetch()
    return DataLoader(
        ds,
        batch_size=ds.batch_size,
        sampler=ds.order,  # the same order the prefetch follows
        num_workers=num_workers,
        multiprocessing_context="fork" if num_workers else None,
        worker_init_fn=worker_init_fn if num_workers else None,
        persistent_workers=False,
    )


def run_epoch(ds: PrefetchingDataset, epoch: int, num_workers: int) -> int:
    """One shuffled epoch; returns the number of samples seen."""
    seen = 0
    try:
        for _vecs, labels in make_loader(ds, epoch, num_workers):
            seen += len(labels)
    finally:
        if ds.prefetch is not None and num_workers == 0:
            print(f"  prefetch: {ds.prefetch.stats()['hits']} hits of {len(ds)}")
            ds.prefetch.close()
    return seen


def main() -> None:
    import alluxiofs.embedded
    import fsspec
    import s3server

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--depth", type=int, default=16)
    ap.add_argument("--s3-server", choices=["garage", "moto"], default=None)
    args = ap.parse_args()

    os.environ.setdefault("ALLUXIOFS_HOME", tempfile.mkdtemp(prefix="alluxiofs-torch-"))
    server = s3server.start_s3_server(args.s3_server, bucket="torch-prefetch")
    try:
        rng = np.random.default_rng(0)
        records = {
            f"{server.bucket}/records/r-{i:06d}.bin": encode(i % 10, rng.standard_normal(DIM))
            for i in range(args.files)
        }
        server.s3fs().pipe(records)
        fs = fsspec.filesystem(
            "alluxiofs", target_protocol="s3", target_options=server.target_options()
        )
        ds = PrefetchingDataset(fs, sorted(records), args.batch_size, args.depth)
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            seen = run_epoch(ds, epoch, args.num_workers)
            secs = time.perf_counter() - t0
            assert seen == args.files
            print(f"epoch {epoch}: {seen} samples in {secs:.2f} s ({seen / secs:,.0f} samples/s)")
    finally:
        alluxiofs.embedded.stop_all()
        server.stop()


if __name__ == "__main__":
    main()
