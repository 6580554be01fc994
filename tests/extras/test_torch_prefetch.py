"""PyTorch: ``examples/torch_prefetch.py``: a shuffled epoch prefetched in the
sampler's order, by the main process and by each of two forked loader workers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example():
    sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location("torch_prefetch_example",
                                                  EXAMPLES / "torch_prefetch.py")  # fmt: skip
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("num_workers", [0, 2])
def test_prefetched_epoch(make_fs, start_worker, bucket_mount, s3_server, num_workers):
    """Every sample equals what was written; without loader workers every read is a hit."""
    ex = _example()
    rng = np.random.default_rng(6)
    records, expected = {}, {}
    for i in range(200):
        vec = rng.standard_normal(ex.DIM).astype(np.float32)
        path = f"{s3_server.bucket}/torch-prefetch/r-{i:05d}.bin"
        records[path] = ex.encode(i % 7, vec)
        expected[vec.tobytes()] = i % 7
    s3_server.s3fs().pipe(records)
    fs = make_fs([start_worker(bucket_mount)])
    ds = ex.PrefetchingDataset(fs, sorted(records), batch_size=16, depth=8)
    seen = 0
    for vecs, labels in ex.make_loader(ds, epoch=1, num_workers=num_workers):
        for vec, lab in zip(vecs, labels, strict=True):
            assert expected[vec.numpy().tobytes()] == int(lab)
        seen += len(labels)
    assert seen == len(records)
    if num_workers == 0:
        assert ds.prefetch.stats()["hits"] == len(records)
        ds.prefetch.close()
    else:
        assert ds.prefetch is None  # the workers' prefetches lived in the workers
