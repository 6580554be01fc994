"""alluxiofs: a distributed cache for ML data on object storage, used through fsspec.

>>> import fsspec
>>> fs = fsspec.filesystem("alluxiofs", worker_hosts="w1:28080,w2:28080", target_protocol="s3")
>>> fs.cat_file("s3://bucket/train/part-0.parquet", 0, 4)

With no ``worker_hosts``, a local cache worker is started on first use and
shared by the user's processes on this machine (see :mod:`alluxiofs.embedded`).
"""

from ._alluxiofs import (
    AlluxioError,
    HashRing,
    ObjectChangedError,
    UfsUnreachableError,
    WorkerTimeoutError,
    __version__,
    normalize_url,
    path_id,
    worker_identity,
)
from .core import AlluxioFileSystem
from .file import AlluxioFile

__all__ = [
    "AlluxioError",
    "AlluxioFile",
    "AlluxioFileSystem",
    "HashRing",
    "ObjectChangedError",
    "UfsUnreachableError",
    "WorkerTimeoutError",
    "__version__",
    "normalize_url",
    "path_id",
    "worker_identity",
]
