"""The worker's S3 endpoint, driven by real S3 clients (docs/s3-api.md).

boto3, PyArrow's C++ ``S3FileSystem``, Polars, obstore and s3fs read the
test bucket through a worker's endpoint (the bucket ``s3://<bucket>`` mounted
whole, so keys are the UFS's) and must see exactly what they see at the UFS.
Writes go through the write-through path and land at the UFS. Hostile input
gets S3 errors and the worker stays healthy. With three workers in etcd, a
read sent to any worker is served from the owner's cache (forwarded, or
redirected when ``--s3-redirect`` is on).
"""

from __future__ import annotations

import hashlib
import io
import os
import time

import boto3
import pytest
import requests
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

ACCESS = "AKIDALLUXIOFSTEST0001"
SECRET = "s3cr3t-Zq9vX1-never-in-a-log"


def _client(url: str, access: str | None = ACCESS, secret: str | None = SECRET):
    cfg = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1},
        signature_version=UNSIGNED if access is None else "s3v4",
    )
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=access or "x",
        aws_secret_access_key=secret or "x",
        config=cfg,
    )


def _code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


@pytest.fixture
def s3w(start_worker, bucket_mount):
    """A worker with S3 keys (from the environment, as deployments pass them)."""
    return start_worker(
        bucket_mount,
        env={"ALLUXIOFS_WORKER_S3_ACCESS_KEY": ACCESS, "ALLUXIOFS_WORKER_S3_SECRET_KEY": SECRET},
    )


@pytest.fixture
def anon(start_worker, bucket_mount):
    """A worker that serves unsigned requests (for raw HTTP probes)."""
    return start_worker(bucket_mount, extra_args=["--s3-anonymous"])


def _key(dataset, path: str) -> str:
    return path.split("/", 1)[1]


def test_get_ranges_conditions_and_the_ufs_etag(s3w, s3_server, dataset):
    s3 = _client(s3w.s3_url)
    ufs = s3_server.s3fs()
    key = _key(dataset, dataset.big_path)
    big, n = dataset.big, len(dataset.big)
    whole = s3.get_object(Bucket=dataset.bucket, Key=key)
    assert hashlib.sha256(whole["Body"].read()).digest() == hashlib.sha256(big).digest()
    ufs_info = ufs.info(dataset.big_path)
    assert whole["ETag"].strip('"') == ufs_info["ETag"].strip('"'), "the UFS ETag"
    assert whole["ContentLength"] == n
    for rng, want in [
        ("bytes=0-99", big[:100]),
        (f"bytes={(1 << 20) - 7}-{(1 << 20) + 8}", big[(1 << 20) - 7 : (1 << 20) + 9]),
        ("bytes=-5000", big[-5000:]),
        (f"bytes={n - 10}-", big[-10:]),
        (f"bytes={n - 3}-{n + 1000}", big[-3:]),
    ]:
        r = s3.get_object(Bucket=dataset.bucket, Key=key, Range=rng)
        assert r["Body"].read() == want, rng
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert r["ContentRange"].endswith(f"/{n}")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=dataset.bucket, Key=key, Range=f"bytes={n}-")
    assert _code(e.value) == "InvalidRange"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416

    etag = whole["ETag"]
    assert (
        s3.get_object(Bucket=dataset.bucket, Key=key, IfMatch=etag, Range="bytes=0-0")[
            "Body"
        ].read()
        == big[:1]
    )
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=dataset.bucket, Key=key, IfMatch='"not-the-etag"')
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=dataset.bucket, Key=key, IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    modified = whole["LastModified"]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=dataset.bucket, Key=key, IfModifiedSince=modified)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as e:
        s3.get_object(
            Bucket=dataset.bucket,
            Key=key,
            IfUnmodifiedSince=modified.replace(year=modified.year - 1),
        )
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    head = s3.head_object(Bucket=dataset.bucket, Key=key)
    assert head["ContentLength"] == n and head["ETag"] == etag
    assert head["LastModified"] == modified
    # Every small file, the empty one included, is its UFS bytes.
    for path, data in dataset.small.items():
        got = s3.get_object(Bucket=dataset.bucket, Key=_key(dataset, path))["Body"].read()
        assert got == data, path
    m = s3w.metrics()
    assert m["alluxiofs_s3_bytes_out_total"] >= n + sum(map(len, dataset.small.values()))
    assert m["alluxiofs_s3_requests_total"] > 0


def test_list_with_delimiter_pagination_and_start_after(s3w, s3_server, dataset):
    s3 = _client(s3w.s3_url)
    ufs = s3_server.s3fs()
    base = f"{dataset.bucket}/listing"
    names = [f"k{i:04d}.txt" for i in range(1500)]
    ufs.pipe({f"{base}/many/{k}": b"x" for k in names} | {f"{base}/sub/a/b.txt": b"y"})
    r = s3.list_objects_v2(Bucket=dataset.bucket, Prefix="listing/", Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["listing/many/", "listing/sub/"]
    assert r.get("Contents", []) == []
    # Pages of 1000 (the default and the cap), then the rest.
    r = s3.list_objects_v2(Bucket=dataset.bucket, Prefix="listing/many/", MaxKeys=10**9)
    assert r["KeyCount"] == 1000 and r["IsTruncated"]
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=dataset.bucket, Prefix="listing/many/", PaginationConfig={"PageSize": 333}
    )
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert keys == [f"listing/many/{k}" for k in names]
    r = s3.list_objects_v2(
        Bucket=dataset.bucket, Prefix="listing/many/k1", StartAfter="listing/many/k1497.txt"
    )
    assert [o["Key"] for o in r["Contents"]] == ["listing/many/k1498.txt", "listing/many/k1499.txt"]
    # Recursive (no delimiter) reaches the nested file; sizes and ETags are the UFS's.
    r = s3.list_objects_v2(Bucket=dataset.bucket, Prefix="listing/sub")
    assert [(o["Key"], o["Size"]) for o in r["Contents"]] == [("listing/sub/a/b.txt", 1)]
    ufs_etag = ufs.info(f"{base}/sub/a/b.txt")["ETag"].strip('"')
    assert r["Contents"][0]["ETag"].strip('"') == ufs_etag
    # ListObjects version 1 (s3fs-fuse's and older SDKs' listing): markers, the same keys.
    pages = s3.get_paginator("list_objects").paginate(
        Bucket=dataset.bucket, Prefix="listing/many/", PaginationConfig={"PageSize": 333}
    )
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert keys == [f"listing/many/{k}" for k in names]
    r = s3.list_objects(Bucket=dataset.bucket, Prefix="listing/", Delimiter="/", MaxKeys=1)
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["listing/many/"]
    assert r["IsTruncated"] and r["NextMarker"] == "listing/many/"
    r = s3.list_objects(
        Bucket=dataset.bucket, Prefix="listing/", Delimiter="/", Marker=r["NextMarker"]
    )
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["listing/sub/"]
    assert not r["IsTruncated"] and "NextMarker" not in r
    r = s3.list_objects(
        Bucket=dataset.bucket, Prefix="listing/many/k1", Marker="listing/many/k1497.txt"
    )
    assert [o["Key"] for o in r["Contents"]] == ["listing/many/k1498.txt", "listing/many/k1499.txt"]
    # A prefix that names nothing is an empty listing, not an error.
    assert s3.list_objects_v2(Bucket=dataset.bucket, Prefix="no/such/")["KeyCount"] == 0
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert buckets == [dataset.bucket]
    s3.head_bucket(Bucket=dataset.bucket)
    location = s3.get_bucket_location(Bucket=dataset.bucket)
    assert location["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_put_multipart_and_delete_reach_the_ufs(s3w, s3_server, dataset):
    s3 = _client(s3w.s3_url)
    ufs = s3_server.s3fs()
    key = "written/one.bin"
    body = bytes(range(256)) * 4096
    put = s3.put_object(Bucket=dataset.bucket, Key=key, Body=body)
    assert ufs.cat_file(f"{dataset.bucket}/{key}") == body
    assert put["ETag"].strip('"') == ufs.info(f"{dataset.bucket}/{key}")["ETag"].strip('"')
    assert s3.get_object(Bucket=dataset.bucket, Key=key)["Body"].read() == body

    big = bytes(range(251)) * ((40 << 20) // 251 + 1)
    big = big[: 40 << 20]
    mkey = "written/multi.bin"
    up = s3.create_multipart_upload(Bucket=dataset.bucket, Key=mkey)["UploadId"]
    part = 8 << 20
    etags = {}
    for i in reversed(range(5)):  # out of order on purpose
        r = s3.upload_part(
            Bucket=dataset.bucket, Key=mkey, UploadId=up, PartNumber=i + 1,
            Body=big[i * part : (i + 1) * part],
        )  # fmt: skip
        etags[i + 1] = r["ETag"]
    parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=dataset.bucket, Key=mkey, UploadId=up,
            MultipartUpload={"Parts": list(reversed(parts))},
        )  # fmt: skip
    assert _code(e.value) == "InvalidPartOrder"
    s3.complete_multipart_upload(
        Bucket=dataset.bucket, Key=mkey, UploadId=up, MultipartUpload={"Parts": parts}
    )
    assert (
        hashlib.sha256(ufs.cat_file(f"{dataset.bucket}/{mkey}")).digest()
        == hashlib.sha256(big).digest()
    )
    got = s3.get_object(Bucket=dataset.bucket, Key=mkey, Range="bytes=12345678-12399999")
    assert got["Body"].read() == big[12345678:12400000]
    with pytest.raises(ClientError) as e:  # the upload is gone once completed
        s3.upload_part(Bucket=dataset.bucket, Key=mkey, UploadId=up, PartNumber=1, Body=b"x")
    assert _code(e.value) == "NoSuchUpload"

    up2 = s3.create_multipart_upload(Bucket=dataset.bucket, Key="written/aborted.bin")["UploadId"]
    s3.upload_part(Bucket=dataset.bucket, Key="written/aborted.bin", UploadId=up2, PartNumber=1,
                   Body=b"z" * 1000)  # fmt: skip
    s3.abort_multipart_upload(Bucket=dataset.bucket, Key="written/aborted.bin", UploadId=up2)
    assert not ufs.exists(f"{dataset.bucket}/written/aborted.bin")

    s3.delete_object(Bucket=dataset.bucket, Key=key)
    ufs.invalidate_cache()
    assert not ufs.exists(f"{dataset.bucket}/{key}")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=dataset.bucket, Key=key)
    assert _code(e.value) == "NoSuchKey"
    r = s3.delete_objects(
        Bucket=dataset.bucket, Delete={"Objects": [{"Key": mkey}, {"Key": "written/never"}]}
    )
    assert sorted(d["Key"] for d in r["Deleted"]) == [mkey, "written/never"]
    ufs.invalidate_cache()
    assert not ufs.exists(f"{dataset.bucket}/{mkey}")
    assert s3w.metrics()["alluxiofs_s3_bytes_in_total"] >= len(body) + len(big)


def test_list_parts_and_uploads_and_parts_count_against_capacity(
    start_worker, bucket_mount, dataset
):
    """ListParts and ListMultipartUploads answer what was uploaded (paged as
    S3 pages them), and the parts of uploads in progress hold cache capacity,
    also across a restart: a part that does not fit is refused, never
    written past the capacity."""
    w = start_worker(
        bucket_mount,
        capacity="16MiB",
        env={"ALLUXIOFS_WORKER_S3_ACCESS_KEY": ACCESS, "ALLUXIOFS_WORKER_S3_SECRET_KEY": SECRET},
    )
    s3 = _client(w.s3_url)
    b = dataset.bucket
    ups = [
        (k, s3.create_multipart_upload(Bucket=b, Key=k)["UploadId"])
        for k in ["mp/a.bin", "mp/a.bin", "mp/dir/b.bin", "other/c.bin"]
    ]
    (ka, a1), (_, a2), (kb, b1), _ = ups
    big = os.urandom(10 << 20)
    sent = {1: big, 2: b"two" * 100, 3: b"first"}
    for n, body in sent.items():
        s3.upload_part(Bucket=b, Key=ka, UploadId=a1, PartNumber=n, Body=body)
    sent[3] = b"sent again, longer"
    s3.upload_part(Bucket=b, Key=ka, UploadId=a1, PartNumber=3, Body=sent[3])

    def parts(**kw):
        return s3.list_parts(Bucket=b, Key=ka, UploadId=a1, **kw)

    got = parts()
    assert [(p["PartNumber"], p["Size"], p["ETag"].strip('"')) for p in got["Parts"]] == [
        (n, len(body), hashlib.md5(body).hexdigest()) for n, body in sorted(sent.items())
    ]
    assert got["IsTruncated"] is False
    page = parts(MaxParts=2)
    assert [p["PartNumber"] for p in page["Parts"]] == [1, 2]
    assert page["IsTruncated"] is True and page["NextPartNumberMarker"] == 2
    assert [p["PartNumber"] for p in parts(PartNumberMarker=2)["Parts"]] == [3]
    assert s3.list_parts(Bucket=b, Key=kb, UploadId=b1).get("Parts", []) == []
    with pytest.raises(ClientError) as e:  # an upload of another key
        s3.list_parts(Bucket=b, Key=kb, UploadId=a1)
    assert _code(e.value) == "NoSuchUpload"

    listed = s3.list_multipart_uploads(Bucket=b, Prefix="mp/")
    # By key, then in the order they were created.
    assert [(u["Key"], u["UploadId"]) for u in listed["Uploads"]] == [(ka, a1), (ka, a2), (kb, b1)]
    one_level = s3.list_multipart_uploads(Bucket=b, Prefix="mp/", Delimiter="/")
    assert [u["UploadId"] for u in one_level["Uploads"]] == [a1, a2]
    assert [c["Prefix"] for c in one_level["CommonPrefixes"]] == ["mp/dir/"]
    seen, kw = [], {}
    for _ in range(10):
        page = s3.list_multipart_uploads(Bucket=b, MaxUploads=1, **kw)
        seen += [u["UploadId"] for u in page.get("Uploads", [])]
        if not page["IsTruncated"]:
            break
        kw = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    assert seen == [a1, a2, b1, ups[3][1]]
    with pytest.raises(ClientError) as e:
        s3.list_multipart_uploads(Bucket="no-such-bucket")
    assert _code(e.value) == "NoSuchBucket"

    # 10 MiB of parts held: another 10 MiB does not fit in 16 MiB.
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=b, Key=kb, UploadId=b1, PartNumber=1, Body=big)
    assert _code(e.value) == "EntityTooLarge", e.value.response
    # The uploads, and the capacity their parts hold, survive a restart.
    w.restart()
    s3 = _client(w.s3_url)
    assert len(s3.list_multipart_uploads(Bucket=b, Prefix="mp/")["Uploads"]) == 3
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=b, Key=kb, UploadId=b1, PartNumber=1, Body=big)
    assert _code(e.value) == "EntityTooLarge"
    # Aborting gives the capacity back.
    s3.abort_multipart_upload(Bucket=b, Key=ka, UploadId=a1)
    s3.upload_part(Bucket=b, Key=kb, UploadId=b1, PartNumber=1, Body=big)
    left = s3.list_multipart_uploads(Bucket=b, Prefix="mp/")["Uploads"]
    assert [u["UploadId"] for u in left] == [a2, b1]
    for k, u in [(ka, a2), (kb, b1), ups[3]]:
        s3.abort_multipart_upload(Bucket=b, Key=k, UploadId=u)
    assert s3.list_multipart_uploads(Bucket=b).get("Uploads", []) == []
    log = w.log_path.read_text(errors="replace")
    assert "op returns error" not in log, "s3s logs refused requests at ERROR"
    assert "ERROR" not in log, log[-3000:]


def test_errors_are_s3_errors(s3w, dataset):
    url = s3w.s3_url
    key = _key(dataset, dataset.big_path)
    with pytest.raises(ClientError) as e:
        _client(url, ACCESS, "wrong-secret").get_object(Bucket=dataset.bucket, Key=key)
    assert _code(e.value) == "SignatureDoesNotMatch"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as e:
        _client(url, "AKIDUNKNOWN", SECRET).get_object(Bucket=dataset.bucket, Key=key)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as e:
        _client(url, None).get_object(Bucket=dataset.bucket, Key=key)
    assert _code(e.value) == "AccessDenied"
    s3 = _client(url)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=dataset.bucket, Key="data/no/such/key")
    assert _code(e.value) == "NoSuchKey"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="no-such-bucket", Key="x")
    assert _code(e.value) == "NoSuchBucket"
    with pytest.raises(ClientError) as e:
        s3.get_bucket_policy(Bucket=dataset.bucket)
    assert _code(e.value) == "NotImplemented"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=dataset.bucket, Key="data/small")  # a directory is no object
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert requests.get(f"{s3w.url}/healthz", timeout=5).json()["s3_port"] == s3w.s3_port


def test_hostile_input_gets_s3_errors_and_nothing_outside_the_mount(
    start_worker, s3_server, dataset
):
    """Mount only ``<bucket>/data``; the rest of the bucket holds a secret."""
    ufs = s3_server.s3fs()
    ufs.pipe_file(f"{dataset.bucket}/secret.txt", b"TOP-SECRET-BYTES")
    w = start_worker(f"s3://{dataset.bucket}/data", extra_args=["--s3-anonymous"])
    base = f"{w.s3_url}/{dataset.bucket}"
    bad_keys = [
        "secret.txt",
        "data/../secret.txt",
        "data/%2E%2E/secret.txt",
        "data%2F..%2Fsecret.txt",
        "data/..%2Fsecret.txt",
        "data/./../secret.txt",
        "data//../secret.txt",
        "%2e%2e/secret.txt",
    ]
    for k in bad_keys:
        r = requests.get(f"{base}/{k}", timeout=10)
        assert r.status_code in (400, 403, 404), (k, r.status_code, r.text)
        assert b"TOP-SECRET" not in r.content, k
        assert r.text.startswith("<?xml") and "<Code>" in r.text, (k, r.text)
    r = requests.get(f"{base}/data/" + "x" * 2000, timeout=10)
    assert r.status_code == 400 and "KeyTooLong" in r.text
    key = _key(dataset, dataset.big_path)
    for rng in ["bytes=abc", "bytes=5-1", "bytes=--1", "items=0-1", "bytes=0-1,5-9"]:
        r = requests.get(f"{base}/{key}", headers={"Range": rng}, timeout=10)
        assert r.status_code in (200, 206, 400, 416), (rng, r.status_code)
        if r.status_code >= 400:
            assert "<Code>" in r.text, rng
    r = requests.get(f"{base}?list-type=2&max-keys=999999999999", timeout=10)
    assert r.status_code in (200, 400)
    r = requests.get(f"{base}?list-type=2&continuation-token=zz", timeout=10)
    assert r.status_code == 400
    # The listing of the bucket's top shows the mount, not the secret.
    r = requests.get(f"{base}?list-type=2&delimiter=/", timeout=10)
    assert r.status_code == 200 and "secret.txt" not in r.text
    assert "<Prefix>data/</Prefix>" in r.text
    up = requests.post(f"{base}/data/x.bin?uploads", timeout=10)
    assert up.status_code == 200, up.text
    upload_id = up.text.split("<UploadId>")[1].split("</UploadId>")[0]
    for body in [b"<CompleteMultipartUpload><Part>", b"not xml", b"<a/>" * 100_000]:
        r = requests.post(f"{base}/data/x.bin?uploadId={upload_id}", data=body, timeout=30)
        assert 400 <= r.status_code < 500, (body[:20], r.status_code, r.text)
    r = requests.put(f"{base}/data/x.bin?partNumber=1&uploadId=../../../etc", data=b"x", timeout=10)
    assert r.status_code == 404 and "NoSuchUpload" in r.text
    r = requests.put(f"{base}/secret.txt", data=b"overwrite", timeout=10)
    assert r.status_code == 403
    assert ufs.cat_file(f"{dataset.bucket}/secret.txt") == b"TOP-SECRET-BYTES"
    r = requests.request("PATCH", f"{base}/{key}", timeout=10)
    assert r.status_code == 501 and "<Code>NotImplemented</Code>" in r.text
    assert requests.get(f"{w.url}/healthz", timeout=5).status_code == 200
    assert w.alive


def test_pyarrow_native_s3_reads_through_the_endpoint(s3w, dataset):
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    host = s3w.s3_url.removeprefix("http://")
    fs = pafs.S3FileSystem(
        access_key=ACCESS, secret_key=SECRET, endpoint_override=host, scheme="http",
        region="us-east-1", allow_bucket_creation=False,
    )  # fmt: skip
    for path, table in dataset.parquet_tables.items():
        got = pq.read_table(path, filesystem=fs, columns=["id", "label"], pre_buffer=True)
        assert got.equals(table.select(["id", "label"])), path
    ds = pq.read_table(dataset.parquet_dir, filesystem=fs, columns=["y"])
    want = pa.concat_tables(t.select(["y"]) for t in dataset.parquet_tables.values())
    assert sorted(ds.column("y").to_pylist()) == sorted(want.column("y").to_pylist())
    info = fs.get_file_info(dataset.big_path)
    assert info.size == len(dataset.big)
    with fs.open_input_file(dataset.big_path) as f:
        f.seek(3 << 20)
        assert f.read(1000) == dataset.big[3 << 20 : (3 << 20) + 1000]


def test_polars_obstore_and_s3fs_read_through_the_endpoint(s3w, dataset):
    import obstore
    import polars as pl
    import s3fs
    from obstore.store import S3Store

    opts = {
        "aws_access_key_id": ACCESS,
        "aws_secret_access_key": SECRET,
        "aws_endpoint_url": s3w.s3_url,
        "aws_region": "us-east-1",
        "aws_allow_http": "true",
    }
    path, table = next(iter(dataset.parquet_tables.items()))
    got = pl.scan_parquet(f"s3://{path}", storage_options=opts).select("id", "x").collect()
    assert got["id"].to_list() == table.column("id").to_pylist()

    store = S3Store(
        dataset.bucket, endpoint=s3w.s3_url, access_key_id=ACCESS,
        secret_access_key=SECRET, region="us-east-1", client_options={"allow_http": True},
    )  # fmt: skip
    key = _key(dataset, dataset.big_path)
    assert bytes(obstore.get(store, key).bytes()) == dataset.big
    assert bytes(obstore.get_range(store, key, start=10, end=1010)) == dataset.big[10:1010]
    listed = {o["path"] for o in obstore.list(store, prefix="data/small/a").collect()}
    want = {_key(dataset, p) for p in dataset.small if "/small/a/" in p}
    assert listed == want

    fs = s3fs.S3FileSystem(
        key=ACCESS, secret=SECRET, skip_instance_cache=True,
        client_kwargs={"endpoint_url": s3w.s3_url, "region_name": "us-east-1"},
    )  # fmt: skip
    for p, data in list(dataset.small.items())[:6]:
        assert fs.cat_file(p) == data, p
    assert sorted(fs.find(f"{dataset.prefix}/small")) == sorted(dataset.small)
    with fs.open(dataset.big_path, "rb") as f:
        f.seek(len(dataset.big) - 100)
        assert f.read() == dataset.big[-100:]
    buf = io.BytesIO(b"written by s3fs")
    fs.pipe_file(f"{dataset.bucket}/written/by-s3fs.txt", buf.getvalue())
    assert fs.cat_file(f"{dataset.bucket}/written/by-s3fs.txt") == b"written by s3fs"


def _cluster(start_worker, bucket_mount, etcd_server, redirect: bool):
    args = ["--etcd", etcd_server.endpoint, "--etcd-lease-ttl", "5s", "--s3-anonymous"]
    if redirect:
        args.append("--s3-redirect")
    workers = [start_worker(bucket_mount, extra_args=args) for _ in range(3)]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # every worker registered
        if all(
            requests.get(f"{w.url}/healthz", timeout=5).json()["registration"] == "registered"
            for w in workers
        ):
            break
        time.sleep(0.1)
    return workers


def _wait_forwarding(workers, dataset, s3, metric: str) -> None:
    """Read files through the first worker until its cluster view places some elsewhere."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for path in dataset.small:
            s3.get_object(Bucket=dataset.bucket, Key=_key(dataset, path))["Body"].read()
        if workers[0].metrics().get(metric, 0) > 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"no read through {workers[0].name} counted in {metric}")


def _owners(workers, url: str) -> list[tuple[str, int]]:
    out = []
    for w in workers:
        r = requests.get(f"{w.url}/v1/node", params={"path": url}, timeout=10)
        assert r.status_code == 200, r.text
        out.append((r.json()["Host"], r.json()["HttpServerPort"]))
    return out


def test_reads_are_served_from_the_owner(start_worker, bucket_mount, etcd_server, dataset):
    workers = _cluster(start_worker, bucket_mount, etcd_server, redirect=False)
    s3 = _client(workers[0].s3_url, None)
    _wait_forwarding(workers, dataset, s3, "alluxiofs_s3_forwarded_total")
    # /v1/node (Alluxio's client 1.1 asks it): every worker names the same
    # owner, a live worker of this cluster, and not always itself.
    ports = {w.port for w in workers}
    deadline = time.monotonic() + 20
    while True:
        named = [_owners(workers, f"s3://{p}") for p in dataset.small]
        if all(len(set(o)) == 1 for o in named) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(len(set(o)) == 1 for o in named), named
    assert {o[0][1] for o in named} <= ports and len({o[0][1] for o in named}) > 1, named
    outside = {"path": "file:///etc/passwd"}
    bad = requests.get(f"{workers[0].url}/v1/node", params=outside, timeout=10)
    assert 400 <= bad.status_code < 500, bad.text
    key = _key(dataset, dataset.big_path)
    for _ in range(2):
        assert s3.get_object(Bucket=dataset.bucket, Key=key)["Body"].read() == dataset.big
    served_by_others = sum(w.metrics().get("alluxiofs_bytes_served_total", 0) for w in workers[1:])
    assert served_by_others > 0, "the owners' page stores answered the forwarded reads"
    assert workers[0].metrics().get("alluxiofs_s3_owner_failovers_total", 0) == 0
    # The owner of a file dies: its reads are served here, from the UFS.
    for w in workers[1:]:
        w.kill()
    for path, data in dataset.small.items():
        assert s3.get_object(Bucket=dataset.bucket, Key=_key(dataset, path))["Body"].read() == data


def test_redirects_to_the_owner(start_worker, bucket_mount, etcd_server, dataset):
    workers = _cluster(start_worker, bucket_mount, etcd_server, redirect=True)
    ports = {w.s3_port for w in workers}
    redirected = 0
    for path, data in dataset.small.items():
        r = requests.get(f"{workers[0].s3_url}/{path}", allow_redirects=False, timeout=10)
        if r.status_code == 307:
            redirected += 1
            loc = r.headers["Location"]
            assert int(loc.split(":")[2].split("/")[0]) in ports, loc
            assert loc.endswith("?alluxiofs-redirected=1"), loc
            assert requests.get(loc, timeout=10).content == data
        else:
            assert r.status_code == 200 and r.content == data
        assert requests.get(f"{workers[0].s3_url}/{path}", timeout=10).content == data
        # A request redirected once is served where it lands (no loops
        # while the workers' cluster views disagree).
        once = requests.get(
            f"{workers[0].s3_url}/{path}?alluxiofs-redirected=1", allow_redirects=False, timeout=10
        )
        assert once.status_code == 200 and once.content == data
    assert redirected > 0
    assert workers[0].metrics()["alluxiofs_s3_redirected_total"] >= redirected


def test_secrets_never_in_logs_or_answers(s3w, dataset):
    s3 = _client(s3w.s3_url)
    s3.get_object(Bucket=dataset.bucket, Key=_key(dataset, dataset.big_path), Range="bytes=0-9")
    with pytest.raises(ClientError):
        _client(s3w.s3_url, ACCESS, "wrong").list_objects_v2(Bucket=dataset.bucket)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=dataset.bucket, Key="nope")
    assert SECRET not in str(e.value.response)
    metrics = requests.get(f"{s3w.url}/metrics", timeout=5).text
    health = requests.get(f"{s3w.url}/healthz", timeout=5).text
    log = s3w.log_path.read_text(errors="replace")
    for where, text in [("metrics", metrics), ("healthz", health), ("log", log)]:
        assert SECRET not in text, where
    cmdline = open(f"/proc/{s3w.proc.pid}/cmdline", "rb").read()
    assert SECRET.encode() not in cmdline
