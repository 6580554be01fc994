"""Reads through two cache workers, compared byte for byte with what was uploaded.

Also checks the point of the cache: a second read of the same data makes no
UFS data request at all (``alluxiofs_ufs_requests_total`` over the workers).
"""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from harness import ufs_requests


@pytest.fixture
def fs(make_fs, two_workers):
    """A filesystem over two fresh workers (empty caches)."""
    return make_fs(two_workers)


def test_small_files_whole(fs, dataset):
    """Every small file (empty, tiny, around page boundaries) reads back exactly."""
    for path, data in dataset.small.items():
        assert fs.cat_file(path) == data, path
        assert fs.cat_file(dataset.url(path)) == data, path


def test_small_files_cat_many(fs, dataset):
    """cat of a list of paths returns a dict with every file's bytes."""
    paths = sorted(dataset.small)
    out = fs.cat(paths)
    assert set(out) == set(paths)
    for p in paths:
        assert out[p] == dataset.small[p], p


def test_big_file_whole_and_by_file_object(fs, dataset):
    """A file over 64 MiB reads back exactly, as one call and through open()."""
    assert len(dataset.big) > 64 * 1024 * 1024
    assert fs.cat_file(dataset.big_path) == dataset.big
    chunks = []
    with fs.open(dataset.big_path, "rb") as f:
        while True:
            b = f.read(3 * 1024 * 1024 + 7)
            if not b:
                break
            chunks.append(b)
    assert b"".join(chunks) == dataset.big


def test_random_ranges(fs, dataset):
    """Seeded random ranges of the big file, including negative offsets and past-the-end ends."""
    rnd = random.Random(7)
    size = len(dataset.big)
    data = dataset.big
    for _ in range(60):
        start = rnd.randrange(0, size)
        length = rnd.choice(
            [1, 100, 4096, 1 << 20, (1 << 20) + 1, 5_000_000, rnd.randrange(1, size)]
        )
        end = start + length
        assert fs.cat_file(dataset.big_path, start, end) == data[start:end], (start, end)
    # Negative offsets count from the end, like Python slices.
    assert fs.cat_file(dataset.big_path, -1000) == data[-1000:]
    assert fs.cat_file(dataset.big_path, -5000, -1000) == data[-5000:-1000]
    assert fs.cat_file(dataset.big_path, 10, -10) == data[10:-10]
    # Past the end: cut at the end, like slices.
    assert fs.cat_file(dataset.big_path, size - 5, size + 100) == data[size - 5 :]
    assert fs.cat_file(dataset.big_path, size + 10, size + 20) == b""
    assert fs.cat_file(dataset.big_path, 100, 100) == b""


def test_cat_ranges(fs, dataset):
    """cat_ranges over several files and ranges in one call."""
    rnd = random.Random(11)
    small = [p for p, d in dataset.small.items() if len(d) > 100]
    paths, starts, ends = [], [], []
    for _ in range(40):
        if rnd.random() < 0.5:
            p, data = dataset.big_path, dataset.big
        else:
            p = rnd.choice(small)
            data = dataset.small[p]
        s = rnd.randrange(0, len(data))
        e = min(len(data), s + rnd.randrange(1, 3_000_000))
        paths.append(p)
        starts.append(s)
        ends.append(e)
    out = fs.cat_ranges(paths, starts, ends)
    assert len(out) == len(paths)
    for p, s, e, got in zip(paths, starts, ends, out, strict=True):
        data = dataset.big if p == dataset.big_path else dataset.small[p]
        assert got == data[s:e], (p, s, e)


def test_parquet_read_table_columns(fs, dataset):
    """pq.read_table through the filesystem, with a column projection."""
    for path, table in dataset.parquet_tables.items():
        got = pq.read_table(path, filesystem=fs, columns=["id", "y"])
        assert got.equals(table.select(["id", "y"])), path
        full = pq.read_table(path, filesystem=fs)
        assert full.equals(table), path


def test_parquet_dataset(fs, dataset):
    """pyarrow.dataset over the directory: all rows of all files, filter pushed down."""
    ds = pads.dataset(dataset.parquet_dir, filesystem=fs, format="parquet")
    assert sorted(ds.files) == sorted(dataset.parquet_tables)
    got = ds.to_table().sort_by("id")
    expected = pa.concat_tables(dataset.parquet_tables.values()).sort_by("id")
    assert got.equals(expected)
    filtered = ds.to_table(columns=["id", "x"], filter=pads.field("y") < 10).sort_by("id")
    mask = pc.less(expected["y"], 10)
    assert filtered.equals(expected.filter(mask).select(["id", "x"]))


def _read_everything(fs, dataset) -> None:
    for path, data in dataset.small.items():
        assert fs.cat_file(path) == data
    assert fs.cat_file(dataset.big_path) == dataset.big
    for path, table in dataset.parquet_tables.items():
        assert pq.read_table(path, filesystem=fs).equals(table)


def test_second_read_makes_no_ufs_requests(make_fs, start_worker, bucket_mount, dataset):
    """After one full pass, a second pass (new client, same workers) touches the UFS zero times."""
    # A long metadata TTL: the second pass must be served from cache entirely.
    workers = [start_worker(bucket_mount, extra_args=["--metadata-ttl", "10m"]) for _ in range(3)]
    _read_everything(make_fs(workers), dataset)
    first = ufs_requests(workers)
    assert first > 0
    assert ufs_requests(workers, "get") > 0

    _read_everything(make_fs(workers), dataset)
    assert ufs_requests(workers) == first

    # Hits were counted, and the reads were spread over more than one worker.
    hits = [w.metric("alluxiofs_cache_hits_total") for w in workers]
    assert sum(hits) > 0
    assert sum(1 for h in hits if h > 0) >= 2


def test_cache_survives_worker_restart(make_fs, start_worker, bucket_mount, dataset):
    """Pages live on disk: after a restart (same cache dirs) the data is read with no UFS GET."""
    workers = [start_worker(bucket_mount) for _ in range(2)]
    fs = make_fs(workers)
    paths = [*sorted(dataset.small)[:8], dataset.big_path]
    for p in paths:
        fs.cat_file(p)
    for w in workers:
        w.restart(same_port=True)  # same ring: each file goes to the worker that cached it
    assert ufs_requests(workers, "get") == 0  # counters restart at zero
    fs2 = make_fs(workers)
    for p in paths:
        expected = dataset.big if p == dataset.big_path else dataset.small[p]
        assert fs2.cat_file(p) == expected
    # No data is read again. An empty file has no page to find on disk: its cold
    # lookup after the restart is one GET (answered 416, then a HEAD).
    assert sum(w.metric("alluxiofs_ufs_bytes_total") for w in workers) == 0
    empty = sum(1 for p in paths if p != dataset.big_path and not dataset.small[p])
    assert ufs_requests(workers, "get") <= empty
