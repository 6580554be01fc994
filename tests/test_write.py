"""Writes go through to the UFS and invalidate the cache: reads after writes are fresh."""

from __future__ import annotations

import os
import uuid

import pytest


@pytest.fixture
def fs(make_fs, two_workers):
    """A filesystem over two workers; metadata TTL is the default (60 s)."""
    return make_fs(two_workers)


@pytest.fixture
def base(s3_server) -> str:
    """A fresh prefix for this test's writes."""
    return f"{s3_server.bucket}/writes/{uuid.uuid4().hex}"


def test_pipe_then_overwrite_same_size(fs, base, s3_server):
    """Overwriting with same-size content is seen at once (cache read first, then changed)."""
    path = f"{base}/a.bin"
    first, second = os.urandom(3 * 1024 * 1024 + 5), os.urandom(3 * 1024 * 1024 + 5)
    fs.pipe_file(path, first)
    assert s3_server.s3fs().cat_file(path) == first  # really in the UFS
    assert fs.cat_file(path) == first
    assert fs.cat_file(path, 1_000_000, 2_000_000) == first[1_000_000:2_000_000]
    fs.pipe_file(path, second)
    assert fs.cat_file(path) == second
    assert fs.info(path)["size"] == len(second)


def test_open_wb_then_read(fs, base):
    """A file written with open('wb') is readable in full once closed."""
    path = f"{base}/w.bin"
    parts = [os.urandom(700_000) for _ in range(4)]
    with fs.open(path, "wb") as f:
        for p in parts:
            f.write(p)
    assert fs.cat_file(path) == b"".join(parts)


def test_put_file_and_listing_freshness(fs, base, tmp_path):
    """put_file uploads a local file; a listing cached before shows it afterwards."""
    fs.pipe_file(f"{base}/one.bin", b"1")
    assert fs.ls(base, detail=False) == [f"{base}/one.bin"]
    local = tmp_path / "two.bin"
    local.write_bytes(os.urandom(123_456))
    fs.put_file(str(local), f"{base}/two.bin")
    assert fs.ls(base, detail=False) == [f"{base}/one.bin", f"{base}/two.bin"]
    assert fs.cat_file(f"{base}/two.bin") == local.read_bytes()


def test_rm_then_missing(fs, base):
    """A removed file is gone for reads and listings, even after it was cached."""
    path = f"{base}/gone.bin"
    fs.pipe_file(path, b"soon gone")
    assert fs.cat_file(path) == b"soon gone"
    fs.rm(path)
    assert not fs.exists(path)
    with pytest.raises(FileNotFoundError):
        fs.cat_file(path)


def test_mv(fs, base):
    """mv: the new path has the bytes, the old one is gone."""
    src, dst = f"{base}/src.bin", f"{base}/dst.bin"
    data = os.urandom(200_000)
    fs.pipe_file(src, data)
    assert fs.cat_file(src) == data
    fs.mv(src, dst)
    assert fs.cat_file(dst) == data
    with pytest.raises(FileNotFoundError):
        fs.cat_file(src)


def test_change_behind_the_cache_with_zero_ttl(
    make_fs, start_worker, bucket_mount, base, s3_server
):
    """With --metadata-ttl 0, an object overwritten directly in the UFS is never served stale."""
    workers = [start_worker(bucket_mount, extra_args=["--metadata-ttl", "0"]) for _ in range(2)]
    fs = make_fs(workers)
    path = f"{base}/behind.bin"
    s3 = s3_server.s3fs()
    old, new = os.urandom(2_500_000), os.urandom(2_500_000)
    s3.pipe_file(path, old)
    assert fs.cat_file(path) == old
    s3.pipe_file(path, new)  # not through alluxiofs: no invalidation
    assert fs.cat_file(path) == new
