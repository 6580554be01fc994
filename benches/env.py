"""The benchmark's world: a remote-looking S3 server, the delaying proxy, cache workers.

* ``Network``: ``scripts/bench-net.sh up/down`` (a namespace behind a veth pair
  shaped by ``tc tbf``), or loopback when namespaces are unavailable.
* ``start_garage``: Garage (with the TCP_NODELAY shim) inside that namespace,
  bound to its address; the same setup steps as ``scripts/s3server.py``.
* ``DelayProxy``: ``alluxiofs-delay-proxy`` in the root namespace in front of
  the server; every reader and worker reaches S3 through it, and its counters
  (requests, response bytes) are the UFS traffic the suite reports.
* ``Cluster``: 1 or 3 workers on 127.0.0.1..3 sharing one port (the PyPI
  client knows workers by host name and one port), fresh cache directories.

Everything started here is stopped by ``close()``/``stop()`` and at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

import s3server  # noqa: E402  (scripts/s3server.py: Garage setup steps)
from harness import Worker  # noqa: E402  (tests/harness.py: worker process + metrics)

PROXY_BIN = REPO / "target" / "release" / "alluxiofs-delay-proxy"
_cleanups: list = []


@atexit.register
def _cleanup_all() -> None:
    while _cleanups:
        with contextlib.suppress(Exception):
            _cleanups.pop()()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Network:
    """The S3 server's side of the link: a shaped namespace, or loopback."""

    def __init__(self, use_netns: bool, rate: str):
        self.ns = ""
        self.ns_ip = "127.0.0.1"
        self.rate = rate
        self.note = "loopback (no network namespace)"
        if not use_netns:
            return
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
            print("bench: no root/ip/tc: running on loopback", file=sys.stderr)
            return
        name = f"afsb{os.getpid() % 100000}"
        out = subprocess.run(
            [str(REPO / "scripts" / "bench-net.sh"), "up", "--name", name, "--rate", rate],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            print(f"bench: bench-net.sh up failed, loopback: {out.stderr}", file=sys.stderr)
            return
        self.ns = name
        _cleanups.append(self.close)
        env = dict(line.split("=", 1) for line in out.stdout.split())
        self.ns_ip = env["BENCH_NS_IP"]
        self.note = f"network namespace behind a veth pair, tc tbf {rate} each way"

    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.ns] if self.ns else []

    def close(self) -> None:
        if self.ns:
            subprocess.run(
                [str(REPO / "scripts" / "bench-net.sh"), "down", "--name", self.ns],
                capture_output=True,
            )
            self.ns = ""


def start_garage(net: Network, workdir: Path, bucket: str) -> s3server.S3Server:
    """Garage bound to the namespace's address (``endpoint_url`` is the direct one)."""
    if not s3server.garage_available():
        raise FileNotFoundError(f"{s3server.GARAGE_BIN} missing: make garage")
    workdir.mkdir(parents=True, exist_ok=True)
    server = s3server.start_garage(
        bucket, workdir, host=net.ns_ip, command_prefix=net.prefix(), capacity="100G"
    )
    _cleanups.append(server.stop)
    return server


class DelayProxy:
    """``alluxiofs-delay-proxy`` on 127.0.0.1 in front of ``target`` (host:port)."""

    def __init__(self, target: str, rtt_ms: float, workdir: Path, log_requests: bool = False):
        if not PROXY_BIN.is_file():
            raise FileNotFoundError(
                f"{PROXY_BIN} missing: cargo build --release -p alluxiofs-delay-proxy"
            )
        self.rtt_ms = rtt_ms
        ready = workdir / "proxy.ready.json"
        self.stats_path = workdir / "proxy.stats.json"
        for p in (ready, self.stats_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self.proc = subprocess.Popen(
            [
                str(PROXY_BIN),
                "--listen",
                "127.0.0.1:0",
                "--target",
                target,
                "--rtt-ms",
                str(rtt_ms),
                "--ready-file",
                str(ready),
                "--stats-file",
                str(self.stats_path),
            ]
            + (["--log-requests"] if log_requests else []),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            # --log-requests: every request line, for finding what reached the UFS.
            stderr=open(workdir / "proxy.requests.log", "wb") if log_requests else None,
            start_new_session=True,
        )
        _cleanups.append(self.stop)
        deadline = time.monotonic() + 10
        while not ready.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("delay proxy did not start")
            time.sleep(0.02)
        time.sleep(0.02)
        self.addr = json.loads(ready.read_text())["addr"]

    def stats(self) -> dict:
        time.sleep(0.25)
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _port_free_on_all(hosts: list[str]) -> int:
    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for h in hosts[1:]:
                with socket.socket() as s:
                    s.bind((h, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on all of " + ", ".join(hosts))


class Cluster:
    """``n`` workers on 127.0.0.1..n, one port, empty caches, reading S3 through the proxy."""

    def __init__(self, n: int, mount: str, s3_env: dict, workdir: Path, capacity: str):
        self.hosts = [f"127.0.0.{i + 1}" for i in range(n)]
        self.port = _port_free_on_all(self.hosts)
        self.workdir = workdir
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        env = dict(os.environ, **s3_env)
        self.workers: list[Worker] = []
        _cleanups.append(self.stop)
        for i, h in enumerate(self.hosts):
            args = [
                "--mount",
                mount,
                "--cache-dir",
                str(workdir / f"cache{i}"),
                "--capacity",
                capacity,
                "--log-level",
                "warn",
            ]
            self.workers.append(Worker(args, env, workdir, f"w{i}", host=h, port=self.port))

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None]

    def urls(self) -> list[str]:
        return [w.url for w in self.workers]

    def stop(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop()
        self.workers = []
        shutil.rmtree(self.workdir, ignore_errors=True)
