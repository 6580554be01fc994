"""The libraries training code reads Parquet and files with, through alluxiofs.

- pandas ``read_parquet`` / ``read_csv`` with ``storage_options``;
- Hugging Face ``datasets.load_dataset("parquet", data_files=..., storage_options=...)``;
- the PyTorch ``DataLoader(num_workers=2)`` pattern without torch: a map-style
  dataset whose items are read in forked worker processes (the full torch
  version is ``tests/extras/test_torch.py``, run by ``make test-extras``).

Every result is compared with the source read directly from the S3 server.
"""

from __future__ import annotations

import io
import multiprocessing

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from harness import worker_hosts


@pytest.fixture
def worker(start_worker, bucket_mount):
    """One fresh worker."""
    return start_worker(bucket_mount)


def _chained_options(s3_server, workers) -> dict:
    return {"alluxiofs": {"worker_hosts": worker_hosts(workers)}, "s3": s3_server.target_options()}


def _direct_options(s3_server, workers) -> dict:
    return {
        "worker_hosts": worker_hosts(workers),
        "target_protocol": "s3",
        "target_options": s3_server.target_options(),
    }


def test_pandas_parquet_and_csv_storage_options(s3_server, worker, dataset):
    """pandas reads Parquet and CSV through alluxiofs URLs with storage_options."""
    import pandas as pd

    pq_path, table = next(iter(dataset.parquet_tables.items()))
    want = table.select(["id", "label"]).to_pandas()
    chained = pd.read_parquet(
        f"alluxiofs::s3://{pq_path}",
        columns=["id", "label"],
        storage_options=_chained_options(s3_server, [worker]),
    )
    pd.testing.assert_frame_equal(chained, want)
    direct = pd.read_parquet(
        f"alluxiofs://{pq_path}",
        columns=["id", "label"],
        storage_options=_direct_options(s3_server, [worker]),
    )
    pd.testing.assert_frame_equal(direct, want)

    frame = table.to_pandas()
    csv_path = f"{s3_server.bucket}/integrations/frame.csv"
    s3_server.s3fs().pipe_file(csv_path, frame.to_csv(index=False).encode())
    got = pd.read_csv(
        f"alluxiofs://{csv_path}", storage_options=_direct_options(s3_server, [worker])
    )
    pd.testing.assert_frame_equal(got, pd.read_csv(io.BytesIO(frame.to_csv(index=False).encode())))


def test_hf_datasets_load_parquet(s3_server, worker, dataset, tmp_path, monkeypatch):
    """datasets.load_dataset("parquet") over alluxiofs URLs equals the tables written."""
    # The "parquet" builder ships with datasets: nothing is fetched from the Hub.
    # (Offline mode cannot be set: datasets then refuses every non-local URL.)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets")

    paths = sorted(dataset.parquet_tables)
    want = pa.concat_tables([dataset.parquet_tables[p] for p in paths])
    ds = datasets.load_dataset(
        "parquet",
        data_files=[f"alluxiofs://{p}" for p in paths],
        storage_options=_direct_options(s3_server, [worker]),
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert ds.num_rows == want.num_rows
    got = ds.data.table.select(want.column_names)
    assert got.cast(want.schema).equals(want)


class MapDataset:
    """A map-style dataset over alluxiofs paths, as a PyTorch ``Dataset`` is.

    Holds only the (picklable) filesystem and the paths; each item is read in
    whichever process asks for it, so forked loader workers each build their
    own native client.
    """

    def __init__(self, fs, paths: list[str]):
        self.fs = fs
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, bytes]:
        with self.fs.open(self.paths[i], "rb") as f:
            return self.paths[i], f.read()


_DATASET: MapDataset | None = None


def _load(i: int) -> tuple[int, str, bytes]:
    import os

    assert _DATASET is not None
    path, data = _DATASET[i]
    return os.getpid(), path, data


def test_map_dataset_in_forked_workers(make_fs, worker, dataset):
    """Items read in two forked processes (DataLoader num_workers=2) equal the source."""
    global _DATASET
    fs = make_fs([worker])
    paths = sorted(dataset.small)
    _DATASET = MapDataset(fs, paths)
    # The parent reads first: its native client exists before the fork.
    assert _DATASET[0][1] == dataset.small[paths[0]]
    ctx = multiprocessing.get_context("fork")
    try:
        with ctx.Pool(2) as pool:
            out = pool.map(_load, range(len(paths)), chunksize=3)
    finally:
        _DATASET = None
    pids = {pid for pid, _, _ in out}
    assert len(pids) == 2 and all(p != __import__("os").getpid() for p in pids)
    for _, path, data in out:
        assert data == dataset.small[path], path
    # And the parent still reads after its children used their own clients.
    assert fs.cat_file(paths[-1]) == dataset.small[paths[-1]]


def test_parquet_row_groups_in_forked_workers(make_fs, worker, dataset):
    """Row groups read in forked processes through pq.ParquetFile(fs.open(...)) equal the table."""
    fs = make_fs([worker])
    path, table = next(iter(dataset.parquet_tables.items()))
    n = pq.ParquetFile(fs.open(path, "rb")).metadata.num_row_groups
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        parts = pool.starmap(_read_row_group, [(fs, path, rg) for rg in range(n)])
    got = pa.concat_tables(pq.read_table(io.BytesIO(p)) for p in parts)
    assert got.equals(table)
    assert np.array_equal(got["id"].to_numpy(), table["id"].to_numpy())


def _read_row_group(fs, path: str, rg: int) -> bytes:
    with fs.open(path, "rb") as f:
        t = pq.ParquetFile(f).read_row_group(rg)
    sink = io.BytesIO()
    pq.write_table(t, sink)
    return sink.getvalue()


def test_oversized_reads_ask_only_for_the_file(make_fs, worker, dataset):
    """A read(n) far past the end (PyArrow's 32 MiB buffered streams under Ray) asks the
    native reader for the file's bytes only, not for n (which built a zeroed n-byte object)."""
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs = make_fs([worker])
    path = sorted(dataset.small)[5]  # a 65 537-byte file
    asked: list[int] = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def read_at(self, offset, length, fallback=None):
            asked.append(length)
            return self.inner.read_at(offset, length, fallback)

    with fs.open(path, "rb") as f:
        f._reader = Spy(f._reader)
        assert f.read(32 << 20) == dataset.small[path]
    assert asked == [len(dataset.small[path])]
    with PyFileSystem(FSSpecHandler(fs)).open_input_stream(path, buffer_size=32 << 20) as s:
        assert s.readall() == dataset.small[path]
