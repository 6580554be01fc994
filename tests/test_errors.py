"""Failures map to the builtin exceptions fsspec and its users catch."""

from __future__ import annotations

import alluxiofs
import pytest


@pytest.fixture
def fs(make_fs, two_workers):
    """A filesystem over two workers mounting the whole bucket."""
    return make_fs(two_workers)


def test_missing_file_raises_file_not_found(fs, dataset):
    """info, cat_file, open and a missing directory listing all raise FileNotFoundError."""
    missing = f"{dataset.prefix}/no/such/file.bin"
    with pytest.raises(FileNotFoundError):
        fs.cat_file(missing)
    with pytest.raises(FileNotFoundError):
        fs.info(missing)
    with pytest.raises(FileNotFoundError):
        fs.open(missing, "rb")
    with pytest.raises(FileNotFoundError):
        fs.ls(f"{dataset.prefix}/no/such/dir")
    assert not fs.exists(missing)
    # A missing path among good ones: cat_ranges reports it in place.
    good = next(p for p, d in dataset.small.items() if len(d) > 10)
    out = fs.cat_ranges([good, missing], [0, 0], [10, 10])
    assert out[0] == dataset.small[good][:10]
    assert isinstance(out[1], FileNotFoundError)


def test_url_outside_mounts_raises_permission_error(make_fs, start_worker, s3_server, dataset):
    """Workers mounting only s3://bucket/allowed refuse s3://bucket/secret/...

    The refusal must not be "repaired" by the client's UFS fallback.
    """
    s3 = s3_server.s3fs()
    allowed = f"{s3_server.bucket}/allowed/ok.bin"
    secret = f"{s3_server.bucket}/secret/key.bin"
    s3.pipe({allowed: b"fine to read", secret: b"must not leak"})
    mount = f"s3://{s3_server.bucket}/allowed"
    workers = [start_worker(mount), start_worker(mount)]
    fs = make_fs(workers)  # default options: fallback to the UFS is on
    assert fs.cat_file(allowed) == b"fine to read"
    with pytest.raises(PermissionError):
        fs.cat_file(secret)
    with pytest.raises(PermissionError):
        fs.info(secret)
    # Dot segments cannot climb out of the mount either.
    with pytest.raises((PermissionError, ValueError)):
        fs.cat_file(f"s3://{s3_server.bucket}/allowed/../secret/key.bin")
    # A mount prefix is a path prefix, not a string prefix.
    s3.pipe_file(f"{s3_server.bucket}/allowed-not/x.bin", b"x")
    with pytest.raises(PermissionError):
        fs.cat_file(f"{s3_server.bucket}/allowed-not/x.bin")


def test_bad_ranges_raise_value_error(fs, dataset):
    """Mismatched cat_ranges lists, non-integer offsets and bad seeks are refused."""
    path = dataset.big_path
    with pytest.raises(ValueError):
        fs.cat_ranges([path, path], [0], [10, 20])
    with pytest.raises(ValueError):
        fs.cat_ranges([path], [0, 1], [10])
    with pytest.raises((TypeError, ValueError)):
        fs.cat_file(path, "10", 20)
    with pytest.raises((TypeError, ValueError)):
        fs.cat_file(path, 1.5, 20)
    with fs.open(path, "rb") as f:
        with pytest.raises(ValueError):
            f.seek(-1)
        with pytest.raises(ValueError):
            f.seek(0, 7)
        # A negative read size means "to the end", per io semantics.
        f.seek(len(dataset.big) - 100)
        assert f.read(-5) == dataset.big[-100:]
    with pytest.raises(ValueError):
        f.read(1)  # closed file


def test_alluxio_error_is_oserror():
    """AlluxioError is an OSError, so generic handlers of I/O errors see it."""
    assert issubclass(alluxiofs.AlluxioError, OSError)
    assert issubclass(alluxiofs.ObjectChangedError, alluxiofs.AlluxioError)


def test_directory_cannot_be_opened(fs, dataset):
    """Opening a directory for reading raises IsADirectoryError (an OSError)."""
    with pytest.raises(IsADirectoryError):
        fs.open(f"{dataset.prefix}/small", "rb")
