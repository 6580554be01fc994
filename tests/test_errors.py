"""Failures map to the builtin exceptions fsspec and its users catch."""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import alluxiofs
import pytest


@pytest.fixture
def fs(make_fs, two_workers):
    """A filesystem over two workers mounting the whole bucket."""
    return make_fs(two_workers)


def test_missing_file_raises_file_not_found(fs, dataset):
    """info, cat_file, open and a missing directory listing all raise FileNotFoundError."""
    missing = f"{dataset.prefix}/no/such/file.bin"
    with pytest.raises(FileNotFoundError):
        fs.cat_file(missing)
    with pytest.raises(FileNotFoundError):
        fs.info(missing)
    with pytest.raises(FileNotFoundError):
        fs.open(missing, "rb")
    with pytest.raises(FileNotFoundError):
        fs.ls(f"{dataset.prefix}/no/such/dir")
    assert not fs.exists(missing)
    # A missing path among good ones: cat_ranges reports it in place.
    good = next(p for p, d in dataset.small.items() if len(d) > 10)
    out = fs.cat_ranges([good, missing], [0, 0], [10, 10])
    assert out[0] == dataset.small[good][:10]
    assert isinstance(out[1], FileNotFoundError)


def test_url_outside_mounts_raises_permission_error(make_fs, start_worker, s3_server, dataset):
    """Workers mounting only s3://bucket/allowed refuse s3://bucket/secret/...

    The refusal must not be "repaired" by the client's UFS fallback.
    """
    s3 = s3_server.s3fs()
    allowed = f"{s3_server.bucket}/allowed/ok.bin"
    secret = f"{s3_server.bucket}/secret/key.bin"
    s3.pipe({allowed: b"fine to read", secret: b"must not leak"})
    mount = f"s3://{s3_server.bucket}/allowed"
    workers = [start_worker(mount), start_worker(mount)]
    fs = make_fs(workers)  # default options: fallback to the UFS is on
    assert fs.cat_file(allowed) == b"fine to read"
    with pytest.raises(PermissionError):
        fs.cat_file(secret)
    with pytest.raises(PermissionError) as refused:
        fs.info(secret)
    assert refused.value.errno == errno.EACCES
    assert refused.value.filename == f"s3://{secret}"
    # Dot segments cannot climb out of the mount either.
    with pytest.raises((PermissionError, ValueError)):
        fs.cat_file(f"s3://{s3_server.bucket}/allowed/../secret/key.bin")
    # A mount prefix is a path prefix, not a string prefix.
    s3.pipe_file(f"{s3_server.bucket}/allowed-not/x.bin", b"x")
    with pytest.raises(PermissionError):
        fs.cat_file(f"{s3_server.bucket}/allowed-not/x.bin")


def test_bad_ranges_raise_value_error(fs, dataset):
    """Mismatched cat_ranges lists, non-integer offsets and bad seeks are refused."""
    path = dataset.big_path
    with pytest.raises(ValueError):
        fs.cat_ranges([path, path], [0], [10, 20])
    with pytest.raises(ValueError):
        fs.cat_ranges([path], [0, 1], [10])
    with pytest.raises((TypeError, ValueError)):
        fs.cat_file(path, "10", 20)
    with pytest.raises((TypeError, ValueError)):
        fs.cat_file(path, 1.5, 20)
    with fs.open(path, "rb") as f:
        with pytest.raises(ValueError):
            f.seek(-1)
        with pytest.raises(ValueError):
            f.seek(0, 7)
        # A negative read size means "to the end", per io semantics.
        f.seek(len(dataset.big) - 100)
        assert f.read(-5) == dataset.big[-100:]
    with pytest.raises(ValueError):
        f.read(1)  # closed file


def test_alluxio_error_is_oserror():
    """AlluxioError is an OSError, so generic handlers of I/O errors see it."""
    assert issubclass(alluxiofs.AlluxioError, OSError)
    assert issubclass(alluxiofs.ObjectChangedError, alluxiofs.AlluxioError)


def test_directory_cannot_be_opened(fs, dataset):
    """Opening a directory for reading raises IsADirectoryError (an OSError)."""
    with pytest.raises(IsADirectoryError):
        fs.open(f"{dataset.prefix}/small", "rb")


def test_errors_carry_errno_and_the_url_as_filename(fs, dataset):
    """The native errors about a path set errno and filename (the UFS URL),
    whichever read entry point raised them; a directory read is
    IsADirectoryError as the worker says (its error code), not a guess."""
    missing = f"{dataset.prefix}/no/such/file.bin"
    for call in (
        lambda: fs.info(missing),
        lambda: fs.cat_file(missing),
        lambda: fs.cat_file(missing, 0, 10),
    ):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert info.value.errno == errno.ENOENT
        assert info.value.filename == f"s3://{missing}"
    directory = f"{dataset.prefix}/small"
    for call in (
        lambda: fs.cat_file(directory),
        lambda: fs.cat_file(directory, 0, 10),
        lambda: fs.cat_ranges([directory], [0], [10], on_error="raise"),
    ):
        with pytest.raises(IsADirectoryError) as info:
            call()
        assert info.value.errno == errno.EISDIR
        assert info.value.filename == f"s3://{directory}"


class SilentServer:
    """A TCP server on a loopback port chosen at run time that accepts every
    connection, reads what it is sent and never answers: a hung worker."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.addr = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
                conn.setblocking(False)
                self._conns.append(conn)
                self.accepted += 1
            except TimeoutError:
                pass
            except OSError:
                return
            for c in self._conns:
                try:
                    c.recv(65536)  # read and drop what the client sends
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        for c in self._conns:
            c.close()


@pytest.fixture
def silent_worker():
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def ufs_file(s3_server):
    """One small file in the bucket: (path without protocol, bytes)."""
    path = f"{s3_server.bucket}/timeouts/file.bin"
    data = bytes(range(256)) * 40
    s3_server.s3fs().pipe_file(path, data)
    return path, data


def test_worker_timeout_raises_timeout_error_without_fallback(make_fs, silent_worker, ufs_file):
    """A worker that accepts and never answers: with fallback=False, ranged
    reads, whole-file reads, open and info raise TimeoutError (also a
    ConnectionError), naming the worker, within a few request timeouts."""
    path, _ = ufs_file
    fs = make_fs(
        [], worker_hosts=silent_worker.addr, request_timeout=0.3, retries=1, fallback=False
    )
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        fs.cat_file(path, 0, 100)
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value, alluxiofs.WorkerTimeoutError)
    assert silent_worker.addr in str(info.value)
    with pytest.raises(TimeoutError):
        fs.cat_file(path)
    with pytest.raises(TimeoutError):
        fs.info(path)
    with pytest.raises(TimeoutError):
        fs.open(path, "rb")
    with pytest.raises(TimeoutError):
        fs.cat_ranges([path], [0], [10], on_error="raise")
    # Each call gives up after at most two 0.3 s attempts (or at once, the
    # worker being marked down): far below the 30 s default.
    assert time.monotonic() - started < 15
    assert silent_worker.accepted >= 1
    assert fs.stats()["errors"].get(silent_worker.addr, 0) >= 1


def test_worker_timeout_falls_back_to_the_ufs(make_fs, silent_worker, ufs_file):
    """The same hung worker with fallback on (the default): every read and
    metadata call is answered from the UFS, exactly, and counted."""
    path, data = ufs_file
    fs = make_fs([], worker_hosts=silent_worker.addr, request_timeout=0.3, retries=1)
    assert fs.cat_file(path, 5, 500) == data[5:500]
    assert fs.cat_file(path) == data
    assert fs.info(path)["size"] == len(data)
    with fs.open(path, "rb") as f:
        assert f.read() == data
    assert fs.cat_ranges([path, path], [0, 100], [10, 200]) == [data[:10], data[100:200]]
    stats = fs.stats()
    assert stats["fallbacks"].get(silent_worker.addr, 0) >= 1
    assert stats["metadata_fallbacks"] >= 1
    assert stats["ufs_fallback_bytes"] >= len(data)
    assert silent_worker.accepted >= 1


class FixedAnswerServer:
    """An HTTP server on a loopback port chosen at run time that answers every
    request with ``status`` and a JSON error body, as a worker does (with the
    error ``code`` when given, as a worker does since codes exist)."""

    def __init__(self, status: int, code: str | None = None) -> None:
        outer = self
        self.status = status
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                answer = {"message": f"answered {outer.status} on purpose"}
                if code is not None:
                    answer["code"] = code
                body = json.dumps(answer).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def answering_worker():
    servers: list[FixedAnswerServer] = []

    def start(status: int, code: str | None = None) -> FixedAnswerServer:
        servers.append(FixedAnswerServer(status, code))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_worker_5xx_is_a_worker_fault(make_fs, answering_worker, ufs_file):
    """A worker answering 500: retried, then read from the UFS; with
    fallback=False a ConnectionError naming the status, not an AlluxioError."""
    path, data = ufs_file
    worker = answering_worker(500)
    fs = make_fs([], worker_hosts=worker.addr, retries=1)
    assert fs.cat_file(path, 0, 100) == data[:100]
    assert fs.info(path)["size"] == len(data)
    assert fs.stats()["retries"] >= 1
    strict = make_fs([], worker_hosts=worker.addr, retries=0, fallback=False)
    with pytest.raises(ConnectionError) as info:
        strict.info(path)
    assert not isinstance(info.value, alluxiofs.AlluxioError)
    assert "500" in str(info.value)
    assert worker.requests >= 3


def test_unexpected_worker_answer_is_alluxio_error(make_fs, answering_worker, ufs_file):
    """A status the client has no meaning for is the request's fault: an
    AlluxioError with errno EIO and the URL as filename, even with fallback on."""
    path, _ = ufs_file
    worker = answering_worker(418)
    fs = make_fs([], worker_hosts=worker.addr)
    url = f"s3://{path}"
    for call in (lambda: fs.info(path), lambda: fs.cat_file(path, 0, 10)):
        with pytest.raises(alluxiofs.AlluxioError) as info:
            call()
        assert info.value.errno == errno.EIO
        assert info.value.filename == url
        assert "418" in str(info.value) and "on purpose" in str(info.value)
    assert fs.stats()["ufs_fallback_reads"] == 0


@pytest.mark.parametrize(
    ("status", "code", "raised", "err"),
    [
        (400, "is_a_directory", IsADirectoryError, errno.EISDIR),
        (404, "not_a_directory", NotADirectoryError, errno.ENOTDIR),
        (404, "not_found", FileNotFoundError, errno.ENOENT),
        (404, None, FileNotFoundError, errno.ENOENT),
        (403, "permission_denied", PermissionError, errno.EACCES),
        (401, "unauthenticated", PermissionError, errno.EACCES),
        (412, "object_changed", alluxiofs.ObjectChangedError, errno.EIO),
        # A code this client does not know (a newer worker): by status.
        (404, "from_a_newer_worker", FileNotFoundError, errno.ENOENT),
    ],
)
def test_the_error_code_names_the_exception(make_fs, answering_worker, ufs_file, status, code,
                                            raised, err):  # fmt: skip
    """The worker's error code picks the exception, errno and filename; a
    body without one (an older worker) maps by status."""
    path, _ = ufs_file
    worker = answering_worker(status, code)
    fs = make_fs([], worker_hosts=worker.addr)
    with pytest.raises(raised) as info:
        fs.cat_file(path, 0, 10)
    assert info.value.errno == err
    assert info.value.filename == f"s3://{path}"


def test_a_bad_request_without_a_code_is_value_error(make_fs, answering_worker, ufs_file):
    """An older worker answers a directory read as a plain 400: a ValueError,
    with no guessing in Python."""
    path, _ = ufs_file
    worker = answering_worker(400)
    fs = make_fs([], worker_hosts=worker.addr)
    with pytest.raises(ValueError, match="on purpose"):
        fs.cat_file(path, 0, 10)
