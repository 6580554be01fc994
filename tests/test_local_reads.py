"""Same-node reads: warm pages read from the page files of a worker on this node,
through descriptors it passes over its Unix socket (docs/architecture.md,
"Same-node reads"). Real workers; the netns case (workers that are not on this
node) is in test_netns.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import alluxiofs.embedded
import fsspec
import pytest
import requests
from harness import parse_prometheus


def _warm(fs, path: str, data: bytes) -> None:
    assert fs.cat_file(path) == data  # cold: over HTTP, and the worker is probed
    assert fs.cat_file(path) == data


def test_the_embedded_worker_is_read_through_its_socket(tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 17)
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    fs = fsspec.filesystem("alluxiofs", target_protocol="file", skip_instance_cache=True)
    _warm(fs, str(path), data)
    before = fs.stats()
    assert fs.cat_file(str(path)) == data
    with fs.open(str(path), "rb") as f:
        parts = [f.read(1 << 20) for _ in range(6)]
    assert b"".join(parts) == data
    buf = bytearray(4096)
    with fs.open(str(path), "rb") as f:
        f.seek(3 * 1024 * 1024 + 5)
        assert f.readinto(buf) == 4096
    assert bytes(buf) == data[3 * 1024 * 1024 + 5 : 3 * 1024 * 1024 + 5 + 4096]
    after = fs.stats()
    local = after["bytes_local"] - before["bytes_local"]
    remote = after["bytes_remote"] - before["bytes_remote"]
    # Whole pages came from the page files; the 4 KiB slice of a page went over
    # HTTP (verifying its whole page locally would cost more).
    assert local >= 2 * len(data) and remote == 4096, (local, remote)
    worker = alluxiofs.embedded.running()[0]
    metrics = fs.worker_metrics()[worker.addr]
    assert metrics["alluxiofs_local_pages_total"] >= 12
    health = requests.get(f"http://{worker.addr}/healthz", timeout=10).json()
    assert health["local_socket"] and os.path.exists(health["local_socket"])


def test_a_cluster_worker_on_this_host_is_local_and_off_means_http(
    start_worker, make_fs, s3_server, tmp_path
):
    fs_s3 = s3_server.s3fs()
    data = os.urandom(3 * 1024 * 1024 + 5)
    key = f"{s3_server.bucket}/local/one.bin"
    fs_s3.pipe_file(key, data)
    mount = f"s3://{s3_server.bucket}/local"
    on = start_worker(mount)
    off = start_worker(mount, extra_args=["--local-socket", "off"])
    for worker, expect_local in ((on, True), (off, False)):
        fs = make_fs([worker])
        _warm(fs, f"s3://{key}", data)
        s = fs.stats()
        if expect_local:
            assert s["bytes_local"] >= len(data), s
        else:
            assert s["bytes_local"] == 0 and s["bytes_remote"] >= 2 * len(data), s
    # The client option turns it off too.
    fs = make_fs([on], local_reads=False)
    _warm(fs, f"s3://{key}", data)
    assert fs.stats()["bytes_local"] == 0


_OTHER_UID = textwrap.dedent(
    """
    import os, sys, fsspec, alluxiofs  # loaded while still root
    os.setgid(65534)
    os.setuid(65534)
    fs = fsspec.filesystem("alluxiofs", worker_hosts=sys.argv[1], target_protocol="file",
                           skip_instance_cache=True, fallback=False)
    try:
        fs.cat_file(sys.argv[2])
    except PermissionError as e:
        print("refused:", e)
    else:
        print("READ")
    print("local", fs.stats()["bytes_local"])
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another uid")
def test_another_uid_gets_no_descriptor_and_the_http_answer(start_worker, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.chmod(tmp_path, 0o755)
    data = os.urandom(2 * 1024 * 1024)
    (data_dir / "f.bin").write_bytes(data)
    worker = start_worker(f"file://{data_dir}", env={"ALLUXIOFS_WORKER_AUTH_TOKEN": "sekrit"})
    fs = fsspec.filesystem(
        "alluxiofs", worker_hosts=worker.addr, target_protocol="file",
        skip_instance_cache=True, auth_token="sekrit",
    )  # fmt: skip
    _warm(fs, str(data_dir / "f.bin"), data)  # the owner (root) reads locally
    assert fs.stats()["bytes_local"] >= len(data)

    def refused() -> float:
        r = requests.get(
            f"{worker.url}/metrics", headers={"Authorization": "Bearer sekrit"}, timeout=10
        )
        r.raise_for_status()
        name = "alluxiofs_local_refused_total"
        return sum(v for n, _, v in parse_prometheus(r.text) if n == name)

    refused_before = refused()
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_UID, worker.addr, str(data_dir / "f.bin")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "READ" not in out.stdout, out.stdout
    assert "local 0" in out.stdout, out.stdout
    assert refused() == refused_before + 1


def test_the_worker_killed_mid_read_leaves_the_read_to_the_ufs(start_worker, make_fs, s3_server):
    fs_s3 = s3_server.s3fs()
    data = os.urandom(48 * 1024 * 1024)
    key = f"{s3_server.bucket}/local/kill.bin"
    fs_s3.pipe_file(key, data)
    worker = start_worker(f"s3://{s3_server.bucket}/local")
    fs = make_fs([worker], retries=0, connect_timeout=1)
    _warm(fs, f"s3://{key}", data)
    got: list[bytes] = []
    with fs.open(f"s3://{key}", "rb") as f:
        got.append(f.read(8 << 20))
        killer = threading.Thread(target=worker.kill)
        killer.start()
        while True:
            chunk = f.read(4 << 20)
            if not chunk:
                break
            got.append(chunk)
        killer.join()
    assert b"".join(got) == data
    assert fs.stats()["bytes_local"] > 0


def test_cat_of_many_warm_files_on_this_node_reads_page_files_in_few_requests(tmp_path):
    data_dir = tmp_path / "many"
    data_dir.mkdir()
    files = {}
    for i in range(300):
        p = data_dir / f"f{i:03d}.bin"
        p.write_bytes(os.urandom(1 + i * 97))
        files[str(p)] = p.read_bytes()
    fs = fsspec.filesystem("alluxiofs", target_protocol="file", skip_instance_cache=True)
    assert fs.cat(list(files)) == files  # cold: the HTTP batch reads through
    worker = alluxiofs.embedded.running()[0]
    before = fs.worker_metrics()[worker.addr]
    stats_before = fs.stats()
    assert fs.cat(list(files)) == files
    after = fs.worker_metrics()[worker.addr]
    s = fs.stats()
    assert s["bytes_remote"] == stats_before["bytes_remote"], "warm: nothing over HTTP"
    assert s["bytes_local"] - stats_before["bytes_local"] == sum(map(len, files.values()))
    # 64 files per local request: 300 files in 5 requests, no HTTP request.
    local = after["alluxiofs_local_requests_total"] - before["alluxiofs_local_requests_total"]
    assert local == 5, local
    # Only the checks own requests: the /metrics above and the /v1/stats of fs.stats().
    assert after["alluxiofs_requests_total"] - before["alluxiofs_requests_total"] <= 2
