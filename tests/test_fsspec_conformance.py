"""fsspec's own conformance suite, run against alluxiofs.

``fsspec.tests.abstract`` is the suite that s3fs, gcsfs and adlfs derive their
tests from (copy, get, put, open, pipe). Here it runs twice: alluxiofs over a
local directory (``file://``) and alluxiofs over S3 (the session's real S3
server), each through a real cache worker. Where alluxiofs deliberately
differs from the suite, the case is an expected failure with the reason, and
docs/semantics.md says the same.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import fsspec
import fsspec.tests.abstract as abstract
import pytest
from harness import Worker, start_mount_worker

_counter = itertools.count()


@pytest.fixture(scope="module")
def local_root(tmp_path_factory) -> str:
    """The directory the local-UFS worker mounts."""
    return str(tmp_path_factory.mktemp("conformance-ufs"))


@pytest.fixture(scope="module")
def local_worker(tmp_path_factory, local_root) -> Iterator[Worker]:
    w = start_mount_worker(
        tmp_path_factory.mktemp("conformance-local"), "local", f"file://{local_root}", {}
    )
    yield w
    w.stop()


@pytest.fixture(scope="module")
def s3_worker(tmp_path_factory, s3_server) -> Iterator[Worker]:
    w = start_mount_worker(
        tmp_path_factory.mktemp("conformance-s3"),
        "s3",
        f"s3://{s3_server.bucket}",
        s3_server.worker_env(),
    )
    yield w
    w.stop()


class LocalFixtures(abstract.AbstractFixtures):
    """alluxiofs over a ``file://`` directory, through one worker."""

    @pytest.fixture
    def fs(self, local_worker):
        return fsspec.filesystem(
            "alluxiofs",
            worker_hosts=local_worker.addr,
            target_protocol="file",
            fallback=False,
            skip_instance_cache=True,
        )

    @pytest.fixture
    def fs_path(self, local_root) -> str:
        # A fresh directory per test: the suite creates `source` and `target` in it.
        path = os.path.join(local_root, f"case{next(_counter)}")
        os.makedirs(path)
        return path


class S3Fixtures(abstract.AbstractFixtures):
    """alluxiofs over S3, through one worker (names carry no protocol, as in s3fs)."""

    @pytest.fixture
    def fs(self, s3_worker, s3_server):
        return fsspec.filesystem(
            "alluxiofs",
            worker_hosts=s3_worker.addr,
            target_protocol="s3",
            target_options=s3_server.target_options(),
            fallback=False,
            skip_instance_cache=True,
        )

    @pytest.fixture
    def fs_join(self):
        return lambda *args: "/".join(args)

    @pytest.fixture
    def fs_path(self, s3_server) -> str:
        return f"{s3_server.bucket}/conformance/case{next(_counter)}"

    @pytest.fixture
    def supports_empty_directories(self):
        # S3 has no directories: an empty "directory" does not exist (as in s3fs).
        return False


class TestLocalCopy(abstract.AbstractCopyTests, LocalFixtures):
    pass


class TestLocalGet(abstract.AbstractGetTests, LocalFixtures):
    pass


class TestLocalPut(abstract.AbstractPutTests, LocalFixtures):
    pass


class TestLocalOpen(abstract.AbstractOpenTests, LocalFixtures):
    pass


class TestLocalPipe(abstract.AbstractPipeTests, LocalFixtures):
    pass


class TestS3Copy(abstract.AbstractCopyTests, S3Fixtures):
    pass


class TestS3Get(abstract.AbstractGetTests, S3Fixtures):
    pass


class TestS3Put(abstract.AbstractPutTests, S3Fixtures):
    pass


class TestS3Open(abstract.AbstractOpenTests, S3Fixtures):
    pass


class TestS3Pipe(abstract.AbstractPipeTests, S3Fixtures):
    pass
