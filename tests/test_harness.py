"""Checks of the test harness itself: the S3 server, the metrics parser, the nodelay shim."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from harness import parse_prometheus, s3server


def test_s3_server_round_trip(s3_server):
    """The session S3 server stores and lists objects through s3fs."""
    fs = s3_server.s3fs()
    path = f"{s3_server.bucket}/harness/hello.txt"
    fs.pipe_file(path, b"hello world")
    assert fs.cat_file(path) == b"hello world"
    assert fs.cat_file(path, start=6) == b"world"
    assert fs.info(path)["size"] == 11
    assert f"{s3_server.bucket}/harness/hello.txt" in fs.find(f"{s3_server.bucket}/harness")
    fs.rm(path)
    assert not fs.exists(path)


def test_worker_env_and_target_options_agree(s3_server):
    """Workers and fsspec clients are pointed at the same endpoint and credentials."""
    env = s3_server.worker_env()
    opts = s3_server.target_options()
    assert env["AWS_ENDPOINT"] == opts["client_kwargs"]["endpoint_url"] == s3_server.endpoint_url
    assert env["AWS_ACCESS_KEY_ID"] == opts["key"]
    assert env["AWS_SECRET_ACCESS_KEY"] == opts["secret"]
    assert env["AWS_REGION"] == "us-east-1"
    assert env["AWS_ALLOW_HTTP"] == "true"
    assert env["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] == "false"


def test_parse_prometheus_sums_and_labels():
    """Label sets are parsed, escaped quotes kept, special values accepted."""
    text = (
        "# HELP alluxiofs_ufs_requests_total UFS requests\n"
        "# TYPE alluxiofs_ufs_requests_total counter\n"
        'alluxiofs_ufs_requests_total{op="get",scheme="s3"} 3\n'
        'alluxiofs_ufs_requests_total{op="head",scheme="s3"} 2 1700000000000\n'
        'odd{path="a \\"quoted\\" {x}"} +Inf\n'
        "plain 1.5e3\n"
    )
    samples = parse_prometheus(text)
    assert samples[0] == ("alluxiofs_ufs_requests_total", {"op": "get", "scheme": "s3"}, 3.0)
    assert samples[1][2] == 2.0
    assert samples[2][1] == {"path": 'a "quoted" {x}'}
    assert samples[2][2] == float("inf")
    assert samples[3] == ("plain", {}, 1500.0)
    with pytest.raises(ValueError):
        parse_prometheus("not a metric line at all {")


_ACCEPT_NODELAY = """
import socket
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
cli = socket.create_connection(srv.getsockname())
conn, _ = srv.accept()
print(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
"""


@pytest.mark.skipif(not s3server.NODELAY_SO.is_file(), reason="nodelay.so not built (make garage)")
def test_nodelay_shim_sets_tcp_nodelay_on_accepted_sockets():
    """With the shim preloaded, accept() returns sockets with TCP_NODELAY on; without, off."""

    def accepted_nodelay(preload: bool) -> int:
        env = {"LD_PRELOAD": str(s3server.NODELAY_SO)} if preload else {}
        out = subprocess.run(
            [sys.executable, "-c", _ACCEPT_NODELAY],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=30,
        )
        return int(out.stdout.strip())

    assert accepted_nodelay(False) == 0
    assert accepted_nodelay(True) != 0


def test_free_port_is_bindable():
    """free_port() returns a port that can be bound on loopback."""
    port = s3server.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
