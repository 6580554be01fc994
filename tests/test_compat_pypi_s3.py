"""Alluxio's own client from PyPI, 1.1.17, reads through our workers' S3 endpoint.

1.1.17 (the line after 1.0.x) asks a worker for metadata over its HTTP API
(``/v1/info``, ``/v1/files``, and ``/v1/node``, the owner of a path: with
a static worker list, and no etcd, ours names itself, so the client keeps
the worker its list picked) and reads every byte with ``GET
http://<worker host>:29998<path>`` and a ``Range`` header: the S3 endpoint of
the worker, on Alluxio's port, hard-coded. Shown here, with the client in its
own virtual environment (``make compat-venv-1.1``) and configured with no
target filesystem, so it has no UFS to fall back to: ``info``, ``ls``,
``open``/``read`` (whole files and seeks), ``cat_file`` of whole files and of
ranges (across a 1 MiB page boundary, over several pages, at the end), twice
(cold, then from the cache), all equal to the source bytes; the client sent
data requests only to port 29998, and the workers' counters (``/metrics``)
show the bytes served and no other data endpoint used.

Why a network namespace: a fixed port on the host could be taken (and tests
here never use one), but 1.1.17 can only reach port 29998. So the two workers
(``--s3-port 29998 --s3-anonymous``, one per address, as on two hosts) and the
client run in a private namespace made for the test, where 29998 is free;
two veth pairs (a /30 each of a 10.232.B.0/24 block picked at run time that no
route uses) let the test read the workers' counters. The UFS is a local
directory (``file://`` mount): the namespace shares the filesystem. Needs root
and iproute2 (skipped elsewhere; CI runs as root); the namespace is removed
and the workers stopped (SIGTERM, then SIGKILL) whatever happens.

``cat_file(url)`` with no ``end`` makes 1.1.17 send ``Range: bytes=0--2``;
Alluxio's S3 API and AWS ignore a Range they cannot parse and send the whole
object, and so does ours (``test_bare_cat_file_whole_object``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from harness import parse_prometheus, worker_command

HERE = Path(__file__).resolve().parent
COMPAT_PYTHON = Path(
    os.environ.get(
        "ALLUXIOFS_COMPAT_1_1_PYTHON",
        Path.home() / ".cache" / "alluxiofs" / "compat-1.1.17" / "bin" / "python",
    )
)
S3_PORT = 29998  # 1.1.17 reads from this port of every worker, whatever it is told
MIB = 1 << 20

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _source_files() -> dict[str, bytes]:
    """Relative path -> content: empty, tiny, around a page, several pages, odd names."""
    rnd = random.Random(1117)
    sizes = {
        "train/a/f000.bin": 0,
        "train/a/f001.bin": 1,
        "train/a/f002.bin": MIB - 1,
        "train/a/f003.bin": MIB,
        "train/b/c/f004.bin": MIB + 1,
        "train/b/c/f005.bin": 300_000,
        "train/b/k=v+w.bin": 4096,
        "train/big.bin": 5 * MIB + 12345,  # under the client's 20 MiB per request
    }
    return {rel: rnd.randbytes(n) for rel, n in sizes.items()}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


class Cluster:
    """Two workers in a namespace: ``ns``, ``ufs`` (the mounted directory), ``files``,
    ``workers`` ([{"addr", "port", "log"}])."""

    def __init__(self, ns: str, ufs: Path, files: dict[str, bytes], run_dir: Path):
        self.ns, self.ufs, self.files, self.run_dir = ns, ufs, files, run_dir
        self.workers: list[dict] = []

    def url(self, rel: str) -> str:
        return f"file://{self.ufs}/{rel}"

    def metrics(self) -> list[list[tuple[str, dict[str, str], float]]]:
        """Per worker: the samples of its ``/metrics``."""
        out = []
        for w in self.workers:
            r = requests.get(f"http://{w['addr']}:{w['port']}/metrics", timeout=10)
            r.raise_for_status()
            out.append(parse_prometheus(r.text))
        return out

    def logs(self) -> str:
        return "\n".join(
            f"--- worker {w['addr']} log (tail)\n{w['log'].read_text()[-3000:]}"
            for w in self.workers
        )

    def run_client(self, cfg: dict) -> dict:
        """Run compat_pypi_1_1_client.py with ``cfg`` in the namespace; its JSON."""
        cfg = {"workers": [f"{w['addr']}:{w['port']}" for w in self.workers], **cfg}
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["ALLUXIO_PYTHON_SDK_LOG_PATH"] = str(self.run_dir)  # its user.log, else ./logs
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns, str(COMPAT_PYTHON),
             str(HERE / "compat_pypi_1_1_client.py"), json.dumps(cfg)],
            capture_output=True, text=True, timeout=240, env=env, cwd=self.run_dir,
        )  # fmt: skip
        assert proc.returncode == 0, (
            f"1.1.17 client failed:\n{proc.stdout}\n{proc.stderr[-5000:]}\n{self.logs()}"
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A namespace with two workers on two addresses, S3 on 29998 of each; removed after."""
    if not COMPAT_PYTHON.exists():
        pytest.fail(
            f"no PyPI alluxiofs 1.1.17 client at {COMPAT_PYTHON}: `make compat-venv-1.1` "
            "installs it (`make test` does first)"
        )
    run_dir = tmp_path_factory.mktemp("compat-s3")
    ufs = run_dir / "ufs"
    files = _source_files()
    for rel, data in files.items():
        (ufs / rel).parent.mkdir(parents=True, exist_ok=True)
        (ufs / rel).write_bytes(data)
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    block = next(b for b in random.sample(range(256), 256) if f"10.232.{b}." not in routes)
    tag = f"{os.getpid() % 10000:04d}"
    ns = f"afs{tag}s3"
    c = Cluster(ns, ufs, files, run_dir)
    made_ns = False
    procs: list[subprocess.Popen] = []
    try:
        _ip("netns", "add", ns)
        made_ns = True
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for i in range(2):
            outer, inner = f"afs{tag}s3h{i}", f"afs{tag}s3p{i}"
            here, there = f"10.232.{block}.{4 * i + 1}", f"10.232.{block}.{4 * i + 2}"
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("addr", "add", f"{here}/30", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{there}/30", "dev", inner)
            _ip("netns", "exec", ns, "ip", "link", "set", inner, "up")
        for i in range(2):
            addr = f"10.232.{block}.{4 * i + 2}"
            ready = run_dir / f"w{i}.ready.json"
            log_path = run_dir / f"w{i}.log"
            cmd = ["ip", "netns", "exec", ns, *worker_command(),
                   "--host", addr, "--port", "0",
                   "--s3-port", str(S3_PORT), "--s3-anonymous",
                   "--mount", f"file://{ufs}",
                   "--cache-dir", str(run_dir / f"cache{i}"), "--capacity", "1GiB",
                   "--local-socket", "off",  # the filesystem is shared: no socket files
                   "--ready-file", str(ready)]  # fmt: skip
            with open(log_path, "wb") as log:
                procs.append(
                    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
                )  # fmt: skip
            c.workers.append({"addr": addr, "log": log_path})
            deadline = time.monotonic() + 60
            while True:
                assert procs[-1].poll() is None, f"worker exited:\n{log_path.read_text()}"
                assert time.monotonic() < deadline, f"worker not ready:\n{log_path.read_text()}"
                with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                    info = json.loads(ready.read_text())
                    break
                time.sleep(0.05)
            assert info["host"] == addr and info["s3_port"] == S3_PORT, info
            c.workers[-1]["port"] = int(info["port"])
            health = requests.get(f"http://{addr}:{info['port']}/healthz", timeout=10).json()
            assert health["s3_port"] == S3_PORT, health
        yield c
    finally:
        for p in procs:
            _stop(p)
        if made_ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # and the veths


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _total(per_worker: list, metric: str, **labels: str) -> float:
    """Sum of ``metric`` over all workers and the samples whose labels include ``labels``."""
    return sum(
        v
        for samples in per_worker
        for name, lab, v in samples
        if name == metric and all(lab.get(k) == want for k, want in labels.items())
    )


def _delta(before: list, after: list, metric: str, **labels: str) -> float:
    return _total(after, metric, **labels) - _total(before, metric, **labels)


def test_pypi_1_1_client_reads_through_s3_endpoint(cluster):
    files = cluster.files
    big = "train/big.bin"
    n = len(files[big])
    cfg = {
        "info": [cluster.url(r) for r in files] + [cluster.url("train/b")],
        "ls": [cluster.url("train"), cluster.url("train/b/c")],
        "whole": [cluster.url(r) for r in files],
        "ranges": [
            [cluster.url(big), 0, 100],
            [cluster.url(big), MIB - 7, MIB + 9],  # across a page boundary
            [cluster.url(big), 2 * MIB - 1, 4 * MIB + 1],  # several pages
            [cluster.url(big), n - 5000, n],  # the end
            [cluster.url(big), n - 1, n],  # the last byte
            [cluster.url("train/b/c/f004.bin"), MIB, MIB + 1],  # the one byte of page 1
        ],
        "seeks": [
            [cluster.url(big), [[MIB - 10, 20], [3 * MIB, MIB], [17, 3], [n - 7, 100]]],
        ],
        "passes": 2,  # cold, then warm
    }
    before = cluster.metrics()
    out = cluster.run_client(cfg)
    after = cluster.metrics()

    # That client, with no UFS to fall back to, and no operation failed over to one.
    assert out["client_version"] == "1.1.17"
    assert out["ufs_fallback_possible"] is False
    assert out["client_errors"] == {}

    for rel, data in files.items():
        i = out["info"][cluster.url(rel)]
        assert i == {"name": f"{cluster.ufs}/{rel}", "type": "file", "size": len(data)}, rel
    assert out["info"][cluster.url("train/b")]["type"] == "directory"
    assert out["ls"][cluster.url("train")] == sorted([
        [f"{cluster.ufs}/train/a", "directory", 0],
        [f"{cluster.ufs}/train/b", "directory", 0],
        [f"{cluster.ufs}/train/big.bin", "file", n],
    ])  # fmt: skip
    assert out["ls"][cluster.url("train/b/c")] == sorted(
        [f"{cluster.ufs}/{r}", "file", len(files[r])] for r in files if r.startswith("train/b/c/")
    )

    assert len(out["passes"]) == 2
    for p in out["passes"]:
        for rel, data in files.items():
            assert p["open_read"][cluster.url(rel)] == _sha(data), rel
            if data:
                assert p["cat_whole"][cluster.url(rel)] == _sha(data), rel
        for url, start, end, digest in p["ranges"]:
            rel = url.removeprefix(f"file://{cluster.ufs}/")
            assert digest == _sha(files[rel][start:end]), (url, start, end)
        assert len(p["ranges"]) == len(cfg["ranges"])
        for url, offset, length, digest in p["seeks"]:
            rel = url.removeprefix(f"file://{cluster.ufs}/")
            assert digest == _sha(files[rel][offset : offset + length]), (url, offset, length)

    # What the client sent: data only as S3 GETs with a Range on port 29998 of
    # a listed worker, metadata only to the HTTP port.
    hosts = {w["addr"]: w["port"] for w in cluster.workers}
    s3_gets = [s for s in out["sent"] if s["via"] == "pycurl"]
    assert s3_gets, out["sent"]
    for s in s3_gets:
        u = urlsplit(s["url"])
        assert u.hostname in hosts and u.port == S3_PORT, s
        assert u.path.removeprefix(str(cluster.ufs) + "/") in files, s
        assert set(s["headers"]) == {"Range"} and s["headers"]["Range"].startswith("bytes="), s
        assert "error" not in s and s["bytes"] > 0, s
    http = [s for s in out["sent"] if s["via"] == "requests"]
    for s in http:
        u = urlsplit(s["url"])
        assert s["method"] == "GET" and hosts.get(u.hostname) == u.port, s
        assert u.path in ("/v1/node", "/v1/info", "/v1/files"), s
        assert s["status"] == 200, s
        if u.path == "/v1/node":
            assert s["answer"] == {"Host": u.hostname, "HttpServerPort": u.port}, s
    read = sum(s["bytes"] for s in s3_gets)

    # The workers served those bytes, through the S3 endpoint: their HTTP API
    # answered metadata and owners only, no page or range.
    served = _delta(before, after, "alluxiofs_bytes_served_total")
    assert served >= read, (served, read)
    endpoints = {
        (lab["endpoint"], lab["status"])
        for samples in after
        for name, lab, _ in samples
        if name == "alluxiofs_requests_total"
    }
    allowed = {("/v1/info", "200"), ("/v1/files", "200"), ("/v1/node", "200"),
               ("/healthz", "200"), ("/metrics", "200")}  # fmt: skip
    assert endpoints <= allowed, endpoints
    nodes = sum(urlsplit(s["url"]).path == "/v1/node" for s in http)
    assert _delta(before, after, "alluxiofs_requests_total", endpoint="/v1/node") == nodes
    if any(name == "alluxiofs_s3_bytes_out_total" for m in after for name, _, _ in m):
        assert _delta(before, after, "alluxiofs_s3_bytes_out_total") == read
        assert _delta(before, after, "alluxiofs_s3_requests_total") == len(s3_gets)
        assert _delta(before, after, "alluxiofs_s3_errors_total") == 0
    # Each byte came from the UFS at most once: the second pass was cache hits.
    ufs = _delta(before, after, "alluxiofs_ufs_bytes_total")
    assert 0 < ufs <= sum(len(d) for d in cluster.files.values()), (ufs, read)


def test_bare_cat_file_whole_object(cluster):
    files = {r: d for r, d in cluster.files.items() if not r.endswith("big.bin")}
    out = cluster.run_client({"bare_cat": [cluster.url(r) for r in files]})
    assert out["ufs_fallback_possible"] is False
    sent = [s for s in out["sent"] if s["via"] == "pycurl"]
    assert {s["headers"]["Range"] for s in sent} == {"bytes=0--2"}, sent
    for rel, data in files.items():
        assert out["bare_cat"][cluster.url(rel)] == _sha(data), (rel, sent)
