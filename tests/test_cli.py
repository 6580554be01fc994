"""The `alluxiofs` command against real workers: what each subcommand prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture
def cli(two_workers, s3_server):
    """Run `alluxiofs ...` in a subprocess configured only through the environment."""
    env = dict(os.environ)
    env["ALLUXIOFS_WORKER_HOSTS"] = ",".join(w.addr for w in two_workers)
    env["AWS_ACCESS_KEY_ID"] = s3_server.access_key
    env["AWS_SECRET_ACCESS_KEY"] = s3_server.secret_key
    env["AWS_ENDPOINT_URL"] = s3_server.endpoint_url

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "alluxiofs", *args], capture_output=True, env=env, timeout=120
        )
        if check:
            assert proc.returncode == 0, proc.stderr.decode()
        return proc

    return run


def test_ls_stat_cat_get(cli, dataset, tmp_path):
    path, data = max(dataset.small.items(), key=lambda kv: len(kv[1]))
    parent = path.rsplit("/", 1)[0]
    listed = cli("ls", f"s3://{parent}").stdout.decode().split()
    assert path in listed
    long = cli("ls", "-l", f"s3://{parent}").stdout.decode()
    assert path in long and "KiB" in long
    info = json.loads(cli("stat", f"s3://{path}").stdout)
    assert info["size"] == len(data) and info["type"] == "file"
    assert cli("cat", f"s3://{path}").stdout == data
    assert cli("cat", f"s3://{path}", "--offset", "10", "--length", "100").stdout == data[10:110]
    assert cli("cat", f"s3://{path}", "--offset", "-50").stdout == data[-50:]
    out = tmp_path / "copy.bin"
    cli("get", f"s3://{path}", str(out))
    assert out.read_bytes() == data


def test_missing_path_is_exit_1_with_message(cli, dataset):
    proc = cli("cat", f"s3://{dataset.bucket}/no/such/file", check=False)
    assert proc.returncode == 1
    assert b"not found" in proc.stderr


def test_cluster_status_and_cache_stats(cli, two_workers, dataset):
    path, data = max(dataset.small.items(), key=lambda kv: len(kv[1]))
    cli("cat", f"s3://{path}")
    cli("cat", f"s3://{path}")  # a second read: hits
    status = cli("cluster", "status").stdout.decode()
    for w in two_workers:
        assert w.addr in status
    assert "2 workers, 2 ok, 0 not ok" in status
    stats = json.loads(cli("cache", "stats", "--json").stdout)
    for w in two_workers:
        m = w.metrics()
        assert stats["workers"][w.addr]["hits"] == m["alluxiofs_cache_hits_total"]
        assert stats["workers"][w.addr]["ufs_requests"] == m["alluxiofs_ufs_requests_total"]
    assert stats["total"]["bytes_served"] >= 2 * len(data)
    assert stats["total"]["ufs_bytes_saved"] >= len(data)
    human = cli("cache", "stats").stdout.decode()
    assert "UFS bytes saved" in human and "page hits" in human
    # A worker that is down makes `cluster status` say so, and exit 1.
    two_workers[0].kill()
    proc = cli("cluster", "status", check=False)
    assert proc.returncode == 1
    assert b"1 not ok" in proc.stdout


def test_cluster_commands_need_a_cluster():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLUXIOFS_WORKER")}
    proc = subprocess.run(
        [sys.executable, "-m", "alluxiofs", "cluster", "status"],
        capture_output=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert b"--worker-hosts" in proc.stderr


def test_worker_exit_status_tells_usage_from_configuration_errors(tmp_path):
    """`alluxiofs worker` exits as the standalone binary does (docs/configuration.md):
    2 for a command-line error, 1 for a configuration error, each with its message."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLUXIOFS_WORKER")}

    def worker(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "alluxiofs", "worker", *args],
            capture_output=True, env=env, timeout=60,
        )  # fmt: skip

    usage = worker("--no-such-flag")
    assert usage.returncode == 2, usage.stderr
    assert b"--no-such-flag" in usage.stderr
    config = worker("--cache-dir", str(tmp_path))  # no mount
    assert config.returncode == 1, config.stderr
    assert b"no mount configured" in config.stderr
