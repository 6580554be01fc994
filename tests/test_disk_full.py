"""A cache directory on a disk smaller than its configured capacity (a real tmpfs): the
worker fills the disk, then evicts to make room instead of failing every new page, reads
never fail, and the log gets a few lines, not one per page."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import uuid

import pytest
from harness import ufs_requests

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs as the cache disk: run it as root")
    path = tmp_path / "small-disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_cache_disk_evicts_to_make_room(small_disk, s3_server, start_worker, make_fs):
    rnd = random.Random(5)
    base = f"{s3_server.bucket}/diskfull-{uuid.uuid4().hex[:8]}"
    files = {f"{base}/f{i:02d}.bin": rnd.randbytes(MiB) for i in range(40)}
    s3_server.s3fs().pipe(files)
    w = start_worker(
        f"s3://{s3_server.bucket}",
        cache_dir=small_disk,
        capacity="64MiB",
        extra_args=["--memory-capacity", "0"],
    )
    fs = make_fs([w])
    hot = sorted(files)[:4]
    for _ in range(3):
        for p in sorted(files):  # 40 MiB through an 8 MiB disk
            assert fs.cat_file(f"s3://{p}") == files[p]
    assert w.metric("alluxiofs_cache_write_errors_total") > 0, "the disk never filled"
    assert w.metric("alluxiofs_evictions_total", reason="capacity") > 0, (
        "a full disk must make the worker evict, not fail every later page"
    )
    # The last files read are cached again: re-reading them costs no UFS GET.
    gets = ufs_requests([w], "get")
    recent = sorted(files)[-3:]
    for p in recent:
        assert fs.cat_file(f"s3://{p}") == files[p]
    assert ufs_requests([w], "get") == gets, "recently read files were not cached"
    # Hot files read again and again stay readable (from the cache or the UFS).
    for p in hot:
        assert fs.cat_file(f"s3://{p}") == files[p]
    log = w.log_path.read_text()
    assert "cache disk full" in log
    lines = [ln for ln in log.splitlines() if "No space left on device" in ln]
    assert len(lines) <= 5, f"{len(lines)} ENOSPC lines in the log"
    assert w.healthz()["status"] == "ok"
