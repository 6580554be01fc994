"""Read-side fsspec conventions, checked against the target filesystem itself.

fsspec's abstract suite (tests/test_fsspec_conformance.py) covers copy, get,
put, open and pipe. Users also rely on how ``ls``, ``info``, ``find``,
``glob``, ``walk``, ``du``, ``exists`` and ``isdir`` treat trailing slashes,
``detail``, ``maxdepth`` and ``withdirs``, on S3 directory markers, and on the
exception each read entry point raises. Each case here runs the same call on
alluxiofs and on the target filesystem (LocalFileSystem, s3fs) over the same
tree, and wants the same answer or the same exception type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from harness import start_mount_worker

# The tree both filesystems see (paths relative to the case's root).
FILES = {
    "top.bin": b"t" * 10,
    "a/one.bin": b"1" * 100,
    "a/two.txt": b"two\n" * 3,
    "a/deep/three.bin": b"3" * 3000,
    "b/c/four.bin": b"",
    "b/c/d/five.bin": b"5" * 5,
    "same": b"file with a directory's prefix",
    "same.d/six.bin": b"6",
}


class Pair:
    """alluxiofs and the target filesystem over one tree, and how to compare them."""

    def __init__(self, alluxio: Any, target: Any, root: str, outside: str) -> None:
        self.alluxio = alluxio
        self.target = target
        self.root = root  # name of the tree's root, as both filesystems spell it
        self.outside = outside  # a path outside the worker's mounts

    def p(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def both(self, call: Callable[[Any], Any]) -> tuple[Any, Any]:
        """``call`` on each filesystem: the result or the exception type."""
        out = []
        for fs in (self.alluxio, self.target):
            try:
                out.append(("ok", _canonical(call(fs))))
            except Exception as e:
                out.append(("raised", type(e)))
        return out[0], out[1]


def _canonical(value: Any) -> Any:
    """Results in a comparable form: dicts of entries keep name, size and type."""
    if isinstance(value, dict):
        if all(isinstance(v, dict) for v in value.values()):
            return {k: _entry(v) for k, v in value.items()}
        return value
    if isinstance(value, list):
        return [_entry(v) if isinstance(v, dict) else v for v in value]
    if isinstance(value, tuple):
        return tuple(_canonical(v) for v in value)
    return value


def _entry(d: dict[str, Any]) -> tuple[str, int, str]:
    # A directory's size is the target's business (LocalFileSystem: st_size): not compared.
    size = int(d.get("size") or 0) if d["type"] == "file" else 0
    return (d["name"].rstrip("/"), size, d["type"])


@pytest.fixture(scope="module")
def local_pair(tmp_path_factory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("conventions-ufs")
    for rel, data in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty-dir").mkdir()
    run_dir = tmp_path_factory.mktemp("conventions-local")
    w = start_mount_worker(run_dir, "local", f"file://{root}", {})
    fs = fsspec.filesystem(
        "alluxiofs", worker_hosts=w.addr, target_protocol="file", fallback=False,
        skip_instance_cache=True,
    )  # fmt: skip
    outside = str(tmp_path_factory.mktemp("outside-the-mount"))
    (Path(outside) / "x.bin").write_bytes(b"x")
    try:
        yield Pair(fs, LocalFileSystem(), str(root), f"{outside}/x.bin")
    finally:
        w.stop()


@pytest.fixture(scope="module")
def s3_tree(s3_server) -> dict[str, str]:
    """The tree in the bucket, directory markers beside it, and a path outside the mount."""
    s3 = s3_server.s3fs()
    mount = f"{s3_server.bucket}/conventions/in"
    root, markers = f"{mount}/tree", f"{mount}/markers"
    s3.pipe({f"{root}/{rel}": data for rel, data in FILES.items()})
    # Directory markers, as the S3 console and Hadoop's S3A write them: an
    # empty object whose key ends in "/", alone and beside real files.
    s3.pipe({f"{markers}/only/": b"", f"{markers}/with-files/": b"",
             f"{markers}/with-files/f.bin": b"12345"})  # fmt: skip
    outside = f"{s3_server.bucket}/conventions/outside.bin"
    s3.pipe_file(outside, b"x")
    s3.invalidate_cache()
    return {"mount": mount, "root": root, "markers": markers, "outside": outside}


@pytest.fixture(scope="module")
def s3_pair(tmp_path_factory, s3_server, s3_tree) -> Iterator[Pair]:
    w = start_mount_worker(
        tmp_path_factory.mktemp("conventions-s3"), "s3", f"s3://{s3_tree['mount']}",
        s3_server.worker_env(),
    )  # fmt: skip
    fs = fsspec.filesystem(
        "alluxiofs", worker_hosts=w.addr, target_protocol="s3",
        target_options=s3_server.target_options(), fallback=False, skip_instance_cache=True,
    )  # fmt: skip
    try:
        yield Pair(fs, s3_server.s3fs(), s3_tree["root"], s3_tree["outside"])
    finally:
        w.stop()


def test_s3_directory_markers(s3_pair, s3_tree):
    """A marker ("dir/") is never listed as an entry; a directory with only a marker is an
    empty directory. (s3fs lists a marker as a zero-byte file named like its directory.)"""
    fs, m = s3_pair.alluxio, s3_tree["markers"]
    assert fs.ls(m, detail=False) == [f"{m}/only", f"{m}/with-files"]
    assert [e["type"] for e in fs.ls(m)] == ["directory", "directory"]
    assert fs.ls(f"{m}/only") == [] and fs.ls(f"{m}/only/") == []
    assert fs.info(f"{m}/only")["type"] == "directory"
    assert fs.isdir(f"{m}/only/") and fs.exists(f"{m}/only") and not fs.isfile(f"{m}/only")
    assert fs.ls(f"{m}/with-files/", detail=False) == [f"{m}/with-files/f.bin"]
    assert fs.find(m) == [f"{m}/with-files/f.bin"]
    # (with withdirs, fsspec's find lists the directory searched too)
    assert fs.find(m, withdirs=True) == [m, f"{m}/only", f"{m}/with-files", f"{m}/with-files/f.bin"]
    assert fs.du(m) == 5
    assert fs.glob(f"{m}/*") == [f"{m}/only", f"{m}/with-files"]
    with pytest.raises(IsADirectoryError):
        fs.cat_file(f"{m}/only/")
    with pytest.raises(IsADirectoryError):
        fs.open(f"{m}/with-files").read()


@pytest.fixture(params=["local", "s3"])
def pair(request) -> Pair:
    pair = request.getfixturevalue(f"{request.param}_pair")
    pair.target.invalidate_cache()
    return pair


# Paths each listing call is tried on: with and without a trailing slash.
LISTED = ["", "a", "a/", "b", "b/c/", "a/one.bin", "same", "same.d/", "missing", "missing/"]


@pytest.mark.parametrize("rel", LISTED)
@pytest.mark.parametrize("detail", [False, True])
def test_ls(pair, rel, detail):
    got, want = pair.both(lambda fs: sorted(fs.ls(pair.p(rel), detail=detail),
                                            key=lambda e: e["name"] if detail else e))  # fmt: skip
    assert got == want


@pytest.mark.parametrize("rel", LISTED)
def test_info_exists_isdir_isfile(pair, rel):
    for call in (
        lambda fs: _entry(fs.info(pair.p(rel))),
        lambda fs: fs.exists(pair.p(rel)),
        lambda fs: fs.isdir(pair.p(rel)),
        lambda fs: fs.isfile(pair.p(rel)),
    ):
        got, want = pair.both(call)
        assert got == want


@pytest.mark.parametrize("rel", ["", "a/", "b", "a/one.bin", "missing"])
@pytest.mark.parametrize("maxdepth", [None, 1, 2])
@pytest.mark.parametrize("withdirs", [False, True])
@pytest.mark.parametrize("detail", [False, True])
def test_find(pair, rel, maxdepth, withdirs, detail):
    got, want = pair.both(
        lambda fs: fs.find(pair.p(rel), maxdepth=maxdepth, withdirs=withdirs, detail=detail)
    )
    assert got == want


@pytest.mark.parametrize(
    "pattern",
    [
        "*",
        "*/",
        "a/*",
        "a/*.bin",
        "**/*.bin",
        "**",
        "*/c/*",
        "b/**/five.bin",
        "same*",
        "a/[ot]*",
        "nothing*",
    ],
)
def test_glob(pair, pattern):
    got, want = pair.both(lambda fs: fs.glob(pair.p(pattern)))
    assert got == want
    got, want = pair.both(lambda fs: fs.glob(pair.p(pattern), maxdepth=1))
    assert got == want


@pytest.mark.parametrize("rel", ["", "a/", "b"])
@pytest.mark.parametrize("maxdepth", [None, 1])
@pytest.mark.parametrize("detail", [False, True])
def test_walk(pair, rel, maxdepth, detail):
    def walk(fs):
        out = []
        for root, dirs, files in fs.walk(pair.p(rel), maxdepth=maxdepth, detail=detail):
            if detail:
                dirs, files = sorted(dirs), sorted(files)
            out.append((root.rstrip("/"), sorted(dirs), sorted(files)))
        return sorted(out)

    got, want = pair.both(walk)
    assert got == want


@pytest.mark.parametrize("rel", ["", "a", "b/", "a/one.bin", "missing"])
def test_du(pair, rel):
    for total in (True, False):
        got, want = pair.both(lambda fs, total=total: fs.du(pair.p(rel), total=total))
        assert got == want
    got, want = pair.both(lambda fs: fs.du(pair.p(rel), maxdepth=1))
    assert got == want


# Every read entry point (keyword offsets: s3fs's second positional argument is
# version_id): what it raises for a directory, a missing file and a path
# through a file.
READS: dict[str, Callable[[Any, str], Any]] = {
    "cat_file": lambda fs, p: fs.cat_file(p),
    "cat_file range": lambda fs, p: fs.cat_file(p, start=0, end=5),
    "cat_file negative": lambda fs, p: fs.cat_file(p, start=-5),
    "cat_file open end": lambda fs, p: fs.cat_file(p, start=2, end=None),
    "cat": lambda fs, p: fs.cat(p),
    "cat_ranges": lambda fs, p: fs.cat_ranges([p], [0], [5], on_error="raise"),
    "open read": lambda fs, p: fs.open(p, "rb").read(),
    "open text": lambda fs, p: fs.open(p, "r").read(),
    "head": lambda fs, p: fs.head(p, 3),
    "tail": lambda fs, p: fs.tail(p, 3),
    "read_block": lambda fs, p: fs.read_block(p, 0, 4),
    "read_text": lambda fs, p: fs.read_text(p),
    "size": lambda fs, p: fs.size(p),
    "info": lambda fs, p: _entry(fs.info(p)),
    "ukey": lambda fs, p: bool(fs.ukey(p)),
}
# Entry points that describe a path rather than read its bytes: a directory has
# an answer (size 0).
METADATA = {"size", "info", "ukey"}

BAD_PATHS = {
    "directory": "a",
    "directory with slash": "a/",
    "missing": "missing.bin",
    "missing in missing dir": "missing/x.bin",
    "file as a directory": "a/one.bin/x",
}
# The same on every target. s3fs says FileNotFoundError for a prefix (and
# reads a directory marker "a/" as an empty file); LocalFileSystem says
# NotADirectoryError for a path through a file: see docs/semantics.md.
RAISES = {
    "directory": IsADirectoryError,
    "directory with slash": IsADirectoryError,
    "missing": FileNotFoundError,
    "missing in missing dir": FileNotFoundError,
    "file as a directory": FileNotFoundError,
}


@pytest.mark.parametrize("entry", sorted(READS))
@pytest.mark.parametrize("what", sorted(BAD_PATHS))
def test_read_errors(pair, entry, what):
    path = pair.p(BAD_PATHS[what])
    if entry in METADATA and RAISES[what] is IsADirectoryError:
        got = READS[entry](pair.alluxio, path)
        want = {"size": 0, "info": (pair.p("a"), 0, "directory"), "ukey": True}[entry]
        assert got == want
        return
    with pytest.raises(RAISES[what]) as raised:
        READS[entry](pair.alluxio, path)
    assert raised.value.errno is not None
    assert raised.value.filename, "the error names the path it is about"
    assert pair.p(BAD_PATHS[what]).rstrip("/") in str(raised.value).replace("file://", "")
    # The next call on the same worker is served: an error about one path
    # never makes the client skip the worker.
    assert pair.alluxio.cat_file(pair.p("top.bin")) == FILES["top.bin"]


@pytest.mark.parametrize("entry", sorted(READS))
def test_reads_of_a_file_agree(pair, entry):
    got, want = pair.both(lambda fs: READS[entry](fs, pair.p("a/two.txt")))
    assert got[0] == "ok"
    assert got == want


def test_empty_file_reads(pair):
    """An empty file reads as b"" through every entry point, ranges too (s3fs raises
    OSError for a range of an empty object; LocalFileSystem gives b"")."""
    for entry in ("cat_file", "cat_file range", "cat_file negative", "open read", "head", "tail",
                  "cat_ranges"):  # fmt: skip
        got = READS[entry](pair.alluxio, pair.p("b/c/four.bin"))
        assert got in (b"", [b""])
        if isinstance(pair.target, LocalFileSystem):
            assert READS[entry](pair.target, pair.p("b/c/four.bin")) == got


@pytest.mark.parametrize("entry", sorted(READS))
def test_outside_the_mounts_is_permission_error(pair, entry):
    with pytest.raises(PermissionError):
        READS[entry](pair.alluxio, pair.outside)


def test_listing_outside_the_mounts_is_permission_error(pair):
    parent = pair.outside.rsplit("/", 1)[0]
    # (find and walk, as on every fsspec filesystem, skip what they cannot list.)
    for call in (pair.alluxio.ls, pair.alluxio.info):
        with pytest.raises(PermissionError):
            call(parent)
