"""The fsspec API surface, checked against what s3fs sees in the same bucket."""

from __future__ import annotations

import io

import alluxiofs
import fsspec
import pytest


@pytest.fixture
def fs(make_fs, two_workers):
    """A filesystem over two workers."""
    return make_fs(two_workers)


@pytest.fixture
def tree(dataset):
    """The small-files subtree: prefix and {path: bytes}."""
    return f"{dataset.prefix}/small", dataset.small


def test_registered_protocols(fs):
    """Both protocol names resolve to the same class; instances are AlluxioFileSystem."""
    assert fsspec.get_filesystem_class("alluxiofs") is alluxiofs.AlluxioFileSystem
    assert fsspec.get_filesystem_class("alluxio") is alluxiofs.AlluxioFileSystem
    assert isinstance(fs, alluxiofs.AlluxioFileSystem)


def test_ls_detail_matches_s3(fs, tree, s3_server):
    """ls(detail=True): names without protocol, sizes and types as the UFS says."""
    prefix, files = tree
    entries = fs.ls(f"{prefix}/a", detail=True)
    expected = {p: d for p, d in files.items() if p.startswith(f"{prefix}/a/")}
    assert [e["name"] for e in entries] == sorted(expected)
    for e in entries:
        assert e["type"] == "file"
        assert e["size"] == len(expected[e["name"]])
        assert "mtime" in e and "etag" in e
    top = fs.ls(prefix, detail=True)
    assert {(e["name"], e["type"]) for e in top} == {
        (f"{prefix}/a", "directory"),
        (f"{prefix}/b", "directory"),
    }
    assert fs.ls(f"s3://{prefix}", detail=False) == [f"{prefix}/a", f"{prefix}/b"]
    s3_names = sorted(s3_server.s3fs().ls(f"{prefix}/a", detail=False))
    assert fs.ls(f"{prefix}/a", detail=False) == s3_names


def test_info_exists_isdir_isfile(fs, tree):
    """info on files and directories; the boolean helpers agree with it."""
    prefix, files = tree
    path, data = next(iter(sorted(files.items())))
    info = fs.info(path)
    assert info["name"] == path
    assert info["size"] == len(data)
    assert info["type"] == "file"
    assert fs.info(f"s3://{path}")["size"] == len(data)
    assert fs.size(path) == len(data)
    assert fs.info(prefix)["type"] == "directory"
    assert fs.exists(path) and fs.exists(prefix)
    assert fs.isfile(path) and not fs.isdir(path)
    assert fs.isdir(prefix) and not fs.isfile(prefix)
    assert not fs.exists(f"{prefix}/nothing-here")


def test_find_glob_walk_du(fs, tree):
    """find, glob, walk and du see exactly the uploaded tree."""
    prefix, files = tree
    assert fs.find(prefix) == sorted(files)
    found = fs.find(prefix, detail=True)
    assert {k: v["size"] for k, v in found.items()} == {p: len(d) for p, d in files.items()}
    assert fs.glob(f"{prefix}/a/*.bin") == sorted(p for p in files if p.startswith(f"{prefix}/a/"))
    assert fs.glob(f"{prefix}/**/f00[0-3].bin") == sorted(
        p for p in files if p.rsplit("/", 1)[1] in {f"f00{i}.bin" for i in range(4)}
    )
    walked = {}
    for root, dirs, names in fs.walk(prefix):
        walked[root] = (sorted(dirs), sorted(names))
    assert walked[prefix] == (["a", "b"], [])
    assert walked[f"{prefix}/b"] == (["c"], [])
    assert set(walked[f"{prefix}/b/c"][1]) == {
        p.rsplit("/", 1)[1] for p in files if p.startswith(f"{prefix}/b/c/")
    }
    assert fs.du(prefix) == sum(len(d) for d in files.values())
    per_file = fs.du(prefix, total=False)
    assert per_file == {p: len(d) for p, d in files.items()}


def test_head_tail_cat(fs, tree, dataset):
    """head/tail/cat of one path, of a glob, and recursive cat of a directory."""
    prefix, files = tree
    big = dataset.big
    assert fs.head(dataset.big_path, 1000) == big[:1000]
    assert fs.tail(dataset.big_path, 1000) == big[-1000:]
    assert fs.head(dataset.big_path) == big[:1024]
    path, data = max(files.items(), key=lambda kv: len(kv[1]))
    assert fs.cat(path) == data
    in_a = {p: d for p, d in files.items() if p.startswith(f"{prefix}/a/")}
    assert fs.cat(f"{prefix}/a/*") == in_a
    # Directories listed by a recursive expansion give no bytes.
    assert fs.cat(prefix, recursive=True, on_error="omit") == files
    # Reading a directory is IsADirectoryError, as with fsspec's local filesystem.
    with pytest.raises(IsADirectoryError):
        fs.cat_file(prefix)


def test_file_object(fs, dataset):
    """open('rb'): seek/tell/read/readinto/readline/iteration behave like a local file."""
    data = dataset.big[: 5 * 1024 * 1024]
    path = f"{dataset.prefix}/api/lines.txt"
    lines = b"".join(b"line %d %s\n" % (i, b"x" * (i % 50)) for i in range(20_000))
    fs.pipe_file(path, lines)
    ref = io.BytesIO(lines)

    with fs.open(path, "rb") as f:
        assert f.readable() and f.seekable() and not f.writable()
        assert f.size == len(lines)
        assert f.readline() == ref.readline()
        assert f.tell() == ref.tell()
        assert f.read(100) == ref.read(100)
        f.seek(-50, 2)
        ref.seek(-50, 2)
        assert f.read() == ref.read()
        assert f.read() == b""
        f.seek(10)
        f.seek(20, 1)
        assert f.tell() == 30
        ref.seek(30)
        assert f.readline() == ref.readline()
    with fs.open(path, "rb") as f:
        assert list(f) == lines.splitlines(keepends=True)

    with fs.open(dataset.big_path, "rb") as f:
        buf = bytearray(len(data))
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            n = f.readinto(view[got:])
            assert n > 0
            got += n
        assert bytes(buf) == data
        assert f.tell() == len(data)
        f.seek(len(dataset.big) - 10)
        small = bytearray(100)
        assert f.readinto(small) == 10
        assert bytes(small[:10]) == dataset.big[-10:]


def test_open_text_mode_and_chained_url(tree, s3_server, two_workers):
    """fsspec.open with a chained URL (alluxiofs::s3://...) and text mode."""
    _, files = tree
    path, data = max(files.items(), key=lambda kv: len(kv[1]))
    opts = {"worker_hosts": ",".join(w.addr for w in two_workers)}
    with fsspec.open(
        f"alluxiofs::s3://{path}", "rb", alluxiofs=opts, s3=s3_server.target_options()
    ) as f:
        assert f.read() == data
    text_path = f"{s3_server.bucket}/api/text.txt"
    s3_server.s3fs().pipe_file(text_path, "héllo\nwörld\n".encode())
    with fsspec.open(
        f"alluxiofs::s3://{text_path}", "rt", encoding="utf-8", alluxiofs=opts,
        s3=s3_server.target_options(),
    ) as f:  # fmt: skip
        assert f.read().splitlines() == ["héllo", "wörld"]


def test_stats_and_worker_metrics(fs, dataset, two_workers):
    """stats() counts bytes and requests; worker_metrics() has both workers' counters."""
    path, data = max(dataset.small.items(), key=lambda kv: len(kv[1]))
    before = fs.stats()
    assert fs.cat_file(path) == data
    after = fs.stats()
    assert after["bytes_read"] - before["bytes_read"] >= len(data)
    assert after["worker_requests"] > before["worker_requests"]
    # Both workers answered: no read went to the UFS, none is counted for any worker.
    assert set(after["fallbacks"]) <= {w.addr for w in two_workers}
    assert sum(after["fallbacks"].values()) == 0
    assert after["ufs_fallback_reads"] == 0 and after["ufs_fallback_bytes"] == 0
    metrics = fs.worker_metrics()
    assert set(metrics) == {w.addr for w in two_workers}
    for w in two_workers:
        assert (
            metrics[w.addr]["alluxiofs_ufs_requests_total"]
            == w.metrics()["alluxiofs_ufs_requests_total"]
        )


def test_pandas(fs, dataset, s3_server, two_workers):
    """pandas reads CSV through a file object and Parquet through a chained URL."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(9)
    df = pd.DataFrame({"a": np.arange(5000), "b": rng.standard_normal(5000)})
    path = f"{s3_server.bucket}/api/frame.csv"
    s3_server.s3fs().pipe_file(path, df.to_csv(index=False).encode())
    with fs.open(path, "rb") as f:
        got = pd.read_csv(f)
    pd.testing.assert_frame_equal(got, df)

    pq_path, table = next(iter(dataset.parquet_tables.items()))
    frame = pd.read_parquet(
        f"alluxiofs::s3://{pq_path}",
        columns=["id", "x"],
        storage_options={
            "alluxiofs": {"worker_hosts": ",".join(w.addr for w in two_workers)},
            "s3": s3_server.target_options(),
        },
    )
    pd.testing.assert_frame_equal(frame, table.select(["id", "x"]).to_pandas())
