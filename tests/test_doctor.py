"""`alluxiofs doctor` against real workers, a dead worker, etcd, and bad settings:
each check prints OK or FAIL with a hint, and the exit code says whether any failed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def doctor(s3_server):
    """Run `alluxiofs ... doctor ...` with S3 credentials in the environment only."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items() if not k.startswith("ALLUXIOFS_")}
        full["ALLUXIOFS_HOME"] = os.environ["ALLUXIOFS_HOME"]
        full["AWS_ACCESS_KEY_ID"] = s3_server.access_key
        full["AWS_SECRET_ACCESS_KEY"] = s3_server.secret_key
        full["AWS_ENDPOINT_URL"] = s3_server.endpoint_url
        full.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "alluxiofs", *args], capture_output=True, env=full, timeout=120
        )
        proc.out = proc.stdout.decode() + proc.stderr.decode()  # type: ignore[attr-defined]
        return proc

    return run


def test_help_lists_doctor(doctor):
    out = doctor("--help").out
    assert "doctor" in out
    out = doctor("doctor", "--help").out
    assert "Exit 1 on a failure" in out and "path" in out


def test_healthy_cluster_with_a_path(doctor, two_workers, s3_server):
    url = f"s3://{s3_server.bucket}/doctor/hello.bin"
    s3_server.s3fs().pipe_file(url, b"hello doctor " * 1000)
    hosts = ",".join(w.addr for w in two_workers)
    proc = doctor("--worker-hosts", hosts, "doctor", url)
    assert proc.returncode == 0, proc.out
    for w in two_workers:
        assert f"OK    worker {w.addr}: version" in proc.out
    for line in (
        "OK    configuration: workers " + hosts,
        "OK    workers agree on versions",
        "OK    workers agree on cluster names",
        "OK    workers agree on page sizes: 1048576",
        "OK    client page size: 1048576",
        "OK    mounts cover the path",
        "OK    read through the cache: 4096 bytes",
        "OK    cache and UFS agree: first 4096 bytes identical",
        "all checks passed",
    ):
        assert line in proc.out, proc.out
    assert "FAIL" not in proc.out
    # The same through the environment: the shell sees what a notebook sees.
    proc = doctor("doctor", env={"ALLUXIOFS_WORKER_HOSTS": hosts})
    assert proc.returncode == 0, proc.out
    assert "from ALLUXIOFS_WORKER_HOSTS" in proc.out


def test_path_outside_the_mounts(doctor, two_workers, s3_server):
    hosts = ",".join(w.addr for w in two_workers)
    proc = doctor("--worker-hosts", hosts, "doctor", "s3://some-other-bucket/x")
    assert proc.returncode == 1
    assert "FAIL  mounts cover the path" in proc.out
    assert "hint: start the workers with a --mount" in proc.out


def test_dead_worker(doctor, two_workers):
    dead = f"127.0.0.1:{_free_port()}"
    hosts = f"{two_workers[0].addr},{dead}"
    proc = doctor("--worker-hosts", hosts, "doctor")
    assert proc.returncode == 1, proc.out
    assert f"OK    worker {two_workers[0].addr}" in proc.out
    assert f"FAIL  worker {dead}: does not answer /healthz" in proc.out
    assert "hint: is the worker running" in proc.out
    assert "1 problem(s) found" in proc.out


def test_bad_etcd_address(doctor):
    proc = doctor("--etcd-hosts", f"127.0.0.1:{_free_port()}", "doctor")
    assert proc.returncode == 1, proc.out
    assert "FAIL  etcd" in proc.out
    assert "hint: is etcd running at 127.0.0.1:" in proc.out


def test_etcd_with_registered_workers(doctor, etcd_server, start_worker, bucket_mount):
    w = start_worker(bucket_mount, extra_args=["--etcd", etcd_server.endpoint])
    import time

    deadline = time.time() + 20
    while time.time() < deadline and w.healthz().get("registration") != "registered":
        time.sleep(0.2)
    proc = doctor("doctor", env={"ALLUXIOFS_ETCD_HOSTS": etcd_server.endpoint})
    assert proc.returncode == 0, proc.out
    assert "OK    etcd: 1 workers registered in cluster DefaultAlluxioCluster" in proc.out
    assert f"OK    worker {w.addr}" in proc.out


def test_bad_settings(doctor, two_workers):
    hosts = ",".join(w.addr for w in two_workers)
    proc = doctor("doctor", env={"ALLUXIOFS_WORKER_HOSTS": hosts, "ALLUXIOFS_PAGE_SIZE": "abc"})
    assert proc.returncode == 1
    assert "FAIL  configuration: alluxiofs option page_size" in proc.out
    proc = doctor("doctor", env={"ALLUXIOFS_WORKER_HOSTS": hosts, "ALLUXIOFS_PAGE_SIZE": "2MiB"})
    assert proc.returncode == 1
    assert "FAIL  client page size: 2097152, workers use [1048576]" in proc.out
    assert "hint: set page_size=1048576" in proc.out


def test_embedded_mode_reports_the_local_worker(doctor):
    proc = doctor("doctor")
    assert proc.returncode == 0, proc.out
    assert "OK    configuration: embedded local worker" in proc.out


def test_config_file_and_env_reach_every_subcommand_and_the_filesystem(
    doctor, two_workers, s3_server, tmp_path
):
    """One YAML file (``--config`` or ``ALLUXIOFS_CONFIG``) configures the filesystem
    and every subcommand alike."""
    import fsspec

    hosts = ",".join(w.addr for w in two_workers)
    cfg = tmp_path / "alluxiofs.yaml"
    cfg.write_text(f"worker_hosts: {hosts}\npage_size: 1MiB\n")
    url = f"s3://{s3_server.bucket}/doctor/cfg.bin"
    s3_server.s3fs().pipe_file(url, b"config " * 100)
    fs = fsspec.filesystem(
        "alluxiofs", config_file=str(cfg), target_protocol="s3",
        target_options=s3_server.target_options(), skip_instance_cache=True,
    )  # fmt: skip
    assert sorted(fs.workers()) == sorted(hosts.split(","))
    for how in (["--config", str(cfg)], []):
        env = {} if how else {"ALLUXIOFS_CONFIG": str(cfg)}
        for args in (
            ["doctor", url],
            ["cat", url],
            ["ls", f"s3://{s3_server.bucket}/doctor/"],
            ["stat", url],
            ["cluster", "status"],
            ["cache", "stats"],
            ["cache", "stats", "--since", "5m"],
        ):
            proc = doctor(*how, *args, env=env)
            assert proc.returncode == 0, (how, args, proc.out)
            if args[0] == "cat":
                assert proc.stdout == b"config " * 100
            if args[0] == "cluster":
                assert all(w in proc.out for w in hosts.split(","))
            if args[:2] == ["cache", "stats"]:
                assert (
                    "workers:            2" if "--since" in args else "workers:          2"
                ) in proc.out
