"""Every worker down: reads are served from the UFS, exactly, and counted.

With no worker answering, the client cannot learn where a file ends; the UFS
answer for the last hole is what tells it. These tests ask past the end of
file on purpose: the result must be the file's bytes, never zero padding.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def dead_fs(make_fs, start_worker, bucket_mount, dataset):
    """A filesystem whose only worker has been killed (SIGKILL)."""
    worker = start_worker(bucket_mount)
    fs = make_fs([worker], retries=0, connect_timeout=0.5)
    path, data = max(dataset.small.items(), key=lambda kv: len(kv[1]))
    assert fs.cat_file(path) == data  # served by the worker while it is up
    worker.kill()
    return fs, worker


def test_reads_past_eof_return_exact_bytes(dead_fs, dataset):
    fs, worker = dead_fs
    path, data = max(dataset.small.items(), key=lambda kv: len(kv[1]))
    assert fs.cat_file(path) == data
    assert fs.cat_file(path, 0, len(data) + 4096) == data
    assert fs.cat_file(path, 10, len(data) + 1) == data[10:]
    assert fs.cat_ranges([path, path], [0, 5], [len(data) + 100, 50]) == [data, data[5:50]]
    with fs.open(path, "rb") as f:
        assert f.read() == data
        f.seek(3)
        buf = bytearray(len(data) + 1000)
        n = f.readinto(buf)
        assert bytes(buf[:n]) == data[3:]
    stats = fs.stats()
    assert stats["fallbacks"].get(worker.addr, 0) > 0
    assert stats["ufs_fallback_bytes"] >= len(data)
    assert stats["metadata_fallbacks"] > 0


def test_fallback_off_raises(make_fs, start_worker, bucket_mount, dataset):
    worker = start_worker(bucket_mount)
    fs = make_fs([worker], retries=0, connect_timeout=0.5, fallback=False)
    path, data = max(dataset.small.items(), key=lambda kv: len(kv[1]))
    assert data and fs.cat_file(path) == data
    worker.kill()
    with pytest.raises(ConnectionError):
        fs.cat_file(path, 0, len(data))
