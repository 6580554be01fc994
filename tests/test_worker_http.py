"""The worker's HTTP API (docs/http-api.md) driven directly, without the Python client.

These also exercise the harness: start, ready file, /healthz, metrics,
SIGKILL and restart with the same cache directory.
"""

from __future__ import annotations

import hashlib
import urllib.parse

import pytest
import requests


def path_id(url: str) -> str:
    """Lowercase hex SHA-256 of the (already normalized) URL."""
    return hashlib.sha256(url.encode()).hexdigest()


def get_range(worker, url: str, offset: int | None = None, length: int | None = None):
    """GET /v1/range for ``url``."""
    params = {"ufsFullPath": url}
    if offset is not None:
        params["offset"] = str(offset)
    if length is not None:
        params["length"] = str(length)
    return requests.get(f"{worker.url}/v1/range/{path_id(url)}", params=params, timeout=60)


@pytest.fixture
def worker(start_worker, bucket_mount):
    """One worker mounting the whole test bucket."""
    return start_worker(bucket_mount)


def test_healthz_reports_mounts_and_page_size(worker, bucket_mount):
    """/healthz answers ok with the mounts and the page size."""
    body = requests.get(f"{worker.url}/healthz", timeout=10).json()
    assert body["status"] == "ok"
    assert body["page_size"] == 1 << 20
    assert bucket_mount in body["mounts"] or f"{bucket_mount}/" in body["mounts"]


def test_range_reads_exact_bytes(worker, dataset):
    """/v1/range returns exact bytes for whole files and ranges spanning pages."""
    url = f"s3://{dataset.big_path}"
    r = get_range(worker, url, 1_000_000, 3_000_000)
    assert r.status_code == 200
    assert r.content == dataset.big[1_000_000:4_000_000]
    assert int(r.headers["X-Alluxiofs-File-Size"]) == len(dataset.big)
    assert r.headers.get("X-Alluxiofs-Version")
    # Past the end: cut at the end; at the end: empty.
    r = get_range(worker, url, len(dataset.big) - 10, 100)
    assert r.content == dataset.big[-10:]
    assert get_range(worker, url, len(dataset.big)).content == b""
    for path, data in list(dataset.small.items())[:6]:
        assert get_range(worker, f"s3://{path}").content == data


def test_info_and_files(worker, dataset):
    """/v1/info and /v1/files answer Alluxio-style file infos."""
    path = dataset.big_path
    url = f"s3://{path}"
    info = requests.get(f"{worker.url}/v1/info", params={"path": url}, timeout=10).json()
    assert isinstance(info, list) and len(info) == 1
    assert info[0]["mType"] == "file"
    assert info[0]["mLength"] == len(dataset.big)
    assert info[0]["mUfsPath"] == url
    listing = requests.get(
        f"{worker.url}/v1/files", params={"path": f"s3://{dataset.prefix}/small"}, timeout=10
    ).json()
    assert sorted((e["mName"], e["mType"]) for e in listing) == [
        ("a", "directory"),
        ("b", "directory"),
    ]


def test_error_statuses(start_worker, s3_server, dataset):
    """404 for a missing file, 403 outside the mounts, 400 for a bad offset."""
    w = start_worker(f"s3://{dataset.prefix}")
    missing = f"s3://{dataset.prefix}/nope.bin"
    r = get_range(w, missing)
    assert r.status_code == 404
    assert "message" in r.json()
    outside = f"s3://{s3_server.bucket}/elsewhere/x.bin"
    assert get_range(w, outside).status_code == 403
    r = requests.get(
        f"{w.url}/v1/range/{path_id(f's3://{dataset.big_path}')}",
        params={"ufsFullPath": f"s3://{dataset.big_path}", "offset": "-3"},
        timeout=10,
    )
    assert r.status_code == 400
    # A path_id that does not match the URL is refused.
    r = requests.get(
        f"{w.url}/v1/range/{'0' * 64}",
        params={"ufsFullPath": f"s3://{dataset.big_path}"},
        timeout=10,
    )
    assert r.status_code == 400


def test_metrics_count_ufs_requests_and_hits(worker, dataset):
    """A repeated range is a cache hit: no new UFS GET, hits go up."""
    url = f"s3://{dataset.big_path}"
    assert get_range(worker, url, 0, 2_500_000).status_code == 200
    gets = worker.metric("alluxiofs_ufs_requests_total", op="get")
    hits = worker.metric("alluxiofs_cache_hits_total")
    assert gets >= 1
    assert get_range(worker, url, 0, 2_500_000).content == dataset.big[:2_500_000]
    assert worker.metric("alluxiofs_ufs_requests_total", op="get") == gets
    assert worker.metric("alluxiofs_cache_hits_total") > hits


def test_kill_and_restart_keeps_pages(worker, dataset):
    """After SIGKILL and a restart with the same cache dir, cached pages need no UFS GET."""
    url = f"s3://{dataset.big_path}"
    assert get_range(worker, url, 5_000_000, 2_000_000).status_code == 200
    old_pid = worker.proc.pid
    worker.kill()
    assert not worker.alive
    worker.restart()
    assert worker.alive and worker.proc.pid != old_pid
    r = get_range(worker, url, 5_000_000, 2_000_000)
    assert r.content == dataset.big[5_000_000:7_000_000]
    assert worker.metric("alluxiofs_ufs_requests_total", op="get") == 0
    # A bare path id (Alluxio's client sends no URL) of a file cached before
    # the restart is found: the first unknown id makes the worker learn the
    # ids of the URLs on disk. One it never cached stays a 404.
    page = 1 << 20
    r = requests.get(f"{worker.url}/v1/file/{path_id(url)}/page/5", timeout=30)
    assert r.status_code == 200, r.text
    assert r.content == dataset.big[5 * page : 6 * page]
    r = requests.get(f"{worker.url}/v1/file/{path_id(url + '.never')}/page/0", timeout=30)
    assert r.status_code == 404
    assert worker.metric("alluxiofs_ufs_requests_total", op="get") == 0


def test_query_values_are_fully_decoded(worker, s3_server):
    """A key with spaces and unicode, percent-encoded in the query, reads correctly."""
    key = f"{s3_server.bucket}/odd names/ü ñ+plus.bin"
    s3_server.s3fs().pipe_file(key, b"odd bytes")
    url = f"s3://{key}"
    r = requests.get(
        f"{worker.url}/v1/range/{path_id(url)}?ufsFullPath={urllib.parse.quote(url, safe='')}",
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.content == b"odd bytes"


def test_alluxio_page_api(worker, dataset):
    """The Alluxio 3.x page endpoint: by URL, by learned path_id, with offset/length."""
    url = f"s3://{dataset.big_path}"
    pid = path_id(url)
    page = 1 << 20
    base = f"{worker.url}/v1/file/{pid}/page"
    # Never seen, no ufsFullPath: 404 telling the client to ask /v1/info first.
    r = requests.get(f"{base}/0", timeout=10)
    assert r.status_code == 404
    assert "info" in r.json()["message"]
    r = requests.get(f"{base}/3", params={"ufsFullPath": url}, timeout=30)
    assert r.status_code == 200
    assert r.content == dataset.big[3 * page : 4 * page]
    last = (len(dataset.big) - 1) // page
    r = requests.get(f"{base}/{last}", params={"ufsFullPath": url}, timeout=30)
    assert r.content == dataset.big[last * page :]
    assert len(r.content) < page
    r = requests.get(
        f"{base}/5", params={"ufsFullPath": url, "offset": "1000", "length": "2345"}, timeout=30
    )
    assert r.content == dataset.big[5 * page + 1000 : 5 * page + 3345]


def test_page_id_learned_from_info(worker, dataset):
    """An old client sends only path_id; after /v1/info on the URL the worker can serve it."""
    path, data = next((p, d) for p, d in sorted(dataset.small.items()) if len(d) > 1000)
    url = f"s3://{path}"
    base = f"{worker.url}/v1/file/{path_id(url)}/page/0"
    assert requests.get(base, timeout=10).status_code == 404
    info = requests.get(f"{worker.url}/v1/info", params={"path": url}, timeout=10)
    assert info.status_code == 200
    r = requests.get(base, timeout=30)
    assert r.status_code == 200
    assert r.content == data[: 1 << 20]
