"""``alluxiofs mount``: real FUSE mounts over real workers (``/dev/fuse``, as root).

Each test starts a worker over a ``file://`` tree in its temporary directory
and mounts it with the ``alluxiofs`` command in a child process; the
``mounted`` helper always stops the daemon and clears the mount point, pass
or fail. What the tools and Python see through the mount is compared with
the UFS itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alluxiofs import _alluxiofs


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "alluxiofs", *args]


def _wait_state(mp: Path, want: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _alluxiofs.mount_state(str(mp)) != want:
        if time.monotonic() > deadline:
            raise AssertionError(f"{mp}: not {want} after {timeout} s")
        time.sleep(0.02)


class Mount:
    """A running ``alluxiofs mount`` child."""

    def __init__(self, proc: subprocess.Popen, mp: Path, log: Path):
        self.proc, self.mp, self.log = proc, mp, log

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Signal the daemon, wait for it, return its log."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        return self.log.read_text(errors="replace")

    def counters(self) -> dict[str, int]:
        """The counters the daemon printed when it ended."""
        m = re.search(r"ended \([^)]*\); (.*)", self.log.read_text())
        assert m, self.log.read_text()[-2000:]
        return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


@contextlib.contextmanager
def mounted(worker, mp: Path, *urls: str, args: tuple[str, ...] = ()) -> Iterator[Mount]:
    mp.mkdir(parents=True, exist_ok=True)
    log = mp.parent / f"{mp.name}.mount.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _cli("--worker-hosts", worker.addr, "mount", str(mp), *urls, *args),
            stdout=out,
            stderr=out,
        )
    m = Mount(proc, mp, log)
    try:
        deadline = time.monotonic() + 60
        while _alluxiofs.mount_state(str(mp)) != "mounted":
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mount failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
        yield m
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if _alluxiofs.mount_state(str(mp)) != "none":
            _alluxiofs.unmount(str(mp))


def _tree(root: Path) -> Path:
    """A small dataset: nested directories, small files, a 3 MiB file, odd names."""
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    for i in range(30):
        (root / "a" / f"s{i:02d}.txt").write_bytes(f"small file {i}\n".encode() * (i + 1))
    (root / "a" / "b" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "empty.txt").write_bytes(b"")
    (root / "odd name ü+&#?.txt").write_bytes(b"odd\n")
    (root / ("L" * 255)).write_bytes(b"long name\n")
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ufs(tmp_path: Path) -> Path:
    return _tree(tmp_path / "ufs")


def _rel_listing(root: Path) -> list[tuple[str, int | None]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out.append((os.path.relpath(os.path.join(dirpath, d), root) + "/", None))
        for f in filenames:
            p = os.path.join(dirpath, f)
            out.append((os.path.relpath(p, root), os.path.getsize(p)))
    return sorted(out)


def test_tools_see_the_ufs_tree(start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}"):
        assert _rel_listing(mp) == _rel_listing(ufs)
        find = subprocess.run(["find", str(mp)], capture_output=True, text=True, check=True)
        assert len(find.stdout.splitlines()) == len(_rel_listing(ufs)) + 1
        ls = subprocess.run(["ls", "-lR", str(mp)], capture_output=True, text=True, check=True)
        assert "big.bin" in ls.stdout and "odd name ü+&#?.txt" in ls.stdout
        cat = subprocess.run(["cat", str(mp / "a" / "s03.txt")], capture_output=True, check=True)
        assert cat.stdout == (ufs / "a" / "s03.txt").read_bytes()
        st = os.stat(mp / "a" / "b" / "big.bin")
        assert st.st_size == (ufs / "a" / "b" / "big.bin").stat().st_size
        assert int(st.st_mtime) == int((ufs / "a" / "b" / "big.bin").stat().st_mtime)
        sums = subprocess.run(
            ["sha256sum", str(mp / "a" / "b" / "big.bin"), str(ufs / "a" / "b" / "big.bin")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert sums[0] == sums[2]
        dst = tmp_path / "copy"
        subprocess.run(["cp", "-r", str(mp), str(dst)], check=True)
        for rel, size in _rel_listing(ufs):
            if size is not None:
                assert (dst / rel).read_bytes() == (ufs / rel).read_bytes(), rel
        assert (mp / ("L" * 255)).read_bytes() == b"long name\n"
        assert (mp / "empty.txt").read_bytes() == b""


def _read_in_child(args: tuple[str, str]) -> str:
    path, _ = args
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_python_file_api_mmap_scandir_parquet_and_forked_readers(start_worker, ufs, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"x": list(range(10_000)), "y": [f"v{i}" for i in range(10_000)]})
    pq.write_table(table, ufs / "t.parquet", row_group_size=2000)
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    big_ufs = (ufs / "a" / "b" / "big.bin").read_bytes()
    with mounted(w, mp, f"file://{ufs}"):
        big = mp / "a" / "b" / "big.bin"
        with open(big, "rb") as f:
            f.seek(1_000_000)
            assert f.read(5000) == big_ufs[1_000_000:1_005_000]
            f.seek(-10, os.SEEK_END)
            assert f.read() == big_ufs[-10:]
            buf = bytearray(4096)
            f.seek(123)
            assert f.readinto(buf) == 4096 and bytes(buf) == big_ufs[123 : 123 + 4096]
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            assert m[2_000_000:2_000_100] == big_ufs[2_000_000:2_000_100]
            assert len(m) == len(big_ufs)
            m.close()
        names = sorted(e.name for e in os.scandir(mp / "a"))
        assert names == sorted(os.listdir(ufs / "a"))
        assert all(e.is_file() for e in os.scandir(mp / "a") if e.name.endswith(".txt"))
        assert pq.read_table(str(mp / "t.parquet")).equals(table)
        paths = [str(mp / "a" / f"s{i:02d}.txt") for i in range(30)] * 4
        with multiprocessing.get_context("fork").Pool(4) as pool:
            got = pool.map(_read_in_child, [(p, "") for p in paths])
        want = [_sha(Path(p.replace(str(mp), str(ufs)))) for p in paths]
        assert got == want


def test_the_mount_is_read_only_and_confined(start_worker, ufs, tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}"):
        for attempt in (
            lambda: open(mp / "new.txt", "wb"),
            lambda: open(mp / "a" / "s01.txt", "r+b"),
            lambda: open(mp / "a" / "s01.txt", "ab"),
            lambda: os.mkdir(mp / "d"),
            lambda: os.unlink(mp / "empty.txt"),
            lambda: os.rename(mp / "empty.txt", mp / "e2.txt"),
        ):
            with pytest.raises(OSError) as e:
                attempt()
            assert e.value.errno == 30, e.value  # EROFS
        for bad in ("%2e%2e", "%2e%2e/outside.txt", "a/%2e%2e/%2e%2e/outside.txt", "nope"):
            with pytest.raises(FileNotFoundError):
                os.stat(mp / bad)
        # `..` is the kernel's: it leaves the mount for the real parent.
        assert os.path.realpath(mp / "..") == str(tmp_path)
        assert (ufs / "empty.txt").exists(), "nothing was changed at the UFS"


def test_ls_l_of_a_big_directory_is_one_listing(start_worker, tmp_path):
    ufs = tmp_path / "ufs"
    (ufs / "many").mkdir(parents=True)
    for i in range(3000):
        (ufs / "many" / f"f{i:05d}").write_bytes(b"x" * (i % 7))
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}") as m:
        ls = subprocess.run(["ls", "-l", str(mp / "many")], capture_output=True, text=True)
        assert ls.returncode == 0, ls.stderr
        assert len(ls.stdout.splitlines()) == 3001  # "total" and one line per file
        sizes = sorted(os.stat(mp / "many" / f"f{i:05d}").st_size for i in range(0, 3000, 97))
        assert sizes == sorted(i % 7 for i in range(0, 3000, 97))
        m.stop()
    c = m.counters()
    assert c["listings"] == 1, c
    # The root and `many` itself; the entries came with the listing.
    assert c["lookups"] <= 2, c


def test_kernel_cache_kept_while_the_version_holds(start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}", extra_args=["--metadata-ttl", "0s"])
    mp = tmp_path / "mnt"
    f = ufs / "a" / "s05.txt"
    with mounted(w, mp, f"file://{ufs}", args=("--attr-timeout", "0.3")) as m:
        first = (mp / "a" / "s05.txt").read_bytes()
        for _ in range(5):
            assert (mp / "a" / "s05.txt").read_bytes() == first
        # A new version at the UFS is seen once the attributes expire.
        f.write_bytes(b"a new version, longer than before\n" * 3)
        os.utime(f, (time.time() + 5, time.time() + 5))
        time.sleep(0.5)
        assert (mp / "a" / "s05.txt").read_bytes() == f.read_bytes()
        m.stop()
    c = m.counters()
    # Six opens of the first version: one read request, the rest kernel cache.
    assert c["opens"] == 7, c
    assert c["reads"] == 2, c


def test_a_worker_killed_mid_read_costs_the_reader_nothing(start_worker, tmp_path):
    ufs = tmp_path / "ufs"
    ufs.mkdir()
    data = os.urandom(64 * 1024 * 1024)
    (ufs / "big.bin").write_bytes(data)
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}", args=("--no-kernel-cache",)) as m:
        got = bytearray()
        started = threading.Event()

        def read() -> None:
            with open(mp / "big.bin", "rb", buffering=0) as f:
                while chunk := f.read(1 << 20):
                    got.extend(chunk)
                    started.set()

        t = threading.Thread(target=read)
        t.start()
        assert started.wait(30)
        w.kill()
        t.join(120)
        assert not t.is_alive()
        assert bytes(got) == data
        # And a second read, with no worker at all, is served by the UFS.
        assert (
            hashlib.sha256((mp / "big.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
        )
        m.stop()
    assert m.counters()["ufs_bytes"] > 0


def test_killed_daemon_is_recovered_by_mount_or_cleared_by_unmount(start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}") as m:
        assert (mp / "a" / "s01.txt").read_bytes() == (ufs / "a" / "s01.txt").read_bytes()
        m.stop(signal.SIGKILL)
        _wait_state(mp, "stale")
        with pytest.raises(OSError) as e:
            os.listdir(mp)
        assert e.value.errno == 107  # ENOTCONN: what a crash leaves
    # `mount` on the same path recovers it...
    with mounted(w, mp, f"file://{ufs}") as m:
        assert (mp / "a" / "s01.txt").read_bytes() == (ufs / "a" / "s01.txt").read_bytes()
        m.stop(signal.SIGKILL)
        _wait_state(mp, "stale")
        # ...and `unmount` clears it.
        r = subprocess.run(_cli("unmount", str(mp)), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert _alluxiofs.mount_state(str(mp)) == "none"
        assert os.listdir(mp) == []
    r = subprocess.run(_cli("unmount", str(mp)), capture_output=True, text=True)
    assert r.returncode == 1 and "nothing is mounted" in r.stderr


def test_sigterm_unmounts_with_files_open_and_daemon_mode(start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}") as m:
        f = open(mp / "a" / "s02.txt", "rb")
        try:
            assert m.stop(signal.SIGTERM)
            assert m.proc.returncode == 0
            assert _alluxiofs.mount_state(str(mp)) == "none"
            assert os.listdir(mp) == []
            # The daemon is gone: the open file fails, it does not hang.
            with pytest.raises(OSError):
                f.read()
        finally:
            with contextlib.suppress(OSError):  # its close fails the same way
                f.close()
        assert "ended (signal SIGTERM)" in m.log.read_text()
    log = tmp_path / "daemon.log"
    r = subprocess.run(
        _cli(
            "--worker-hosts",
            w.addr,
            "mount",
            "--daemon",
            "--log-file",
            str(log),
            str(mp),
            f"file://{ufs}",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert r.returncode == 0, r.stderr
        assert _alluxiofs.mount_state(str(mp)) == "mounted"
        assert (mp / "empty.txt").exists()
        r = subprocess.run(_cli("unmount", str(mp)), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 30
        while "ended (unmounted)" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        if _alluxiofs.mount_state(str(mp)) != "none":
            _alluxiofs.unmount(str(mp))


def test_several_urls_and_sixteen_processes_on_one_file(start_worker, ufs, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("other\n")
    w = start_worker([f"file://{ufs}", f"file://{other}"])
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"data=file://{ufs}", f"file://{other}"):
        assert sorted(os.listdir(mp)) == ["data", "other"]
        assert (mp / "other" / "x.txt").read_text() == "other\n"
        big = str(mp / "data" / "a" / "b" / "big.bin")
        with multiprocessing.get_context("fork").Pool(16) as pool:
            got = pool.map(_read_in_child, [(big, "")] * 16)
        assert set(got) == {_sha(ufs / "a" / "b" / "big.bin")}


def test_a_mount_of_a_missing_or_file_url_fails_clearly(start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    mp.mkdir()
    for url, msg in (
        (f"file://{ufs}/nope", "No such file"),
        (f"file://{ufs}/empty.txt", "is a file"),
        (f"file://{tmp_path}/outside", "ermission denied"),
    ):
        r = subprocess.run(
            _cli("--worker-hosts", w.addr, "mount", str(mp), url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 1 and msg in r.stderr, (url, r.stderr)
        assert _alluxiofs.mount_state(str(mp)) == "none"


def test_cached_data_is_served_when_the_ufs_is_gone(start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    want = {p: (ufs / p).read_bytes() for p in ("a/s01.txt", "a/b/big.bin")}
    with mounted(w, mp, f"file://{ufs}"):
        for p, b in want.items():
            assert (mp / p).read_bytes() == b
    shutil.move(str(ufs), str(tmp_path / "gone"))
    with mounted(w, mp, f"file://{ufs}", args=("--no-kernel-cache",)):
        for p, b in want.items():
            assert (mp / p).read_bytes() == b, p


def test_a_file_replaced_at_the_ufs_while_open_never_mixes_versions(start_worker, tmp_path):
    ufs = tmp_path / "ufs"
    ufs.mkdir()
    old = os.urandom(4 * 1024 * 1024)
    (ufs / "f.bin").write_bytes(old)
    w = start_worker(f"file://{ufs}", extra_args=["--metadata-ttl", "0s"])
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}", args=("--no-kernel-cache", "--attr-timeout", "0")):
        with open(mp / "f.bin", "rb", buffering=0) as f:
            assert f.read(1 << 20) == old[: 1 << 20]
            new = os.urandom(len(old))
            (ufs / "f.bin").write_bytes(new)
            os.utime(ufs / "f.bin", (time.time() + 5, time.time() + 5))
            try:
                rest = f.read()
            except OSError as e:
                assert e.errno == 116, e  # ESTALE
            else:
                assert rest == old[1 << 20 :], "bytes of the new version in an old open"
        # A new open reads the new version.
        assert (mp / "f.bin").read_bytes() == new
