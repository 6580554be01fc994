"""A worker killed in the middle of a large write-through leaves a multipart upload
open at the UFS; started again on the same cache directory, it aborts it (the
journal ``ufs-uploads.json`` in the cache directory names it), and the object is
never partial. Completed and cut writes leave no upload open either."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from urllib.parse import quote

import numpy as np
import pytest

MiB = 1 << 20
PART = 8 * MiB  # crates/worker/src/write.rs PART_SIZE (and SINGLE_PUT_MAX)
JOURNAL = "ufs-uploads.json"


@pytest.fixture
def s3(s3_server):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
        config=Config(s3={"addressing_style": "path"}),
    )


def _open_uploads(s3, bucket: str, key: str) -> list[dict]:
    r = s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    return [u for u in r.get("Uploads", []) if u["Key"] == key]


def _parts(s3, bucket: str, key: str, upload_id: str) -> int:
    r = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    return len(r.get("Parts", []))


def _exists(s3, bucket: str, key: str) -> int | None:
    """The object's size, or None when there is none."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    except s3.exceptions.ClientError as e:
        if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _start_put(worker, url: str) -> http.client.HTTPConnection:
    host, port = worker.addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("PUT", f"/v1/write?path={quote(url, safe='')}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    return conn


def _send(conn: http.client.HTTPConnection, data: bytes) -> None:
    conn.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def _wait(what: str, cond, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(every)


def test_a_killed_worker_aborts_its_open_upload_when_it_starts_again(
    start_worker, s3_server, s3, tmp_path
):
    bucket = s3_server.bucket
    key = f"mpkill-{uuid.uuid4().hex[:8]}/big.bin"
    url = f"s3://{bucket}/{key}"
    cache = tmp_path / "cache"
    w = start_worker(f"s3://{bucket}", cache_dir=cache)
    conn = _start_put(w, url)
    # Three parts' worth: past the single PUT, so a multipart upload with at
    # least two parts sent; the body never ends.
    body = np.random.default_rng(7).bytes(3 * PART)
    for i in range(0, len(body), MiB):
        _send(conn, body[i : i + MiB])
    ups = _wait("an open upload", lambda: _open_uploads(s3, bucket, key), 30)
    assert len(ups) == 1, ups
    upload_id = ups[0]["UploadId"]
    _wait("a part at the UFS", lambda: _parts(s3, bucket, key, upload_id) >= 1, 30)
    journal = json.loads((cache / JOURNAL).read_text())
    assert [u["upload_id"] for u in journal.values()] == [upload_id], journal
    assert journal[upload_id]["url"] == url

    w.kill()
    conn.close()
    assert [u["UploadId"] for u in _open_uploads(s3, bucket, key)] == [upload_id], (
        "the killed worker's upload is open at the UFS"
    )
    assert _exists(s3, bucket, key) is None

    w.restart()
    t0 = time.monotonic()
    _wait("the upload aborted", lambda: not _open_uploads(s3, bucket, key), 10)
    print(f"upload aborted {time.monotonic() - t0:.2f} s after the worker served again")
    assert _exists(s3, bucket, key) is None, "never a partial object"
    assert w.metric("alluxiofs_ufs_uploads_aborted_total") == 1
    _wait("the journal emptied", lambda: not (cache / JOURNAL).exists(), 5)
    log = w.log_path.read_text()
    assert "aborted an unfinished UFS multipart upload" in log and upload_id in log
    assert w.healthz()["status"] == "ok"
    # A third start has nothing to abort.
    w.restart()
    assert w.metric("alluxiofs_ufs_uploads_aborted_total") == 0


def test_completed_and_cut_writes_leave_no_upload_open(start_worker, s3_server, s3, tmp_path):
    bucket = s3_server.bucket
    prefix = f"mpdone-{uuid.uuid4().hex[:8]}"
    cache = tmp_path / "cache"
    w = start_worker(f"s3://{bucket}", cache_dir=cache)
    # Complete: parts in order, the object whole.
    body = np.random.default_rng(8).bytes(2 * PART + 12345)
    conn = _start_put(w, f"s3://{bucket}/{prefix}/done.bin")
    for i in range(0, len(body), 3 * MiB):
        _send(conn, body[i : i + 3 * MiB])
    conn.send(b"0\r\n\r\n")
    r = conn.getresponse()
    answer = r.read()
    assert r.status == 200, answer
    assert json.loads(answer)["size"] == len(body)
    assert json.loads(answer)["populated"], answer
    assert s3.get_object(Bucket=bucket, Key=f"{prefix}/done.bin")["Body"].read() == body
    # Cut: the body ends early, the upload is aborted.
    conn = _start_put(w, f"s3://{bucket}/{prefix}/cut.bin")
    for i in range(0, 2 * PART, MiB):
        _send(conn, body[i : i + MiB])
    _wait("an open upload", lambda: _open_uploads(s3, bucket, f"{prefix}/cut.bin"), 30)
    conn.sock.close()
    _wait("the cut upload aborted", lambda: not _open_uploads(s3, bucket, f"{prefix}/cut.bin"), 10)
    assert _exists(s3, bucket, f"{prefix}/cut.bin") is None
    assert not _open_uploads(s3, bucket, f"{prefix}/done.bin")
    _wait("the journal emptied", lambda: not (cache / JOURNAL).exists(), 5)
