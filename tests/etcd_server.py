"""A real etcd (Debian's etcd-server) on loopback ports chosen at run time, for tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    """One etcd member: ``stop()`` kills it, ``start()`` restarts it on the same ports and data."""

    def __init__(self, tls: dict[str, str] | None = None) -> None:
        """``tls``: ``cert``, ``key`` and ``ca`` files: clients must speak TLS and present a
        certificate signed by ``ca`` (``--client-cert-auth``)."""
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="alluxiofs-etcd-"))
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS) for clients."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> None:
        """Start (or restart) the member and wait until it answers /health."""
        peer = f"http://127.0.0.1:{self.peer_port}"
        cmd = [
            ETCD,
            "--name", "default",
            "--data-dir", str(self.dir / "data"),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
        ]  # fmt: skip
        context = None
        if self.tls:
            cmd += [
                "--cert-file", self.tls["cert"],
                "--key-file", self.tls["key"],
                "--trusted-ca-file", self.tls["ca"],
                "--client-cert-auth",
            ]  # fmt: skip
            import ssl

            context = ssl.create_default_context(cafile=self.tls["ca"])
            context.load_cert_chain(self.tls["cert"], self.tls["key"])
        log = open(self.dir / "etcd.log", "ab")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(
                    f"{self.endpoint}/health", timeout=1, context=context
                ) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"etcd not healthy after {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        """Kill the member (its data stays for ``start``)."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        """Kill it and remove its data."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        """The end of etcd's log."""
        try:
            text = (self.dir / "etcd.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
