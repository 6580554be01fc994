"""A cold read of a small file costs ONE UFS request: the worker's metadata
lookup is the ranged GET itself (version and size from its answer), not a
HEAD followed by a GET.

Requests are counted twice: at the worker (``alluxiofs_ufs_requests_total`` by
``op``) and on the wire, by a counting HTTP proxy between the worker and the S3
server (Garage, or moto with ``ALLUXIOFS_TEST_S3=moto``) that records every
request's method and headers.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from harness import ufs_requests

# Hop-by-hop headers a proxy must not forward (RFC 9110, 7.6.1).
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class CountingProxy:
    """An HTTP/1.1 forwarding proxy on 127.0.0.1 that records each request.

    Headers (``Host`` included, which SigV4 signs) go through unchanged;
    bodies are read whole, so responses are re-sent with a ``Content-Length``.
    """

    def __init__(self, upstream: str):
        target = urllib.parse.urlsplit(upstream)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                with lock:
                    proxy.requests.append(
                        (self.command, self.path, {k.lower(): v for k, v in headers.items()})
                    )
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    conn.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for k, v in headers.items():
                        conn.putheader(k, v)
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response_only(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    if self.command == "HEAD":
                        self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, method: str | None = None) -> int:
        return sum(1 for m, _, _ in self.requests if method in (None, m))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(s3_server) -> Iterator[CountingProxy]:
    p = CountingProxy(s3_server.endpoint_url)
    yield p
    p.stop()


@pytest.fixture
def cold(start_worker, bucket_mount, proxy, make_fs):
    """``cold(*extra_args)``: a fresh worker reading S3 through the proxy, and its filesystem."""

    def make(*extra_args: str):
        env = {"AWS_ENDPOINT": proxy.endpoint, "AWS_ENDPOINT_URL": proxy.endpoint}
        w = start_worker(bucket_mount, extra_args=extra_args, env=env)
        return w, make_fs([w])

    return make


def _upload(s3_server, files: dict[str, bytes]) -> None:
    s3_server.s3fs().pipe(files)


def _prefix(s3_server) -> str:
    return f"{s3_server.bucket}/cold-{uuid.uuid4().hex[:8]}"


def _requests(w, proxy) -> tuple[float, float, int, int]:
    """(worker GETs, worker HEADs, GETs on the wire, HEADs on the wire)."""
    worker = ufs_requests([w], "get"), ufs_requests([w], "head")
    return (*worker, proxy.count("GET"), proxy.count("HEAD"))


def test_cold_small_files_cost_one_request_each(cold, proxy, s3_server):
    """N cold small files: exactly N ranged GETs and no HEAD; a second read makes none."""
    rnd = random.Random(12)
    base = _prefix(s3_server)
    sizes = [1, 17, 4096, 65_537, 300_000, 1_048_575, 1_048_576, 1_048_577, 2_500_000]
    sizes += [rnd.randrange(1, 200_000) for _ in range(11)]
    files = {f"{base}/f{i:03d}.bin": rnd.randbytes(n) for i, n in enumerate(sizes)}
    _upload(s3_server, files)
    w, fs = cold()
    assert _requests(w, proxy) == (0, 0, 0, 0)
    for path, data in files.items():
        assert fs.cat_file(path) == data, path
    n = len(files)
    assert _requests(w, proxy) == (n, 0, n, 0)
    assert all("range" in h for m, _, h in proxy.requests if m == "GET"), "ranged GETs"
    assert ufs_requests([w]) == n, "no other UFS request (list, head)"
    # Warm: the metadata cache and the pages answer everything.
    for path, data in files.items():
        assert fs.cat_file(path) == data, path
    assert fs.cat(sorted(files)) == files
    assert _requests(w, proxy) == (n, 0, n, 0)
    # The version the cold GET recorded is the one a HEAD gives (the ETag).
    first = next(iter(files))
    etag = fs.info(first)["etag"]
    assert etag and etag.strip('"') == s3_server.s3fs().info(first)["ETag"].strip('"')
    assert _requests(w, proxy) == (n, 0, n, 0), "info from the metadata the GET filled"


def test_cold_cat_of_many_files_one_request_each(cold, proxy, s3_server):
    """``fs.cat`` of a list (the native read_files path, in parallel): one GET per file."""
    rnd = random.Random(13)
    base = _prefix(s3_server)
    files = {f"{base}/g{i:03d}.bin": rnd.randbytes(rnd.randrange(1, 100_000)) for i in range(40)}
    _upload(s3_server, files)
    w, fs = cold()
    assert fs.cat(sorted(files)) == files
    assert _requests(w, proxy) == (40, 0, 40, 0)


def test_concurrent_cold_reads_of_one_file_make_one_get(cold, proxy, s3_server):
    """Single flight: 16 threads reading the same cold file, one UFS request."""
    path = f"{_prefix(s3_server)}/shared.bin"
    data = random.Random(14).randbytes(700_000)
    _upload(s3_server, {path: data})
    w, fs = cold()
    out: list[bytes] = []
    barrier = threading.Barrier(16)

    def read():
        barrier.wait()
        out.append(fs.cat_file(path))

    threads = [threading.Thread(target=read) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == [data] * 16
    assert _requests(w, proxy) == (1, 0, 1, 0)


def test_rest_of_a_larger_file_is_read_under_the_same_version(cold, proxy, s3_server):
    """A cold read of the head of a 3 MiB file: one GET; the rest later with If-Match."""
    path = f"{_prefix(s3_server)}/larger.bin"
    data = random.Random(15).randbytes(3 * 1024 * 1024 + 5)
    _upload(s3_server, {path: data})
    w, fs = cold()
    assert fs.cat_file(path, 0, 100) == data[:100]
    assert _requests(w, proxy) == (1, 0, 1, 0)
    assert fs.size(path) == len(data), "the size came from Content-Range"
    assert fs.cat_file(path, 2 << 20, None) == data[2 << 20 :]
    assert _requests(w, proxy) == (2, 0, 2, 0)
    first, second = (h for m, _, h in proxy.requests if m == "GET")
    assert "if-match" not in first, "the cold GET knows no version yet"
    assert second.get("if-match"), "the rest is read with If-Match on the version found"
    assert fs.cat_file(path) == data
    assert ufs_requests([w]) == 3, "page 1, the only one not fetched yet: one more GET"


def test_empty_missing_and_directory_answer_as_before(cold, proxy, s3_server):
    """An empty object (a 416 for a ranged GET), a missing key and a prefix."""
    base = _prefix(s3_server)
    _upload(s3_server, {f"{base}/empty.bin": b"", f"{base}/dir/x.bin": b"x"})
    w, fs = cold()
    assert fs.cat_file(f"{base}/empty.bin") == b""
    assert fs.cat_file(f"{base}/empty.bin", 0, 10) == b""
    gets, heads, _, _ = _requests(w, proxy)
    assert (gets, heads) == (1, 1), "an empty object: the GET fails, a HEAD answers"
    assert w.metric("alluxiofs_ufs_errors_total") == 0, "a 416 is not a UFS error"
    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{base}/missing.bin")
    with pytest.raises(IsADirectoryError):
        fs.cat_file(f"{base}/dir")
    assert ufs_requests([w], "head") == 1, "missing and directory: no HEAD after the 404"
    assert fs.cat_file(f"{base}/dir/x.bin") == b"x"


def test_an_overwrite_is_seen_after_the_metadata_ttl(cold, proxy, s3_server):
    """Cached metadata is trusted for the TTL; then a HEAD sees the new version."""
    path = f"{_prefix(s3_server)}/changing.bin"
    _upload(s3_server, {path: b"first version"})
    w, fs = cold("--metadata-ttl", "1s")
    assert fs.cat_file(path) == b"first version"
    assert _requests(w, proxy) == (1, 0, 1, 0)
    time.sleep(1.3)
    # Expired, unchanged: a HEAD revalidates, the cold GET's pages match it.
    assert fs.cat_file(path) == b"first version"
    assert _requests(w, proxy) == (1, 1, 1, 1)
    _upload(s3_server, {path: b"the second version"})
    t0 = time.monotonic()
    got = fs.cat_file(path)
    if time.monotonic() - t0 < 0.8:
        assert got == b"first version", "within the TTL the cached version is served"
    time.sleep(1.3)
    assert fs.cat_file(path) == b"the second version"
    # A HEAD found the new version, whose page one GET (with If-Match) read.
    assert _requests(w, proxy) == (2, 2, 2, 2)
