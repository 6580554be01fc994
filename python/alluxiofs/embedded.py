"""The embedded local worker: caching with nothing to set up.

When a filesystem is created without ``worker_hosts`` (or etcd), it uses one
cache worker on this machine, started on first use as a detached process
(``python -m alluxiofs worker``) and shared by every process of the user: the
next process finds it again through its state file and reuses it. One worker
runs per UFS configuration (protocol plus the options that change what it
reads), each with its own page store under ``$ALLUXIOFS_HOME/pages``.

The worker listens on 127.0.0.1 on a port it picks, and requires a random
bearer token kept in a file only the user can read, so other users of the
machine cannot read your files through it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STARTUP_TIMEOUT = 60.0


def home() -> Path:
    """Where the embedded worker keeps its state and pages.

    ``$ALLUXIOFS_HOME``, else ``$XDG_CACHE_HOME/alluxiofs``, else ``~/.cache/alluxiofs``.
    """
    env = os.environ.get("ALLUXIOFS_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "alluxiofs" if xdg else Path.home() / ".cache" / "alluxiofs"


@dataclass(frozen=True)
class LocalWorker:
    """Address and credentials of a running embedded worker."""

    host: str
    port: int
    pid: int
    token: str
    name: str

    @property
    def addr(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"


def _s3_env(opts: dict[str, Any]) -> dict[str, str]:
    """Translate s3fs-style options into the environment the worker's S3 client reads."""
    env: dict[str, str] = {}
    ck = opts.get("client_kwargs") or {}
    endpoint = opts.get("endpoint_url") or ck.get("endpoint_url")
    region = ck.get("region_name") or opts.get("region_name") or opts.get("region")
    key = opts.get("key") or opts.get("aws_access_key_id") or ck.get("aws_access_key_id")
    secret = (
        opts.get("secret") or opts.get("aws_secret_access_key") or ck.get("aws_secret_access_key")
    )
    token = opts.get("token") or opts.get("aws_session_token")
    if endpoint:
        env["AWS_ENDPOINT"] = str(endpoint)
        env["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
        if str(endpoint).startswith("http://"):
            env["AWS_ALLOW_HTTP"] = "true"
    if region:
        env["AWS_REGION"] = str(region)
    if key:
        env["AWS_ACCESS_KEY_ID"] = str(key)
    if secret:
        env["AWS_SECRET_ACCESS_KEY"] = str(secret)
    if token:
        env["AWS_SESSION_TOKEN"] = str(token)
    if opts.get("anon"):
        env["AWS_SKIP_SIGNATURE"] = "true"
    return env


def worker_env(protocol: str, target_options: dict[str, Any] | None) -> dict[str, str]:
    """Environment for an embedded worker serving ``protocol`` with these target options."""
    if protocol == "s3":
        return _s3_env(target_options or {})
    return {}


def _name(protocol: str, env: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps([protocol, sorted(env.items())]).encode()).hexdigest()
    return f"{protocol}-{digest[:12]}"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (also one of another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1.0) as r:
            return r.status == 200
    except OSError:
        return False


def is_running(worker: LocalWorker) -> bool:
    """Whether ``worker``'s process is still alive (a signal-0: cheap enough for every reuse)."""
    return pid_alive(worker.pid)


def _read_state(state: Path, token_file: Path) -> LocalWorker | None:
    try:
        info = json.loads(state.read_text())
        token = token_file.read_text().strip()
        worker = LocalWorker(info["host"], int(info["port"]), int(info["pid"]), token, state.stem)
    except (OSError, ValueError, KeyError):
        return None
    if pid_alive(worker.pid) and _healthy(worker.host, worker.port):
        return worker
    return None


def ensure_local_worker(
    protocol: str,
    target_options: dict[str, Any] | None,
    *,
    capacity: int,
    memory_capacity: int,
    page_size: int,
) -> LocalWorker:
    """Find the embedded worker for this UFS configuration, or start it."""
    env = worker_env(protocol, target_options)
    name = _name(protocol, env)
    root = home()
    wdir = root / "workers"
    wdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = wdir / f"{name}.json"
    token_file = wdir / f"{name}.token"
    with open(wdir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _read_state(state, token_file)
        if found:
            return found
        with contextlib.suppress(FileNotFoundError):
            state.unlink()
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        mount = "file:///" if protocol == "file" else f"{protocol}://"
        pages = root / "pages" / name
        pages.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_path = wdir / f"{name}.log"
        cmd = [
            sys.executable, "-m", "alluxiofs", "worker",
            "--host", "127.0.0.1", "--port", "0", "--s3-port", "off",
            "--mount", mount,
            "--cache-dir", str(pages),
            "--capacity", str(capacity),
            "--memory-capacity", str(memory_capacity),
            "--page-size", str(page_size),
            "--auth-token-file", str(token_file),
            "--ready-file", str(state),
        ]  # fmt: skip
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **env},
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the embedded alluxiofs worker exited with code {proc.returncode}; "
                    f"its log {log_path} ends with:\n{_tail(log_path)}"
                )
            found = _read_state(state, token_file)
            if found:
                return found
            time.sleep(0.05)
        proc.kill()
        raise TimeoutError(
            f"the embedded alluxiofs worker did not start within {STARTUP_TIMEOUT:.0f}s; "
            f"see {log_path}:\n{_tail(log_path)}"
        )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def running() -> list[LocalWorker]:
    """The embedded workers of this ``ALLUXIOFS_HOME`` that are up."""
    out = []
    wdir = home() / "workers"
    for state in sorted(wdir.glob("*.json")) if wdir.is_dir() else []:
        w = _read_state(state, state.with_suffix(".token"))
        if w:
            out.append(w)
    return out


def stop_all(timeout: float = 10.0) -> int:
    """Stop every embedded worker of this ``ALLUXIOFS_HOME`` (SIGTERM, then SIGKILL).

    Returns how many were stopped. Their pages stay on disk for the next start.
    """
    wdir = home() / "workers"
    if not wdir.is_dir():
        return 0
    stopped = 0
    for state in sorted(wdir.glob("*.json")):
        try:
            pid = int(json.loads(state.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _reap(pid)
            stopped += 1
        with contextlib.suppress(FileNotFoundError):
            state.unlink()
    return stopped


def _reap(pid: int) -> None:
    # The worker is our child when this process started it; collect it so it
    # does not linger as a zombie that still looks alive to os.kill(pid, 0).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
