"""The benchmark's world: a remote-looking S3 server, the delaying proxy, cache workers.

* ``Network``: ``scripts/bench-net.sh up/down`` (a namespace behind a veth pair
  shaped by ``tc tbf``), or loopback when namespaces are unavailable.
* ``start_garage``: Garage (with the TCP_NODELAY shim) inside that namespace,
  bound to its address; the same setup steps as ``scripts/s3server.py``.
* ``DelayProxy``: ``alluxiofs-delay-proxy`` in the root namespace in front of
  the server; every reader and worker reaches S3 through it, and its counters
  (requests, response bytes) are the UFS traffic the suite reports.
* ``Cluster``: 1 or 3 workers on 127.0.0.1..3 sharing one port (the PyPI
  client knows workers by host name and one port), fresh cache directories,
  each with its same-node socket (``ALLUXIOFS_WORKER_LOCAL_SOCKET``) where the
  reader can reach it, as a worker on the reader's own node.
* ``RemoteCluster``: workers that look like workers on other hosts. Each runs
  in a network namespace of its own behind an unshaped veth pair
  (``bench-net.sh up --rate none``), reached by the reader at the namespace's
  address, with S3 through a delay proxy of its own on the root side of that
  veth. It is started as ``ip netns exec NS sh -c 'mount -t tmpfs tmpfs DIR &&
  exec WORKER ...'`` with its socket at ``DIR/worker.sock``: ``ip netns exec``
  gives it a private mount namespace, so that tmpfs and the socket in it are
  invisible to the reader, as another host's ``/run`` would be, and the reader
  can only use the HTTP path.

Everything started here is stopped by ``close()``/``stop()`` and at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

import s3server  # noqa: E402  (scripts/s3server.py: Garage setup steps)
from harness import Worker  # noqa: E402  (tests/harness.py: worker process + metrics)
from harness import worker_command as harness_worker_command  # noqa: E402

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

    def __init__(self, use_netns: bool, rate: str, name: str | None = None):
        """``rate``: tc tbf rate of both ends of the veth, or ``"none"`` (unshaped)."""
        self.ns = ""
        self.ns_ip = "127.0.0.1"
        self.host_ip = "127.0.0.1"
        self.rate = rate
        self.note = "loopback (no network namespace)"
        if not use_netns:
            return
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
            print("bench: no root/ip/tc: running on loopback", file=sys.stderr)
            return
        name = name or f"afsb{os.getpid() % 100000}"
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
        self.host_ip = env["BENCH_HOST_IP"]
        shaping = "unshaped" if rate == "none" else f"tc tbf {rate} each way"
        self.note = f"network namespace behind a veth pair, {shaping}"

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
    """``alluxiofs-delay-proxy`` on ``listen`` (127.0.0.1, a free port) in front of
    ``target`` (host:port); ``tag`` keeps the files of several proxies apart."""

    def __init__(
        self,
        target: str,
        rtt_ms: float,
        workdir: Path,
        log_requests: bool = False,
        listen: str = "127.0.0.1:0",
        tag: str = "proxy",
    ):
        if not PROXY_BIN.is_file():
            raise FileNotFoundError(
                f"{PROXY_BIN} missing: cargo build --release -p alluxiofs-delay-proxy"
            )
        self.rtt_ms = rtt_ms
        ready = workdir / f"{tag}.ready.json"
        self.stats_path = workdir / f"{tag}.stats.json"
        for p in (ready, self.stats_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self.proc = subprocess.Popen(
            [
                str(PROXY_BIN),
                "--listen",
                listen,
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
            stderr=open(workdir / f"{tag}.requests.log", "wb") if log_requests else None,
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
        self.sockets: list[str] = []
        _cleanups.append(self.stop)
        for i, h in enumerate(self.hosts):
            # Same node as the reader: its short-circuit socket is reachable.
            sock = str(workdir / f"w{i}.sock")
            self.sockets.append(sock)
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
            wenv = dict(env, ALLUXIOFS_WORKER_LOCAL_SOCKET=sock)
            self.workers.append(Worker(args, wenv, workdir, f"w{i}", host=h, port=self.port))

    def addrs(self) -> list[str]:
        """``host:port`` of every worker (``worker_hosts``)."""
        return [w.addr for w in self.workers]

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


# The command a remote worker runs: into its namespace, a private tmpfs on DIR
# (its /run), then the worker. `ip netns exec` unshares the mount namespace and
# makes it a slave of ours, so the tmpfs never shows on the reader's side.
_REMOTE_WRAPPER = """#!/bin/sh
# written by benches/env.py (RemoteCluster): worker {i} as another host
exec ip netns exec {ns} sh -c 'mount -t tmpfs -o size=16m tmpfs "$0" && exec "$@"' \\
    {run} {worker} "$@"
"""


class RemoteCluster:
    """``n`` workers on "other hosts": a network namespace, an address and a delay
    proxy to S3 each; their same-node sockets live in tmpfs mounts the reader cannot
    see (see the module header). ``target`` is the S3 server's host:port."""

    def __init__(
        self,
        n: int,
        mount: str,
        s3_env: dict,
        workdir: Path,
        capacity: str,
        target: str,
        rtt_ms: float,
    ):
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise RuntimeError("a remote worker needs root and ip (a network namespace of its own)")
        self.workdir = workdir
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        self.workers: list[Worker] = []
        self.nets: list[Network] = []
        self.proxies: list[DelayProxy] = []
        self.sockets: list[str] = []
        _cleanups.append(self.stop)
        worker = " ".join(shlex.quote(a) for a in harness_worker_command())
        try:
            for i in range(n):
                net = Network(True, "none", name=f"afsr{os.getpid() % 10000}{i}")
                self.nets.append(net)
                if not net.ns:
                    raise RuntimeError("bench-net.sh up failed for a remote worker's namespace")
                # S3 as the worker sees it: a proxy on our end of its veth (the one
                # on 127.0.0.1 is not reachable from inside the namespace).
                listen = f"{net.host_ip}:0"
                proxy = DelayProxy(target, rtt_ms, workdir, listen=listen, tag=f"proxy{i}")
                self.proxies.append(proxy)
                endpoint = f"http://{proxy.addr}"
                env = dict(os.environ, **s3_env)
                env.update(AWS_ENDPOINT=endpoint, AWS_ENDPOINT_URL=endpoint)
                run = workdir / f"run{i}"
                run.mkdir()
                sock = str(run / "worker.sock")
                self.sockets.append(sock)
                env["ALLUXIOFS_WORKER_LOCAL_SOCKET"] = sock
                wrapper = workdir / f"w{i}.sh"
                wrapper.write_text(
                    _REMOTE_WRAPPER.format(i=i, ns=net.ns, run=shlex.quote(str(run)), worker=worker)
                )
                wrapper.chmod(0o755)
                args = ["--mount", mount, "--cache-dir", str(workdir / f"cache{i}"),
                        "--capacity", capacity, "--log-level", "warn"]  # fmt: skip
                # tests/harness.py's Worker starts $ALLUXIOFS_TEST_WORKER_BIN when set.
                with mock.patch.dict(os.environ, ALLUXIOFS_TEST_WORKER_BIN=str(wrapper)):
                    self.workers.append(Worker(args, env, workdir, f"w{i}", host=net.ns_ip, port=0))
                if os.path.exists(sock):
                    raise RuntimeError(f"{sock} is visible outside the worker's namespace")
        except BaseException:
            self.stop()
            raise

    @property
    def hosts(self) -> list[str]:
        return [w.host for w in self.workers]

    def addrs(self) -> list[str]:
        return [w.addr for w in self.workers]

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None]

    def urls(self) -> list[str]:
        return [w.url for w in self.workers]

    def proxy_stats_paths(self) -> list[str]:
        """The stats files of the workers' own proxies (their UFS traffic)."""
        return [str(p.stats_path) for p in self.proxies]

    def stop(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.stop()
        for p in self.proxies:
            with contextlib.suppress(Exception):
                p.stop()
        for net in self.nets:
            with contextlib.suppress(Exception):
                net.close()
        self.workers, self.proxies, self.nets = [], [], []
        shutil.rmtree(self.workdir, ignore_errors=True)
