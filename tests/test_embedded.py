"""The embedded default: no worker_hosts, a local worker started on first use."""

from __future__ import annotations

import os
import urllib.parse

import alluxiofs
import alluxiofs.embedded
import fsspec
import pytest
import requests


def test_embedded_local_files(tmp_path):
    """target_protocol="file" with no workers: reads are exact, cached, and private."""
    home = os.environ["ALLUXIOFS_HOME"]
    assert not home.startswith(os.path.expanduser("~/.cache")), "tests must not use ~/.cache"
    data_dir = tmp_path / "data"
    (data_dir / "sub").mkdir(parents=True)
    files = {
        data_dir / "a.bin": os.urandom(10),
        data_dir / "b.bin": os.urandom(2 * 1024 * 1024 + 3),
        data_dir / "sub" / "c.bin": b"",
    }
    for p, d in files.items():
        p.write_bytes(d)

    try:
        fs = fsspec.filesystem("alluxiofs", target_protocol="file", skip_instance_cache=True)
        for p, d in files.items():
            assert fs.cat_file(str(p)) == d, p
        assert fs.cat_file(f"file://{data_dir}/b.bin", 5, 100) == files[data_dir / "b.bin"][5:100]
        names = fs.ls(str(data_dir), detail=False)
        assert names == [str(data_dir / "a.bin"), str(data_dir / "b.bin"), str(data_dir / "sub")]

        running = alluxiofs.embedded.running()
        assert len(running) == 1
        local = running[0]
        assert local.host == "127.0.0.1"
        assert fs.workers() == [local.addr]

        # A second read of the same files asks the UFS for nothing.
        before = fs.worker_metrics()[local.addr]
        for p, d in files.items():
            assert fs.cat_file(str(p)) == d
        after = fs.worker_metrics()[local.addr]
        assert after["alluxiofs_ufs_requests_total"] == before["alluxiofs_ufs_requests_total"]
        assert after["alluxiofs_cache_hits_total"] > before["alluxiofs_cache_hits_total"]

        # Another filesystem object (same configuration) finds the same worker.
        fs2 = fsspec.filesystem(
            "alluxiofs", target_protocol="file", skip_instance_cache=True, page_size=1048576
        )
        assert fs2.cat_file(str(data_dir / "a.bin")) == files[data_dir / "a.bin"]
        assert len(alluxiofs.embedded.running()) == 1

        with pytest.raises(FileNotFoundError):
            fs.cat_file(str(data_dir / "nope.bin"))
        assert fs.stats()["fallbacks"].get(local.addr, 0) == 0

        # Without the bearer token, the worker refuses to read for anyone else.
        url = urllib.parse.quote(f"file://{data_dir}/a.bin", safe="")
        r = requests.get(f"http://{local.addr}/v1/info?path={url}", timeout=10)
        assert r.status_code == 401
        assert requests.get(f"http://{local.addr}/healthz", timeout=10).status_code == 200
    finally:
        stopped = alluxiofs.embedded.stop_all()
    assert stopped == 1
    assert alluxiofs.embedded.running() == []


def test_embedded_s3(s3_server, dataset):
    """target_protocol="s3" with no workers: the embedded worker gets the S3 credentials."""
    fs = fsspec.filesystem(
        "alluxiofs",
        target_protocol="s3",
        target_options=s3_server.target_options(),
        skip_instance_cache=True,
    )
    try:
        for path, data in list(dataset.small.items())[:10]:
            assert fs.cat_file(path) == data, path
        assert (
            fs.cat_file(dataset.big_path, 10_000_000, 12_000_000)
            == (dataset.big[10_000_000:12_000_000])
        )
        (addr,) = fs.workers()
        assert fs.stats()["fallbacks"].get(addr, 0) == 0
        assert fs.worker_metrics()[addr]["alluxiofs_ufs_requests_total"] > 0
    finally:
        alluxiofs.embedded.stop_all()


def test_embedded_worker_restarted_after_stop(tmp_path):
    """After stop_all(), the next read starts a new worker instead of falling back.

    The process keeps one native client per configuration; it must notice that
    its embedded worker is gone rather than route to a dead address.
    """
    data = os.urandom(300_000)
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    try:
        fs = fsspec.filesystem("alluxiofs", target_protocol="file", skip_instance_cache=True)
        assert fs.cat_file(str(path)) == data
        first = alluxiofs.embedded.running()
        assert len(first) == 1
        assert alluxiofs.embedded.stop_all() == 1
        assert alluxiofs.embedded.running() == []

        fs2 = fsspec.filesystem("alluxiofs", target_protocol="file", skip_instance_cache=True)
        assert fs2.cat_file(str(path)) == data
        second = alluxiofs.embedded.running()
        assert len(second) == 1 and second[0].pid != first[0].pid
        assert fs2.workers() == [second[0].addr]
        stats = fs2.stats()
        assert stats["ufs_fallback_reads"] == 0
        assert stats["fallbacks"].get(first[0].addr, 0) == 0
    finally:
        alluxiofs.embedded.stop_all()
