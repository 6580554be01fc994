"""The ``alluxiofs`` client from PyPI reads through our workers.

That client (1.0.3: the 1.0.x line that routes with the Alluxio hash ring and
asks for pages by ``path_id`` only, after a ``/v1/info`` call) is what Alluxio
users have today. It lives in its own virtual environment (``make
compat-venv``), since its ``etcd3`` dependency pins an old protobuf.

It knows workers by host name only, all on one port, so the three workers
listen on 127.0.0.1, 127.0.0.2 and 127.0.0.3 with one port picked at run time.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
COMPAT_PYTHON = Path(
    os.environ.get(
        "ALLUXIOFS_COMPAT_PYTHON",
        Path.home() / ".cache" / "alluxiofs" / "compat-1.0.3" / "bin" / "python",
    )
)
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]

pytestmark = pytest.mark.skipif(
    not COMPAT_PYTHON.exists(),
    reason=f"no PyPI alluxiofs client at {COMPAT_PYTHON} (run `make compat-venv`)",
)


def _port_free_on_all(hosts: list[str]) -> int:
    """A port that is free on every host address (picked by the kernel on the first)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        try:
            for h in hosts:
                with socket.socket() as t:
                    t.bind((h, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on all of " + ", ".join(hosts))


def _run_pypi_client(cfg: dict) -> dict:
    proc = subprocess.run(
        [str(COMPAT_PYTHON), str(HERE / "compat_pypi_client.py"), json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"PyPI client failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(result: dict, dataset, cfg: dict) -> None:
    sources = {f"s3://{p}": d for p, d in dataset.small.items()}
    sources[f"s3://{dataset.big_path}"] = dataset.big
    for url in cfg["urls"]:
        assert result["whole"][url] == hashlib.sha256(sources[url]).hexdigest(), url
        assert result["info"][url] == len(sources[url])
    for url, start, end, digest in result["ranges"]:
        assert digest == hashlib.sha256(sources[url][start:end]).hexdigest(), (url, start, end)


def _config(dataset, port: int) -> dict:
    small = sorted(p for p, d in dataset.small.items() if d)[:12]
    urls = [f"s3://{p}" for p in small] + [f"s3://{dataset.big_path}"]
    big = f"s3://{dataset.big_path}"
    n = len(dataset.big)
    ranges = [
        [big, 0, 100],
        [big, (1 << 20) - 7, (1 << 20) + 9],  # across a page boundary
        [big, n - 5000, n],
        [big, 3 << 20, (3 << 20) + (5 << 20) + 123],  # several pages
    ]
    return {"hosts": HOSTS, "port": port, "urls": urls, "ranges": ranges}


def test_pypi_client_static_worker_hosts(start_worker, bucket_mount, dataset):
    port = _port_free_on_all(HOSTS)
    workers = [start_worker(bucket_mount, host=h, port=port) for h in HOSTS]
    cfg = _config(dataset, port)
    result = _run_pypi_client(cfg)
    _check(result, dataset, cfg)
    # The pages came from our workers' page endpoint (no other route exists:
    # the client has no target filesystem to fall back to).
    served = sum(w.metrics().get("alluxiofs_bytes_served_total", 0) for w in workers)
    expected = sum(len(d) for p, d in dataset.small.items() if f"s3://{p}" in cfg["urls"])
    assert served >= expected + len(dataset.big)


def test_pypi_client_reads_unknown_path_id_with_clear_error(start_worker, bucket_mount, dataset):
    """A page request for a path_id the worker never saw is a 404 that says what to do."""
    import requests

    w = start_worker(bucket_mount)
    r = requests.get(f"{w.url}/v1/file/{'0' * 64}/page/0", timeout=10)
    assert r.status_code == 404
    assert "/v1/info" in r.json()["message"]


def test_pypi_client_etcd_discovery(start_worker, bucket_mount, dataset, etcd_server):
    """Our workers register in etcd the way Alluxio's do: the PyPI client finds them there."""
    workers = [
        start_worker(bucket_mount, extra_args=["--etcd", etcd_server.endpoint,
                                               "--etcd-lease-ttl", "5s"])
        for _ in range(3)
    ]  # fmt: skip
    cfg = _config(dataset, 0)
    cfg.update(etcd_host="127.0.0.1", etcd_port=etcd_server.client_port)
    result = _run_pypi_client(cfg)
    _check(result, dataset, cfg)
    served = [w.metrics().get("alluxiofs_bytes_served_total", 0) for w in workers]
    assert sum(served) >= len(dataset.big)
