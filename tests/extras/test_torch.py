"""PyTorch: the map-style dataset of ``examples/torch_dataset.py`` through a
``DataLoader(num_workers=2)`` with forked workers reads every sample correctly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "torch_dataset.py"


def _example():
    spec = importlib.util.spec_from_file_location("torch_dataset_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dataloader_forked_workers(make_fs, start_worker, bucket_mount, s3_server):
    """Two forked loader workers, shuffled batches: every sample equals what was written."""
    ex = _example()
    rng = np.random.default_rng(5)
    records, expected = {}, {}
    for i in range(300):
        vec = rng.standard_normal(ex.DIM).astype(np.float32)
        path = f"{s3_server.bucket}/torch/r-{i:05d}.bin"
        records[path] = ex.encode(i % 7, vec)
        expected[vec.tobytes()] = i % 7
    s3_server.s3fs().pipe(records)
    fs = make_fs([start_worker(bucket_mount)])
    paths = sorted(records)
    # The parent reads first, so its native client exists before the fork.
    v, label = ex.AlluxioDataset(fs, paths)[0]
    assert expected[v.numpy().tobytes()] == label

    loader = ex.make_loader(fs, paths, batch_size=16)
    assert loader.num_workers == 2
    assert loader.multiprocessing_context.get_start_method() == "fork"
    seen = 0
    for vecs, labels in loader:
        assert vecs.shape[1] == ex.DIM and vecs.dtype == torch.float32
        for vec, lab in zip(vecs, labels, strict=True):
            assert expected[vec.numpy().tobytes()] == int(lab)
        seen += len(labels)
    assert seen == len(paths)
    # Still readable in the parent after the children used their own clients.
    assert fs.cat_file(paths[-1]) == records[paths[-1]]
