"""Code written for Alluxio's own ``alluxiofs`` client runs unchanged.

The snippets are those of that client's README (1.0.x and 1.1.x) and of
Alluxio's articles, against real workers, a real etcd and the session's S3
server. Their constructor options are honoured where alluxiofs has the same
meaning (``etcd_host``, ``concurrency``, ``preload_path``, ``fs``, ...) and
answered with a warning that names our equivalent, or an error, otherwise.
"""

from __future__ import annotations

import pickle
import warnings

import fsspec
import pytest
from alluxiofs import AlluxioFileSystem
from alluxiofs.compat import CompatibilityWarning
from harness import ufs_requests


def _etcd_worker(start_worker, bucket_mount, etcd_server):
    w = start_worker(bucket_mount, extra_args=["--etcd", etcd_server.endpoint])
    w.wait_registered()
    return w


def _etcd_host_port(etcd_server) -> tuple[str, int]:
    hostport = etcd_server.endpoint.split("://", 1)[-1]
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def test_readme_etcd_example(start_worker, bucket_mount, etcd_server, dataset, s3_server):
    """The README of Alluxio's client: register, etcd_hosts + etcd_port, ls, open."""
    _etcd_worker(start_worker, bucket_mount, etcd_server)
    host, port = _etcd_host_port(etcd_server)

    fsspec.register_implementation("alluxiofs", AlluxioFileSystem, clobber=True)
    alluxio_fs = fsspec.filesystem(
        "alluxiofs",
        etcd_hosts=host,
        etcd_port=port,
        target_protocol="s3",
        target_options=s3_server.target_options(),
        skip_instance_cache=True,
    )
    assert len(alluxio_fs.workers()) == 1
    directory = f"s3://{dataset.prefix}/small/a/"
    contents = alluxio_fs.ls(directory, detail=True)
    want = sorted(p for p in dataset.small if p.startswith(f"{dataset.prefix}/small/a/"))
    assert [c["name"] for c in contents] == want
    with alluxio_fs.open(f"s3://{want[3]}", "rb") as f:
        data = f.read()
    assert data == dataset.small[want[3]]


def test_ray_article_etcd_host(start_worker, bucket_mount, etcd_server, dataset, s3_server):
    """Alluxio's Ray article spells the option ``etcd_host``; protocol name ``alluxio``."""
    _etcd_worker(start_worker, bucket_mount, etcd_server)
    host, port = _etcd_host_port(etcd_server)
    fs = fsspec.filesystem(
        "alluxio", target_protocol="s3", etcd_host=host, etcd_port=port,
        target_options=s3_server.target_options(), skip_instance_cache=True,
    )  # fmt: skip
    assert fs.options.etcd_hosts == host
    assert len(fs.workers()) == 1
    path = sorted(dataset.small)[5]
    assert fs.cat_file(path) == dataset.small[path]


def test_pyarrow_examples(two_workers, make_fs, dataset, s3_server):
    """The README's PyArrow examples: a dataset, and PyFileSystem(FSSpecHandler(fs))."""
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    alluxio_fs = make_fs(two_workers)
    path = sorted(dataset.parquet_tables)[0]
    table = dataset.parquet_tables[path]
    dataset_ = ds.dataset(f"s3://{path}", filesystem=alluxio_fs)
    assert dataset_.count_rows() == table.num_rows
    assert dataset_.schema == table.schema
    assert dataset_.take([0]).to_pylist() == table.take([0]).to_pylist()

    py_fs = PyFileSystem(FSSpecHandler(alluxio_fs))
    with py_fs.open_input_file(path) as f:
        data = f.read()
    assert data == s3_server.s3fs().cat_file(path)


def test_concurrency_and_http_options(two_workers, make_fs, dataset):
    """1.0.x ``concurrency``, 1.1.x ``http_max_retries`` / ``http_timeouts``: same meaning here."""
    fs = make_fs(two_workers, concurrency=8, http_max_retries=5, http_timeouts=20)
    assert fs.options.max_parallel == 8
    assert fs.options.retries == 5
    assert fs.options.request_timeout == 20.0
    assert fs.cat_file(dataset.big_path, 0, 3 << 20) == dataset.big[: 3 << 20]
    with pytest.raises(ValueError, match="given twice"):
        make_fs(two_workers, concurrency=8, max_parallel=4)


def test_fs_instance_is_the_target(two_workers, make_fs, dataset, s3_server):
    """``fs=``: a target filesystem instance instead of target_protocol/target_options."""
    target = s3_server.s3fs()
    fs = make_fs(two_workers, target_protocol=None, target_options=None, fs=target)
    assert fs.target_fs is target
    assert fs.target_protocol == "s3"
    assert fs.target_options == target.storage_options
    path = sorted(dataset.small)[7]
    assert fs.cat_file(path) == dataset.small[path]
    # The fallback reads through that instance when no worker answers.
    for w in two_workers:
        w.kill()
    assert fs.cat_file(path) == dataset.small[path]
    assert fs.stats()["ufs_fallback_reads"] >= 1
    with pytest.raises(ValueError, match="target_protocol"):
        make_fs(two_workers, target_protocol="gs", fs=target)
    with pytest.raises(TypeError, match="fsspec filesystem"):
        make_fs(two_workers, target_protocol=None, fs="s3")


def test_preload_path_loads_once(start_worker, bucket_mount, make_fs, dataset):
    """``preload_path``: loaded before the constructor returns; a pickled copy does not
    load again; reads afterwards make no UFS request."""
    w = start_worker(bucket_mount)
    prefix = f"{dataset.prefix}/small/b"
    before = ufs_requests([w], "get")
    fs = make_fs([w], preload_path=f"s3://{prefix}")
    loaded = ufs_requests([w], "get")
    files = {p: d for p, d in dataset.small.items() if p.startswith(prefix + "/")}
    assert loaded > before
    assert fs.cat(sorted(files)) == files
    assert ufs_requests([w], "get") == loaded
    copy = pickle.loads(pickle.dumps(fs))
    assert "preload_path" not in copy.storage_options
    assert copy.cat_file(sorted(files)[0]) == files[sorted(files)[0]]
    with pytest.raises(FileNotFoundError):
        make_fs([w], preload_path=f"s3://{dataset.prefix}/no-such-dir")


def test_options_without_meaning_here_warn(two_workers, make_fs):
    """Options of that client with no meaning here warn and name our equivalent."""
    cases = {
        "use_local_disk_cache": (True, "embedded"),
        "local_cache_size_gb": (8, "embedded_capacity"),
        "memory_cache_size_mb": (64, "embedded_memory_capacity"),
        "mcap_enabled": (True, "readahead"),
        "etcd_refresh_workers_interval": (120, "watched"),
        "test_options": ({}, "nothing"),
        "logger": (None, "getLogger"),
    }
    for name, (value, hint) in cases.items():
        with pytest.warns(CompatibilityWarning, match=hint):
            make_fs(two_workers, **{name: value})
    with pytest.warns(CompatibilityWarning, match="native core"):
        make_fs(two_workers, options={"alluxio.common.extension.enable": "True"})
    with pytest.warns(CompatibilityWarning, match="configuration.md"):
        make_fs(two_workers, options={"alluxio.user.file.writetype.default": "CACHE_THROUGH"})
    with pytest.raises(ValueError, match="worker_hosts"):
        make_fs(two_workers, load_balance_domain="alluxio.example.com")
    with pytest.raises(TypeError, match="unexpected option 'no_such_option'"):
        make_fs(two_workers, no_such_option=1)


def test_alluxio_properties_are_honoured(two_workers, make_fs):
    """``options={"alluxio.*": ...}``: page size, vnodes (both key spellings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fs = make_fs(
            two_workers,
            options={
                "alluxio.worker.page.store.page.size": "1MB",
                "alluxio.user.worker.selection.policy.consistent.hash.virtual.node.count."
                "per.worker": "7",
            },
        )
    assert fs.options.page_size == 1 << 20
    assert fs.options.vnodes == 7
    assert fs.placement() == "alluxio:7"


def test_every_translated_name_is_documented():
    """docs/configuration.md names every option of Alluxio's client that compat.py handles."""
    from pathlib import Path

    from alluxiofs import compat

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    names = [*compat.RENAMED, *compat.IGNORED, *compat.REFUSED, *compat.ALLUXIO_PROPERTIES]
    missing = [n for n in names if f"`{n}`" not in doc]
    assert not missing, f"not in docs/configuration.md: {missing}"


def test_client_defaults_are_declared_once_in_rust():
    """The native client's options and defaults come from Rust: ClientOptions
    shows the same, hands exactly those names to NativeClient, and an unknown
    name is a ValueError that lists the known ones."""
    from alluxiofs import _alluxiofs
    from alluxiofs.config import ClientOptions

    defaults = _alluxiofs.client_defaults()
    assert defaults == {
        "page_size": 1 << 20, "vnodes": 5, "replicas": 1, "connect_timeout": 2.0,
        "request_timeout": 30.0, "retries": 2, "max_chunk": 8 << 20, "max_parallel": 16,
        "coalesce_gap": 1 << 20, "auth_token": None, "readahead_initial": 1 << 20,
        "readahead_max": 64 << 20, "local_reads": True, "placement": None,
        "tls": False, "tls_ca": None, "tls_verify": True, "tls_cert": None, "tls_key": None,
    }  # fmt: skip
    assert ClientOptions().native_options() == defaults
    with pytest.raises(ValueError, match=r"pagesize.*page_size, vnodes"):
        _alluxiofs.NativeClient([("127.0.0.1", 1)], {"pagesize": 4096})
    with pytest.raises(ValueError, match="client option connect_timeout"):
        _alluxiofs.NativeClient([("127.0.0.1", 1)], {"connect_timeout": -1.0})
    with pytest.raises(ValueError, match="client option page_size"):
        _alluxiofs.NativeClient([("127.0.0.1", 1)], {"page_size": "big"})
    client = _alluxiofs.NativeClient([("127.0.0.1", 1)], {"placement": "rendezvous"})
    assert client.placement() == "rendezvous"
