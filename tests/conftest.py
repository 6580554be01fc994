"""Fixtures for the end-to-end tests: a real S3 server, real cache workers.

* ``s3_server`` (session): Garage when installed (``make garage``), else
  moto_server; ``ALLUXIOFS_TEST_S3=moto|garage`` forces one.
* ``start_worker(mounts, ...)``: starts ``alluxiofs worker`` processes on
  ports chosen at run time; all of them are stopped after the test, and their
  logs are attached to the report of a failed test.
* ``make_fs(workers, ...)``: an ``AlluxioFileSystem`` over those workers.
* ``dataset`` (session): files generated with fixed seeds, uploaded once.

``ALLUXIOFS_HOME`` points to a temporary directory for the whole session, so
no test touches ``~/.cache/alluxiofs``; embedded workers are stopped at the end.
"""

from __future__ import annotations

import importlib
import io
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from harness import S3Server, Worker, start_s3_server, worker_hosts

_SESSION_HOME = tempfile.mkdtemp(prefix="alluxiofs-test-home-")
# Set at import time: before any test (or plugin) can import alluxiofs.
os.environ["ALLUXIOFS_HOME"] = _SESSION_HOME


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop embedded workers started by the tests and remove the session home."""
    try:
        import alluxiofs.embedded

        alluxiofs.embedded.stop_all()
    except ImportError:
        pass
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


# -- logs of failed tests ------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the logs of the test's workers (and the S3 server) to a failed report."""
    report = yield
    if report.failed:
        for w in getattr(item, "_alluxiofs_workers", []):
            report.sections.append((f"worker {w.name} ({w.addr}) log", w.log_tail()))
        server = getattr(item.session, "_alluxiofs_s3", None)
        if server is not None and call.when != "teardown":
            report.sections.append((f"{server.kind} log (tail)", server.log_tail(3000)))
    return report


# -- S3 ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest) -> Iterator[S3Server]:
    """A running S3 server with an empty bucket, for the whole session."""
    server = start_s3_server(bucket="alluxiofs-test")
    request.session._alluxiofs_s3 = server
    try:
        yield server
    finally:
        server.stop()


# -- workers ----------------------------------------------------------------------------


@pytest.fixture
def start_worker(
    request: pytest.FixtureRequest, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Worker]]:
    """Factory: ``start_worker(mounts, cache_dir=None, capacity="1GiB", extra_args=(), env=None,
    host="127.0.0.1", port=0, http=None)``.

    ``mounts`` is a URL or a list of URLs (``--mount``); the worker's UFS
    credentials come from ``s3_server.worker_env()`` plus ``env``. Every worker
    is stopped when the test ends, pass or fail.
    """
    workers: list[Worker] = []
    request.node._alluxiofs_workers = workers
    run_dir = tmp_path_factory.mktemp("workers")

    def start(
        mounts: str | Sequence[str],
        cache_dir: str | os.PathLike | None = None,
        capacity: str = "1GiB",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        http: dict[str, object] | None = None,
    ) -> Worker:
        name = f"w{len(workers)}"
        if isinstance(mounts, str):
            mounts = [mounts]
        if cache_dir is None:
            cache_dir = run_dir / f"{name}-cache"
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        args: list[str] = []
        for m in mounts:
            args += ["--mount", m]
        args += ["--cache-dir", str(cache_dir), "--capacity", capacity, *extra_args]
        full_env = dict(os.environ)
        full_env.update(s3_server.worker_env())
        full_env.setdefault("RUST_BACKTRACE", "1")
        full_env.update(env or {})
        w = Worker(args, full_env, run_dir, name, host=host, port=port, http=http)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture
def etcd_server() -> Iterator[object]:
    """A real etcd on run-time loopback ports (``.endpoint``, ``.stop()``, ``.start()``)."""
    from etcd_server import ETCD, EtcdServer

    if not os.path.exists(ETCD):
        pytest.fail(f"etcd is not installed ({ETCD}); `make system-deps` installs it")
    server = EtcdServer()
    yield server
    server.close()


@pytest.fixture
def make_fs(s3_server: S3Server) -> Callable[..., object]:
    """Factory: an ``AlluxioFileSystem`` over ``workers`` reading ``s3_server``.

    Each call makes a new instance (``skip_instance_cache``); keyword arguments
    are passed to the filesystem.
    """
    import fsspec

    def make(workers: Sequence[Worker], **kwargs):
        opts = {
            "worker_hosts": worker_hosts(workers),
            "target_protocol": "s3",
            "target_options": s3_server.target_options(),
            "skip_instance_cache": True,
        }
        opts.update(kwargs)
        return fsspec.filesystem("alluxiofs", **opts)

    return make


@pytest.fixture
def bucket_mount(s3_server: S3Server) -> str:
    """The mount URL that covers the whole test bucket."""
    return f"s3://{s3_server.bucket}"


@pytest.fixture
def two_workers(start_worker, bucket_mount) -> list[Worker]:
    """Two workers mounting the whole test bucket."""
    return [start_worker(bucket_mount), start_worker(bucket_mount)]


# -- data -------------------------------------------------------------------------------

BIG_SIZE = 64 * 1024 * 1024 + 3 * 1024 * 1024 + 12345  # over 64 MiB, not page aligned


@dataclass
class Dataset:
    """Files uploaded once per session, with their expected bytes."""

    bucket: str
    prefix: str  # "bucket/data" (no protocol)
    small: dict[str, bytes] = field(default_factory=dict)  # path -> content
    big_path: str = ""
    big: bytes = b""
    parquet_dir: str = ""
    parquet_tables: dict[str, object] = field(default_factory=dict)  # path -> pyarrow.Table

    def url(self, path: str) -> str:
        """``s3://`` URL of a path in the dataset."""
        return f"s3://{path}"


def _make_table(seed: int, rows: int):
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64) + seed * 1_000_000,
            "x": rng.standard_normal(rows),
            "y": rng.integers(0, 1000, rows, dtype=np.int32),
            "label": pa.array([f"row-{seed}-{i % 97}" for i in range(rows)]),
        }
    )


@pytest.fixture(scope="session")
def dataset(s3_server: S3Server) -> Dataset:
    """Generated data in the bucket: small files, one file over 64 MiB, Parquet files."""
    import pyarrow.parquet as pq

    rnd = random.Random(1234)
    fs = s3_server.s3fs()
    prefix = f"{s3_server.bucket}/data"
    ds = Dataset(bucket=s3_server.bucket, prefix=prefix)

    # Small files of varied sizes (empty, tiny, around and across a 1 MiB page).
    sizes = [0, 1, 17, 4096, 65_537, 300_000, 1_048_575, 1_048_576, 1_048_577, 2_500_000]
    sizes += [rnd.randrange(1, 200_000) for _ in range(14)]
    for i, size in enumerate(sizes):
        sub = "a" if i % 2 == 0 else "b/c"
        ds.small[f"{prefix}/small/{sub}/f{i:03d}.bin"] = rnd.randbytes(size)
    fs.pipe(ds.small)

    ds.big_path = f"{prefix}/big/big.bin"
    ds.big = np.random.default_rng(42).integers(0, 256, BIG_SIZE, dtype=np.uint8).tobytes()
    fs.pipe_file(ds.big_path, ds.big)

    ds.parquet_dir = f"{prefix}/parquet"
    for i in range(3):
        table = _make_table(i, 20_000 + 5_000 * i)
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=7_000)
        path = f"{ds.parquet_dir}/part-{i}.parquet"
        fs.pipe_file(path, buf.getvalue())
        ds.parquet_tables[path] = table
    return ds


@pytest.fixture(scope="session")
def csi_pb(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """``csi_pb2`` and ``csi_pb2_grpc`` (the CSI messages and stubs), generated from
    the plugin's own ``crates/csi/proto/csi.proto``."""
    proto = Path(__file__).resolve().parent.parent / "crates" / "csi" / "proto" / "csi.proto"
    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("csi-proto")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{proto.parent}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(proto),
        ]
    )
    assert rc == 0, "protoc failed on crates/csi/proto/csi.proto"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("csi_pb2"), importlib.import_module("csi_pb2_grpc")
    finally:
        sys.path.remove(str(out))
