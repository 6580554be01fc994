"""Start a throwaway S3 server on loopback for the tests, the demo and benchmarks.

Two backends:

* **Garage** (``~/.cache/alluxiofs/tools/bin/garage``, installed by
  ``scripts/install-garage.sh``): a real S3 implementation, single node, sqlite
  metadata, run with the ``nodelay.so`` LD_PRELOAD shim so that its responses
  do not stall on Nagle's algorithm.
* **moto_server** (PyPI ``moto[server]``): in memory, slower per request, used
  when Garage is not installed.

``start_s3_server()`` picks Garage when present; ``kind="moto"|"garage"`` or
the environment variable ``ALLUXIOFS_TEST_S3`` forces one. Every server runs in
its own process group on ports chosen at run time, and is stopped by
``S3Server.stop()``, by ``with``, or at interpreter exit.

Run directly to keep a server up for manual experiments::

    python scripts/s3server.py [--kind garage|moto] [--bucket NAME]
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOOLS_DIR = Path(os.environ.get("ALLUXIOFS_TOOLS", Path.home() / ".cache" / "alluxiofs" / "tools"))
GARAGE_BIN = TOOLS_DIR / "bin" / "garage"
NODELAY_SO = TOOLS_DIR / "lib" / "nodelay.so"
REGION = "us-east-1"

_live: list[S3Server] = []


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def garage_available() -> bool:
    """True when the Garage binary is installed in the tools directory."""
    return GARAGE_BIN.is_file() and os.access(GARAGE_BIN, os.X_OK)


@dataclass
class S3Server:
    """A running S3 server with one bucket and one access key."""

    kind: str
    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = REGION
    workdir: Path | None = None
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    _owns_workdir: bool = field(default=False, repr=False)

    # -- clients -----------------------------------------------------------------

    def target_options(self) -> dict[str, Any]:
        """s3fs keyword arguments for this server (what alluxiofs passes as target_options)."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    def s3fs(self):
        """A fresh ``s3fs.S3FileSystem`` on this server (not shared through fsspec's cache)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.target_options())

    def worker_env(self) -> dict[str, str]:
        """Environment variables that point a worker's object_store S3 client here."""
        return {
            "AWS_ENDPOINT": self.endpoint_url,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
        }

    def add_key(self, access_key: str, secret_key: str) -> dict[str, str]:
        """Make another access key with read and write on the bucket; return the variables of
        :meth:`worker_env` that use it. moto accepts any key, so only Garage needs this."""
        if self.kind == "garage":
            assert self.workdir is not None
            cfg = self.workdir / "garage.toml"
            name = "k-" + access_key[-8:].lower()
            _garage(cfg, "key", "import", "--yes", "-n", name, access_key, secret_key)
            _garage(cfg, "bucket", "allow", "--read", "--write", self.bucket, "--key", name)
        return {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}

    def log_tail(self, limit: int = 4000) -> str:
        """The last ``limit`` characters of the server's log (empty when there is none)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-limit:]

    # -- lifecycle ---------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server process group and remove its temporary directory."""
        if self.proc is not None:
            # Garage drains background work for seconds on SIGTERM; its data is
            # thrown away anyway, so it is killed outright.
            _stop_process_group(self.proc, grace=0.0 if self.kind == "garage" else 5.0)
            self.proc = None
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if self in _live:
            _live.remove(self)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_process_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``grace`` seconds (0: at once)."""
    if proc.poll() is None:
        try:
            if grace <= 0:
                raise subprocess.TimeoutExpired(proc.args, 0)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    else:
        # The leader is gone; children it left behind must go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        server.stop()


def _client(server: S3Server):
    """A plain botocore S3 client (path style, no retries) for setup and probes."""
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=5,
        ),
    )


def _wait_bucket_usable(server: S3Server, timeout: float) -> None:
    """Poll until a PUT, GET and DELETE of a probe object succeed (or raise)."""
    client = _client(server)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.kind} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        try:
            client.put_object(Bucket=server.bucket, Key=".probe", Body=b"probe")
            body = client.get_object(Bucket=server.bucket, Key=".probe")["Body"].read()
            client.delete_object(Bucket=server.bucket, Key=".probe")
            if body == b"probe":
                return
        except Exception as e:  # not ready yet: any client error, retry
            last = e
        time.sleep(0.1)
    raise TimeoutError(
        f"{server.kind} S3 API not usable after {timeout}s: {last}\n{server.log_tail()}"
    )


def _start_moto(bucket: str, workdir: Path) -> S3Server:
    port = free_port()
    log_path = workdir / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(
        kind="moto",
        endpoint_url=f"http://127.0.0.1:{port}",
        bucket=bucket,
        access_key="testing",
        secret_key="testing",
        workdir=workdir,
        proc=proc,
        log_path=log_path,
    )
    _live.append(server)
    try:
        _wait_http(server, timeout=30)
        _client(server).create_bucket(Bucket=bucket)
        _wait_bucket_usable(server, timeout=30)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_http(server: S3Server, timeout: float) -> None:
    """Wait until something accepts TCP connections on the endpoint's port."""
    host, port = server.endpoint_url.rsplit("/", 1)[1].rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.kind} exited with {server.proc.returncode}:\n{server.log_tail()}"
            )
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(
        f"{server.kind} did not listen on {port} within {timeout}s\n{server.log_tail()}"
    )


def _garage(cfg: Path, *args: str, timeout: float = 30) -> str:
    """Run one garage CLI command against the node configured in ``cfg``; return stdout."""
    res = subprocess.run(
        [str(GARAGE_BIN), "-c", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"garage {' '.join(args)} failed ({res.returncode}):\n{res.stderr}{res.stdout}"
        )
    return res.stdout


def _start_garage(bucket: str, workdir: Path) -> S3Server:
    return start_garage(bucket, workdir)


def start_garage(
    bucket: str,
    workdir: Path,
    host: str = "127.0.0.1",
    command_prefix: Sequence[str] = (),
    capacity: str = "1G",
) -> S3Server:
    """Start Garage bound to ``host`` with ``bucket`` created and usable.

    ``command_prefix`` runs the server under another command (the benchmarks
    use ``ip netns exec NAME`` to put it in its own network namespace);
    ``capacity`` is the node's layout capacity.
    """
    rpc_port, s3_port, admin_port = free_port(), free_port(), free_port()
    cfg = workdir / "garage.toml"
    cfg.write_text(
        f"""metadata_dir = "{workdir / "meta"}"
data_dir = "{workdir / "data"}"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
rpc_bind_addr = "{host}:{rpc_port}"
rpc_public_addr = "{host}:{rpc_port}"
rpc_secret = "{secrets.token_hex(32)}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "{host}:{s3_port}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "{host}:{admin_port}"
admin_token = "{secrets.token_hex(16)}"
"""
    )
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "garage=warn")
    if NODELAY_SO.is_file():
        env["LD_PRELOAD"] = (
            f"{NODELAY_SO} {env['LD_PRELOAD']}" if env.get("LD_PRELOAD") else str(NODELAY_SO)
        )
    else:
        warnings.warn(
            f"{NODELAY_SO} missing (run scripts/install-garage.sh): Garage GETs will stall ~40 ms",
            stacklevel=3,
        )
    log_path = workdir / "garage.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*command_prefix, str(GARAGE_BIN), "-c", str(cfg), "server"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    access_key = "GK" + secrets.token_hex(12)
    secret_key = secrets.token_hex(32)
    server = S3Server(
        kind="garage",
        endpoint_url=f"http://{host}:{s3_port}",
        bucket=bucket,
        access_key=access_key,
        secret_key=secret_key,
        workdir=workdir,
        proc=proc,
        log_path=log_path,
    )
    _live.append(server)
    try:
        _wait_http(server, timeout=30)
        node_id = _garage_node_id(cfg, server, timeout=30)
        _garage(cfg, "layout", "assign", "-z", "dc1", "-c", capacity, node_id)
        _garage(cfg, "layout", "apply", "--version", "1")
        _garage(cfg, "bucket", "create", bucket)
        _garage(cfg, "key", "import", "--yes", "-n", "k", access_key, secret_key)
        _garage(cfg, "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "k")
        _wait_bucket_usable(server, timeout=30)
    except BaseException:
        server.stop()
        raise
    return server


def _garage_node_id(cfg: Path, server: S3Server, timeout: float) -> str:
    """The node's full id (``garage node id -q`` prints ``<hex>@<addr>``), once the RPC is up."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            out = _garage(cfg, "node", "id", "-q", timeout=10).strip()
            if out:
                return out.split("@", 1)[0]
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            last = e
        if server.proc is not None and server.proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"garage node id unavailable: {last}\n{server.log_tail()}")


def start_s3_server(
    kind: str | None = None,
    bucket: str = "alluxiofs-test",
    workdir: str | os.PathLike | None = None,
) -> S3Server:
    """Start an S3 server with ``bucket`` created and usable, and return it.

    ``kind`` is ``"garage"``, ``"moto"`` or None (``$ALLUXIOFS_TEST_S3``, else
    Garage when installed, else moto with a warning). ``workdir`` holds the
    server's data and log; by default a temporary directory removed on stop.
    """
    kind = kind or os.environ.get("ALLUXIOFS_TEST_S3") or None
    if kind is None:
        if garage_available():
            kind = "garage"
        else:
            warnings.warn(
                f"Garage not installed at {GARAGE_BIN} (make garage): using moto_server",
                stacklevel=2,
            )
            kind = "moto"
    if kind not in ("garage", "moto"):
        raise ValueError(f"unknown S3 server kind {kind!r} (garage or moto)")
    if kind == "garage" and not garage_available():
        raise FileNotFoundError(f"Garage requested but {GARAGE_BIN} is missing (make garage)")

    owns = workdir is None
    wd = Path(tempfile.mkdtemp(prefix=f"alluxiofs-{kind}-")) if owns else Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    starter = _start_garage if kind == "garage" else _start_moto
    # A port picked by free_port() can be taken before the server binds it:
    # try again with new ports a few times.
    attempts = 3
    for attempt in range(attempts):
        try:
            server = starter(bucket, wd)
        except BaseException as e:
            if attempt == attempts - 1 or not isinstance(e, (RuntimeError, TimeoutError)):
                if owns:
                    shutil.rmtree(wd, ignore_errors=True)
                raise
            for child in wd.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink()
            continue
        server._owns_workdir = owns
        return server
    raise AssertionError("unreachable")


def main() -> None:
    """Start a server, print how to reach it, and keep it up until interrupted."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=["garage", "moto"], default=None)
    ap.add_argument("--bucket", default="alluxiofs-test")
    args = ap.parse_args()
    with start_s3_server(args.kind, args.bucket) as server:
        print(
            json.dumps(
                {
                    "kind": server.kind,
                    "endpoint_url": server.endpoint_url,
                    "bucket": server.bucket,
                    "env": server.worker_env(),
                },
                indent=2,
            ),
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
