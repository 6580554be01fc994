"""Real processes for the end-to-end tests: cache workers on loopback ports.

Imported by ``conftest.py`` (fixtures) and by test modules (helpers). The S3
server side lives in ``scripts/s3server.py``, shared with the demo.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import s3server  # noqa: E402  (needs the sys.path entry above)

S3Server = s3server.S3Server
start_s3_server = s3server.start_s3_server
free_port = s3server.free_port

STANDALONE_WORKER = REPO / "target" / "debug" / "alluxiofs-worker"


def worker_command() -> list[str]:
    """How to start a worker: ``python -m alluxiofs worker`` from this venv.

    ``$ALLUXIOFS_TEST_WORKER_BIN`` selects a standalone worker binary instead;
    when the Python package is not importable, ``target/debug/alluxiofs-worker``
    is used if it was built.
    """
    override = os.environ.get("ALLUXIOFS_TEST_WORKER_BIN")
    if override:
        return [override]
    if importlib.util.find_spec("alluxiofs") is None and STANDALONE_WORKER.exists():
        return [str(STANDALONE_WORKER)]
    return [sys.executable, "-m", "alluxiofs", "worker"]


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Parse Prometheus text exposition into ``(name, labels, value)`` samples."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError(f"unparsable metrics line: {line!r}")
        name, labels_text, value = m.groups()
        labels = {
            k: v.replace('\\"', '"').replace("\\\\", "\\")
            for k, v in _LABEL.findall(labels_text or "")
        }
        samples.append((name, labels, float(value)))
    return samples


class Worker:
    """One cache worker process started by the ``start_worker`` fixture."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        run_dir: Path,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        http: Mapping[str, object] | None = None,
    ):
        # requests' keyword arguments for the worker's own HTTP API: with
        # TLS, ``verify`` (the CA file) and ``cert`` (a client certificate).
        self.http = dict(http or {})
        self._base_args = list(args)
        self._listen_host = host
        self._env = dict(env)
        self.run_dir = run_dir
        self.name = name
        self.log_path = run_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.host = ""
        self.port = 0
        self.s3_port: int | None = None
        self.url = ""
        self.generation = 0
        self._start(port=port)

    # -- lifecycle ---------------------------------------------------------------

    def _start(self, timeout: float = 60.0, port: int = 0) -> None:
        self.generation += 1
        ready = self.run_dir / f"{self.name}.ready.{self.generation}.json"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        cmd = [*worker_command(), "--host", self._listen_host, "--port", str(port)]
        if "--s3-port" not in self._base_args:
            # Never Alluxio's fixed 29998 in tests: a free port (in the ready file).
            cmd += ["--s3-port", "0"]
        cmd += ["--ready-file", str(ready), *self._base_args]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.generation}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        info = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"worker {self.name} exited with {self.proc.returncode} before ready:\n"
                    f"{self.log_tail()}"
                )
            try:
                info = json.loads(ready.read_text())
                break
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.02)
        if info is None:
            self.kill()
            raise TimeoutError(
                f"worker {self.name}: no ready file after {timeout}s\n{self.log_tail()}"
            )
        self.host = info["host"]
        self.port = int(info["port"])
        self.url = info.get("url") or f"http://{self.host}:{self.port}"
        self.url = self.url.rstrip("/")
        self.s3_port = info.get("s3_port")
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"{self.url}/healthz", timeout=2, **self.http)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"worker {self.name}: /healthz not ok\n{self.log_tail()}")

    @property
    def s3_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS) of the worker's S3 endpoint."""
        if self.s3_port is None:
            raise RuntimeError(f"worker {self.name} has no S3 endpoint")
        scheme = self.url.split("://", 1)[0]
        return f"{scheme}://{self.host}:{self.s3_port}"

    @property
    def addr(self) -> str:
        """``host:port`` as passed in ``worker_hosts``."""
        return f"{self.host}:{self.port}"

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker (and anything in its process group); wait for it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait for a graceful exit (SIGKILL after ``timeout``); return the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Helpers it may have spawned go with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def restart(self, same_port: bool = False) -> Worker:
        """Stop and start again with the same arguments and cache dir.

        The port changes unless ``same_port``: clients hash workers by
        ``host:port``, so a test of cache persistence needs the same port.
        """
        port = self.port if same_port else 0
        self.stop()
        self._start(port=port)
        return self

    # -- observation -------------------------------------------------------------

    def healthz(self) -> dict:
        """GET /healthz as a dict (``worker_id``, ``cluster``, ``registration``, ...)."""
        r = requests.get(f"{self.url}/healthz", timeout=10, **self.http)
        r.raise_for_status()
        return r.json()

    def wait_registered(self, timeout: float = 20.0) -> None:
        """Wait until the worker is registered in etcd (``/healthz``: ``registration``)."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.healthz().get("registration")
            if state == "registered":
                return
            time.sleep(0.05)
        raise TimeoutError(
            f"worker {self.name}: not registered in etcd ({state})\n{self.log_tail()}"
        )

    def metrics_samples(self) -> list[tuple[str, dict[str, str], float]]:
        """All samples of GET /metrics."""
        r = requests.get(f"{self.url}/metrics", timeout=10, **self.http)
        r.raise_for_status()
        return parse_prometheus(r.text)

    def metrics(self) -> dict[str, float]:
        """Metric name -> value, summed over label sets."""
        out: dict[str, float] = {}
        for name, _labels, value in self.metrics_samples():
            out[name] = out.get(name, 0.0) + value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of ``name`` over the samples whose labels include ``labels``."""
        return sum(
            v
            for n, lab, v in self.metrics_samples()
            if n == name and all(lab.get(k) == want for k, want in labels.items())
        )

    def log_tail(self, limit: int = 6000) -> str:
        """The end of the worker's log file."""
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"Worker({self.name}, {self.addr}, alive={self.alive})"


def start_mount_worker(run_dir: Path, name: str, mount: str, env: Mapping[str, str]) -> Worker:
    """One worker mounting ``mount`` with a 1 GiB cache under ``run_dir`` (for module- or
    class-scoped fixtures; the ``start_worker`` fixture is per test). The caller stops it."""
    cache = run_dir / f"{name}-cache"
    cache.mkdir(parents=True, exist_ok=True)
    args = ["--mount", mount, "--cache-dir", str(cache), "--capacity", "1GiB"]
    return Worker(args, {**os.environ, **env}, run_dir, name)


def metric_total(workers: Iterable[Worker], name: str, **labels: str) -> float:
    """Sum a metric over the live workers among ``workers``."""
    return sum(w.metric(name, **labels) for w in workers if w.alive)


def ufs_requests(workers: Iterable[Worker], op: str | None = None) -> float:
    """``alluxiofs_ufs_requests_total`` summed over workers (optionally one ``op``)."""
    labels = {"op": op} if op else {}
    return metric_total(workers, "alluxiofs_ufs_requests_total", **labels)


def worker_hosts(workers: Iterable[Worker]) -> str:
    """The ``worker_hosts`` string for a list of workers."""
    return ",".join(w.addr for w in workers)


class TcpProxy:
    """A TCP proxy on a free loopback port in front of ``target``: a slow link
    (``delay`` seconds held back per chunk) or, between :meth:`down` and
    :meth:`up`, an outage (every connection, open or new, is reset)."""

    def __init__(self, target_host: str, target_port: int, delay: float = 0.0):
        import asyncio
        import threading

        self.target = (target_host, target_port)
        self.delay = delay
        self.port = free_port()
        self._down = False
        self._open: set = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "proxy did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _pipe(self, r, w) -> None:
        import asyncio

        try:
            while data := await r.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    @staticmethod
    def _reset(w) -> None:
        sock = w.get_extra_info("socket")
        if sock is not None:
            import socket
            import struct

            # SO_LINGER 0: close with a RST, as a dead server's host does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.close()

    async def _handle(self, r, w) -> None:
        import asyncio

        if self._down:
            self._reset(w)
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.close()
            return
        self._open.update((w, uw))
        try:
            await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))
        finally:
            self._open.difference_update((w, uw))

    def down(self) -> None:
        """From now on, reset every connection (the open ones too)."""

        def cut() -> None:
            self._down = True
            for w in list(self._open):
                self._reset(w)

        self._loop.call_soon_threadsafe(cut)

    def up(self) -> None:
        """Pass connections through again."""
        self._down = False

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


DELAY_PROXY_BIN = REPO / "target" / "debug" / "alluxiofs-delay-proxy"


def delay_proxy_bin() -> Path:
    """``alluxiofs-delay-proxy``: ``$ALLUXIOFS_TEST_DELAY_PROXY_BIN``, else this checkout's
    ``target/debug`` (or ``release``) build, else built now with cargo into ``target/``."""
    override = os.environ.get("ALLUXIOFS_TEST_DELAY_PROXY_BIN")
    if override:
        return Path(override)
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "alluxiofs-delay-proxy"
        if p.is_file():
            return p
    env = dict(os.environ, CARGO_TARGET_DIR=str(REPO / "target"))
    env["PATH"] = f"{Path.home() / '.cargo' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(
        ["cargo", "build", "-q", "-p", "alluxiofs-delay-proxy"], cwd=REPO, env=env, check=True
    )
    return DELAY_PROXY_BIN


class FaultProxy:
    """``alluxiofs-delay-proxy`` on a free loopback port in front of ``target``
    (``host:port``), with faults set while it runs (:meth:`set`): ``pass``,
    ``slowdown`` and ``unavailable`` (503 with the S3 error code), ``reset``
    (RST before an answer), ``cut`` (RST in the middle of one), each with a
    probability per HTTP request. :meth:`stats` reads its counters."""

    def __init__(self, target: str, run_dir: Path, rtt_ms: float = 0.0):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.control = run_dir / "proxy-faults"
        self.stats_path = run_dir / "proxy-stats.json"
        self.log_path = run_dir / "proxy.log"
        ready = run_dir / "proxy-ready.json"
        self.control.write_text("pass\n")
        self._setting = "pass"
        cmd = [
            str(delay_proxy_bin()), "--listen", "127.0.0.1:0", "--target", target,
            "--rtt-ms", str(rtt_ms), "--ready-file", str(ready),
            "--stats-file", str(self.stats_path), "--control-file", str(self.control),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + 20
        self.addr = ""
        while not self.addr:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the delay proxy exited: {self.log_path.read_text()}")
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError("the delay proxy did not start")
            try:
                self.addr = json.loads(ready.read_text())["addr"]
            except (OSError, ValueError):
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def set(self, mode: str, probability: float = 1.0, timeout: float = 5.0) -> None:
        """Apply ``mode`` (with ``probability``) to every request from now on; returns
        once the proxy has logged the change."""
        setting = "pass" if mode == "pass" else f"{mode} {probability}"
        if setting == self._setting:
            return
        want = f"faults: {mode} " if mode != "pass" else "faults: pass"
        before = self.log_path.read_text().count(want)
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(setting + "\n")
        os.replace(tmp, self.control)
        deadline = time.monotonic() + timeout
        while self.log_path.read_text().count(want) <= before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the delay proxy did not apply {setting!r}")
            time.sleep(0.01)
        self._setting = setting

    def stats(self) -> dict[str, int]:
        """The proxy's counters (connections, bytes, http_requests, faults_injected)."""
        for _ in range(50):
            try:
                return json.loads(self.stats_path.read_text())
            except (OSError, ValueError):
                time.sleep(0.02)
        return {}

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
