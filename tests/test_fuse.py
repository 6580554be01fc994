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
import json
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
def mounted(
    worker, mp: Path, *urls: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Iterator[Mount]:
    mp.mkdir(parents=True, exist_ok=True)
    log = mp.parent / f"{mp.name}.mount.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _cli("--worker-hosts", worker.addr, "mount", str(mp), *urls, *args),
            stdout=out,
            stderr=out,
            env={**os.environ, **(env or {})},
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


def test_ls_l_of_a_100_000_entry_directory_is_one_listing(start_worker, tmp_path):
    ufs = tmp_path / "ufs"
    (ufs / "many").mkdir(parents=True)
    n = 100_000
    for i in range(n):
        with open(ufs / "many" / f"f{i:06d}", "wb") as f:
            f.write(b"x" * (i % 7))
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}") as m:
        ls = subprocess.run(["ls", "-l", str(mp / "many")], capture_output=True, text=True)
        assert ls.returncode == 0, ls.stderr
        assert len(ls.stdout.splitlines()) == n + 1  # "total" and one line per file
        sizes = sorted(os.stat(mp / "many" / f"f{i:06d}").st_size for i in range(0, n, 997))
        assert sizes == sorted(i % 7 for i in range(0, n, 997))
        m.stop()
    c = m.counters()
    assert c["listings"] == 1, c
    # The root and `many` itself; the entries came with the listing.
    assert c["lookups"] <= 2, c
    # Calls the mount does not serve (xattrs that `ls -l` asks for) are
    # answered without a log line each.
    assert "Not Implemented" not in m.log.read_text()


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


# -- --write ------------------------------------------------------------------------------


def _errno(fn) -> int:
    with pytest.raises(OSError) as e:
        fn()
    return e.value.errno


def test_a_checkpoint_written_through_one_mount_is_read_through_another(
    start_worker, ufs, tmp_path
):
    w = start_worker(f"file://{ufs}")
    wmp, rmp = tmp_path / "wmnt", tmp_path / "rmnt"
    state = os.urandom(5 * 1024 * 1024 + 123)
    with mounted(w, wmp, f"file://{ufs}", args=("--write",)) as wm:
        os.makedirs(wmp / "ckpt" / "step-100")
        tmp = wmp / "ckpt" / "step-100" / "model.pt.tmp"
        with open(tmp, "wb") as f:  # O_WRONLY|O_CREAT|O_TRUNC, written in order
            for i in range(0, len(state), 300_000):
                f.write(state[i : i + 300_000])
        os.rename(tmp, wmp / "ckpt" / "step-100" / "model.pt")
        (wmp / "ckpt" / "latest").write_text("step-100\n")
        # A truncating open of an existing file replaces it whole.
        (wmp / "ckpt" / "latest").write_text("step-100 (final)\n")
        assert (ufs / "ckpt" / "step-100" / "model.pt").read_bytes() == state
        assert not (ufs / "ckpt" / "step-100" / "model.pt.tmp").exists()
        assert (ufs / "ckpt" / "latest").read_text() == "step-100 (final)\n"
        assert sorted(os.listdir(wmp / "ckpt")) == ["latest", "step-100"]
        assert os.stat(wmp / "ckpt" / "step-100" / "model.pt").st_size == len(state)
        # An empty file (touch) is a file too.
        (wmp / "ckpt" / "DONE").touch()
        assert (ufs / "ckpt" / "DONE").read_bytes() == b""
        with mounted(w, rmp, f"file://{ufs}") as rm:
            assert (rmp / "ckpt" / "step-100" / "model.pt").read_bytes() == state
            assert (rmp / "ckpt" / "latest").read_text() == "step-100 (final)\n"
            rm.stop()
        wm.stop()
    c, r = wm.counters(), rm.counters()
    assert c["writes_done"] == 4 and c["write_errors"] == 0 and c["write_fallbacks"] == 0, c
    assert c["write_bytes"] == len(state) + len("step-100\n") + len("step-100 (final)\n"), c
    # The rename made the UFS object; the pages the worker kept for the
    # temporary name do not serve it, so the reader's bytes came through the
    # worker (which read the renamed object once), never from the UFS itself.
    assert r["ufs_bytes"] == 0 and r["read_errors"] == 0, r


def test_written_files_are_cached_by_the_worker(start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    data = os.urandom(3 * 1024 * 1024)
    with mounted(w, mp, f"file://{ufs}", args=("--write", "--no-kernel-cache")) as m:
        (mp / "w.bin").write_bytes(data)
        before = w.metric("alluxiofs_ufs_bytes_total")
        assert (mp / "w.bin").read_bytes() == data
        # The worker kept the pages it wrote: reading them fetched nothing.
        assert w.metric("alluxiofs_ufs_bytes_total") == before
        m.stop()
    c = m.counters()
    assert c["ufs_bytes"] == 0 and c["read_bytes"] == len(data), c


def test_what_the_mount_cannot_write_is_refused_and_nothing_partial_is_left(
    start_worker, ufs, tmp_path
):
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}", args=("--write",)) as m:
        # A write that is not at the end: refused, and the file never appears.
        f = open(mp / "random.bin", "wb", buffering=0)
        f.write(b"x" * 10000)
        f.seek(100)
        assert _errno(lambda: f.write(b"y" * 10)) == 95  # ENOTSUP
        assert _errno(f.close) == 95
        assert not (ufs / "random.bin").exists()
        # Appends and in-place writes of existing files, truncation to a size.
        assert _errno(lambda: open(mp / "a" / "s01.txt", "ab")) == 95
        assert _errno(lambda: open(mp / "a" / "s01.txt", "r+b")) == 95
        assert _errno(lambda: os.truncate(mp / "a" / "s01.txt", 3)) == 95
        assert _errno(lambda: os.chown(mp / "a" / "s01.txt", 12345, 12345)) == 1  # EPERM
        assert (ufs / "a" / "s01.txt").read_bytes() == b"small file 1\n" * 2
        # Modes and times are accepted (and not kept): cp -p works.
        os.chmod(mp / "a" / "s01.txt", 0o600)
        os.utime(mp / "a" / "s01.txt", (1, 1))
        # Directory calls with their POSIX errors.
        assert _errno(lambda: os.rmdir(mp / "a")) == 39  # ENOTEMPTY
        assert _errno(lambda: os.mkdir(mp / "a")) == 17  # EEXIST
        assert _errno(lambda: os.unlink(mp / "a")) == 21  # EISDIR
        assert _errno(lambda: os.unlink(mp / "nope")) == 2
        os.rmdir(mp / "empty-dir")
        assert not (ufs / "empty-dir").exists()
        os.unlink(mp / "a" / "s02.txt")
        assert not (ufs / "a" / "s02.txt").exists()
        assert not (mp / "a" / "s02.txt").exists()
        assert "s02.txt" not in os.listdir(mp / "a")
        # A directory rename on a local UFS is the disk's rename.
        os.rename(mp / "a" / "b", mp / "a" / "c")
        assert (ufs / "a" / "c" / "big.bin").exists() and not (ufs / "a" / "b").exists()
        assert _sha(mp / "a" / "c" / "big.bin") == _sha(ufs / "a" / "c" / "big.bin")
        # Names that would leave the mounted URL are not names here.
        assert _errno(lambda: open(mp / "%2e%2e" / "x", "wb")) == 2
        # A failed write does not break the next one.
        (mp / "after.txt").write_bytes(b"fine")
        assert (ufs / "after.txt").read_bytes() == b"fine"
        m.stop()
    c = m.counters()
    assert c["write_errors"] == 1 and c["writes_done"] == 1, c
    assert c["changes"] == 3, c  # rmdir, unlink, rename
    log = m.log.read_text()
    assert "nothing of this file is kept" in log and "truncate refused" in log


def test_writes_on_an_object_store_mount(start_worker, s3_server, tmp_path):
    prefix = f"s3://{s3_server.bucket}/fuse-write-{os.getpid()}-{time.monotonic_ns()}"
    s3 = s3_server.s3fs()
    s3.pipe(f"{prefix[5:]}/seed.txt", b"seed")
    w = start_worker(prefix)
    mp = tmp_path / "mnt"
    big = os.urandom(12 * 1024 * 1024 + 5)  # a multipart upload at the worker
    with mounted(w, mp, prefix, args=("--write",), env=s3_server.worker_env()) as m:
        # Object stores have no directories: one made here lives in the mount
        # until a file is written under it.
        os.mkdir(mp / "run1")
        assert os.path.isdir(mp / "run1") and "run1" in os.listdir(mp)
        (mp / "run1" / "weights.bin").write_bytes(big)
        os.rename(mp / "run1" / "weights.bin", mp / "run1" / "final.bin")
        assert s3.cat(f"{prefix[5:]}/run1/final.bin") == big
        assert not s3.exists(f"{prefix[5:]}/run1/weights.bin")
        assert _sha(mp / "run1" / "final.bin") == hashlib.sha256(big).hexdigest()
        # A directory rename on an object store is refused with EXDEV (`mv`
        # then copies and removes, as between disks).
        assert _errno(lambda: os.rename(mp / "run1", mp / "run2")) == 18
        mv = subprocess.run(["mv", str(mp / "run1"), str(mp / "run2")], capture_output=True)
        assert mv.returncode == 0, mv.stderr
        assert s3.cat(f"{prefix[5:]}/run2/final.bin") == big
        assert not s3.exists(f"{prefix[5:]}/run1/final.bin")
        os.mkdir(mp / "scratch")
        os.rmdir(mp / "scratch")
        assert "scratch" not in os.listdir(mp)
        os.unlink(mp / "seed.txt")
        assert not s3.exists(f"{prefix[5:]}/seed.txt")
        m.stop()
    c = m.counters()
    assert c["writes_done"] >= 2 and c["write_errors"] == 0, c


def test_a_write_with_no_worker_goes_to_the_ufs(start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}", args=("--write",)) as m:
        assert (mp / "a" / "s01.txt").read_bytes() == (ufs / "a" / "s01.txt").read_bytes()
        w.stop()
        (mp / "a" / "while-down.bin").write_bytes(b"z" * 70000)
        assert (ufs / "a" / "while-down.bin").read_bytes() == b"z" * 70000
        m.stop()
    c = m.counters()
    assert c["write_fallbacks"] == 1 and c["writes_done"] == 1, c


def test_cache_stats_shows_the_live_mounts(start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    home = tmp_path / "home"
    env = {"ALLUXIOFS_HOME": str(home)}
    with mounted(w, mp, f"file://{ufs}", args=("--write",), env=env):
        (mp / "n.txt").write_bytes(b"1234")
        assert (mp / "a" / "s01.txt").read_bytes()
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run(
                _cli("--worker-hosts", w.addr, "cache", "stats", "--json"),
                capture_output=True,
                text=True,
                env={**os.environ, **env},
            )
            assert out.returncode == 0, out.stderr
            mounts = json.loads(out.stdout)["mounts"]
            if mounts and mounts[0]["counters"]["writes_done"] == 1:
                break
            assert time.monotonic() < deadline, out.stdout
            time.sleep(0.2)
        assert mounts[0]["mountpoint"] == str(mp) and mounts[0]["write"] is True
        assert mounts[0]["counters"]["opens"] >= 1
        text = subprocess.run(
            _cli("--worker-hosts", w.addr, "cache", "stats"),
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        ).stdout
        assert f"mount {mp} (pid" in text and "1 files written" in text
        since = subprocess.run(
            _cli("--worker-hosts", w.addr, "cache", "stats", "--since", "1h", "--json"),
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        assert since.returncode == 0, since.stderr
        assert json.loads(since.stdout)["mounts"][0]["mountpoint"] == str(mp)
    out = subprocess.run(
        _cli("--worker-hosts", w.addr, "cache", "stats", "--json"),
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert json.loads(out.stdout)["mounts"] == [], "an ended mount is not listed"


def test_a_daemon_killed_mid_write_leaves_nothing_at_the_ufs(start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    mp = tmp_path / "mnt"
    with mounted(w, mp, f"file://{ufs}", args=("--write",)) as m:
        f = open(mp / "half.bin", "wb", buffering=0)
        f.write(os.urandom(3 * 1024 * 1024))
        m.proc.kill()
        m.proc.wait()
        with contextlib.suppress(OSError):
            f.close()  # ENOTCONN: the daemon is gone
        # The worker saw its request cut and kept nothing; no partial object.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert not [n for n in os.listdir(ufs) if n.startswith("half.bin")]
            time.sleep(0.2)
    with mounted(w, mp, f"file://{ufs}", args=("--write",)):
        assert "half.bin" not in os.listdir(mp)
        (mp / "half.bin").write_bytes(b"whole")
        assert (ufs / "half.bin").read_bytes() == b"whole"
