"""A map-style PyTorch ``Dataset`` over alluxiofs paths, read by a ``DataLoader``
with two forked worker processes.

The dataset holds only the filesystem (picklable: options, no sockets) and the
list of paths. Each loader worker is a forked child: on its first read it
builds its own native client (the parent's is keyed by PID and never reused),
so the workers read in parallel with no shared connection state.

Run it (needs torch: ``make test-extras`` installs it into .venv)::

    .venv/bin/python examples/torch_dataset.py              # a local S3 server and embedded worker
    .venv/bin/python examples/torch_dataset.py --files 2000 --epochs 3

It starts a local S3 server (Garage or moto_server), uploads ``--files``
records of random float32 vectors with labels, and iterates the DataLoader
for ``--epochs`` epochs, checking every sample against what was written and
printing samples/s per epoch.
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
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

DIM = 256


def encode(label: int, vec: np.ndarray) -> bytes:
    """One record: a little-endian int32 label, then DIM float32 values."""
    return np.int32(label).tobytes() + vec.astype("<f4").tobytes()


class AlluxioDataset(Dataset):
    """Map-style dataset: item ``i`` is the record stored at ``paths[i]``."""

    def __init__(self, fs: Any, paths: list[str]):
        self.fs = fs
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        # readinto writes the bytes from the socket straight into the
        # tensor's memory: no intermediate bytes object, no copy.
        out = torch.empty(4 + 4 * DIM, dtype=torch.uint8)
        with self.fs.open(self.paths[i], "rb") as f:
            n = f.readinto(out.numpy())
        if n != out.numel():
            raise ValueError(f"{self.paths[i]}: {n} bytes, expected {out.numel()}")
        label = int(out[:4].view(torch.int32)[0])
        return out[4:].view(torch.float32), label


def make_loader(fs: Any, paths: list[str], batch_size: int = 32) -> DataLoader:
    """A DataLoader with two forked workers over ``paths``."""
    return DataLoader(
        AlluxioDataset(fs, paths),
        batch_size=batch_size,
        shuffle=True,
        num_workers=2,
        multiprocessing_context="fork",
        persistent_workers=False,
    )


def main() -> None:
    import alluxiofs.embedded
    import fsspec
    import s3server

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--s3-server", choices=["garage", "moto"], default=None)
    args = ap.parse_args()

    os.environ.setdefault("ALLUXIOFS_HOME", tempfile.mkdtemp(prefix="alluxiofs-torch-"))
    server = s3server.start_s3_server(args.s3_server, bucket="torch-example")
    try:
        rng = np.random.default_rng(0)
        records = {}
        expected = {}
        for i in range(args.files):
            vec = rng.standard_normal(DIM).astype(np.float32)
            path = f"{server.bucket}/records/r-{i:06d}.bin"
            records[path] = encode(i % 10, vec)
            expected[path] = (i % 10, vec)
        server.s3fs().pipe(records)
        fs = fsspec.filesystem(
            "alluxiofs", target_protocol="s3", target_options=server.target_options()
        )
        paths = sorted(records)
        by_vec = {expected[p][1].tobytes(): expected[p][0] for p in paths}
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            seen = 0
            for vecs, labels in make_loader(fs, paths):
                for v, lab in zip(vecs, labels, strict=True):
                    assert by_vec[v.numpy().tobytes()] == int(lab)
                seen += len(labels)
            secs = time.perf_counter() - t0
            assert seen == len(paths)
            print(f"epoch {epoch}: {seen} samples in {secs:.2f} s ({seen / secs:,.0f} samples/s)")
    finally:
        alluxiofs.embedded.stop_all()
        server.stop()


if __name__ == "__main__":
    main()
