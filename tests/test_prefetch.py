"""Known-order prefetch (``fs.prefetch``): hits, the memory bound, a slow UFS,
errors, out-of-order reads, close while reads are in flight, and fork.

The slow UFS is the S3 server behind ``alluxiofs-delay-proxy`` (20 ms per round
trip), as the benchmarks use it; the proxy is built on first use
(``cargo build -p alluxiofs-delay-proxy``, into ``target/``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import random
import subprocess
import threading
import time
import traceback

import pytest
from alluxiofs.prefetch import worker_share
from harness import delay_proxy_bin, ufs_requests

RTT_MS = 20


# -- the slow UFS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_s3(s3_server, tmp_path_factory):
    """``alluxiofs-delay-proxy`` (RTT_MS per round trip) in front of the S3 server:
    the environment that points a worker's S3 client through it."""
    run_dir = tmp_path_factory.mktemp("proxy")
    ready = run_dir / "ready.json"
    target = s3_server.endpoint_url.rsplit("/", 1)[1]
    proc = subprocess.Popen(
        [str(delay_proxy_bin()), "--listen", "127.0.0.1:0", "--target", target,
         "--rtt-ms", str(RTT_MS), "--ready-file", str(ready)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        addr = None
        while addr is None:
            assert proc.poll() is None, "the delay proxy exited"
            assert time.monotonic() < deadline, "the delay proxy did not start"
            try:
                addr = json.loads(ready.read_text())["addr"]
            except (OSError, ValueError):
                time.sleep(0.02)
        url = f"http://{addr}"
        yield {"AWS_ENDPOINT": url, "AWS_ENDPOINT_URL": url}
    finally:
        proc.kill()
        proc.wait(10)


def _upload(s3_server, prefix: str, n: int, sizes=(1, 20_000), seed: int = 7) -> dict[str, bytes]:
    rnd = random.Random(seed)
    files = {
        f"{s3_server.bucket}/{prefix}/f{i:04d}.bin": rnd.randbytes(rnd.randint(*sizes))
        for i in range(n)
    }
    s3_server.s3fs().pipe(files)
    return files


@pytest.fixture(scope="module")
def small_files(s3_server) -> dict[str, bytes]:
    """200 small files (1 B to 20 kB), in name order."""
    return _upload(s3_server, "prefetch/small", 200)


def _order(files: dict[str, bytes]) -> list[str]:
    return sorted(files)


# -- reading in order -------------------------------------------------------------------


def test_in_order_all_hits(make_fs, start_worker, bucket_mount, small_files):
    """200 files read in the prefetch's order: right bytes, every one a hit."""
    fs = make_fs([start_worker(bucket_mount)])
    paths = _order(small_files)
    with fs.prefetch(paths, depth=8) as pf:
        for p in paths:
            assert fs.cat_file(p) == small_files[p]
        s = pf.stats()
    assert s["hits"] == len(paths) and s["misses"] == 0
    assert s["hit_bytes"] == sum(len(small_files[p]) for p in paths)
    assert s["files_prefetched"] == len(paths) and s["wasted_files"] == 0
    assert 1 <= s["max_held_files"] <= 8
    assert s["held_files"] == 0 and s["held_bytes"] == 0 and s["finished"]
    # The filesystem's counters keep the prefetch's totals after it is done.
    total = fs.stats()["prefetch"]
    assert total["hits"] == len(paths) and total["active"] == 0
    assert total["bytes_prefetched"] == s["hit_bytes"]
    # Consumed once: the next read is an ordinary read, same bytes.
    assert fs.cat_file(paths[0]) == small_files[paths[0]]
    assert fs.stats()["prefetch"]["hits"] == len(paths)


def test_iterate_and_open(make_fs, start_worker, bucket_mount, small_files):
    """Iterating yields (path, bytes) in order; open().read()/readinto() are served too."""
    fs = make_fs([start_worker(bucket_mount)])
    paths = _order(small_files)[:60]
    got = list(fs.prefetch(paths, depth=6))
    assert [p for p, _ in got] == paths
    assert all(d == small_files[p] for p, d in got)
    with fs.prefetch(paths, depth=6) as pf:
        for i, p in enumerate(paths):
            with fs.open(p, "rb") as f:
                assert f.size == len(small_files[p])
                if i % 2:
                    assert f.read() == small_files[p]
                else:
                    buf = bytearray(len(small_files[p]) + 5)
                    assert f.readinto(buf) == len(small_files[p])
                    assert bytes(buf[: len(small_files[p])]) == small_files[p]
        assert pf.stats()["hits"] == len(paths)
    assert fs.stats()["prefetch"]["hits"] == 2 * len(paths)


def test_memory_bound(make_fs, start_worker, bucket_mount, s3_server):
    """Never more than depth files nor max_bytes held; a file over max_bytes is read as usual."""
    files = _upload(s3_server, "prefetch/bound", 40, sizes=(90_000, 100_000), seed=3)
    paths = _order(files)
    big = f"{s3_server.bucket}/prefetch/bound/zz-big.bin"
    files[big] = os.urandom(400_000)
    s3_server.s3fs().pipe_file(big, files[big])
    paths.insert(20, big)
    fs = make_fs([start_worker(bucket_mount)])
    with fs.prefetch(paths, depth=4, max_bytes=250_000) as pf:
        for p in paths:
            time.sleep(0.005)  # a slow consumer: the window fills up to its bounds
            assert fs.cat_file(p) == files[p]
            s = pf.stats()
            assert s["held_bytes"] <= 250_000 and s["held_files"] <= 4
            assert s["window_files"] <= 4
        s = pf.stats()
    assert s["max_held_bytes"] <= 250_000
    assert s["max_held_files"] == 2  # two 100 kB files fit in 250 kB, three do not
    assert s["skipped"] == 1 and s["hits"] == len(paths) - 1
    with fs.prefetch(paths[:8], depth=3) as pf:
        for p in paths[:8]:
            time.sleep(0.005)
            assert fs.cat_file(p) == files[p]
        assert pf.stats()["max_held_files"] == 3


# -- the slow UFS -----------------------------------------------------------------------


def test_cold_epoch_faster_with_prefetch(make_fs, start_worker, bucket_mount, s3_server,
                                         slow_s3):  # fmt: skip
    """A cold epoch over a UFS 20 ms away: prefetching (depth 16) is far faster than not."""
    files = _upload(s3_server, "prefetch/cold", 60, sizes=(10_000, 40_000), seed=11)
    paths = _order(files)
    # Each run on a worker of its own, cache empty, reading S3 through the proxy.
    fs_plain = make_fs([start_worker(bucket_mount, env=slow_s3)])
    t0 = time.perf_counter()
    for p in paths:
        assert fs_plain.cat_file(p) == files[p]
    plain = time.perf_counter() - t0

    fs = make_fs([start_worker(bucket_mount, env=slow_s3)])
    t0 = time.perf_counter()
    with fs.prefetch(paths, depth=16) as pf:
        for p in paths:
            assert fs.cat_file(p) == files[p]
    prefetched = time.perf_counter() - t0
    assert pf.stats()["hits"] == len(paths)
    # At least 1 round trip (the GET) per cold file: >= 1.2 s in order.
    assert plain >= len(paths) * RTT_MS / 1000
    assert plain / prefetched >= 2, (plain, prefetched)


def test_close_mid_flight(make_fs, start_worker, bucket_mount, s3_server, slow_s3):
    """close() with reads in flight returns at once, frees everything, wakes a waiting reader."""
    files = _upload(s3_server, "prefetch/close", 40, sizes=(5_000, 10_000), seed=5)
    paths = _order(files)
    fs = make_fs([start_worker(bucket_mount, env=slow_s3)])
    pf = fs.prefetch(paths, depth=16)
    got: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: got.update(x=fs.cat_file(paths[0])))
    reader.start()  # waits for the first file's read
    time.sleep(0.01)
    t0 = time.perf_counter()
    pf.close()
    assert time.perf_counter() - t0 < 0.5
    reader.join(30)
    assert not reader.is_alive() and got["x"] == files[paths[0]]
    pf.close(wait=True)  # the reads sent before close have returned and were dropped
    s = pf.stats()
    assert s["held_files"] == 0 and s["held_bytes"] == 0 and s["window_files"] == 0
    assert s["finished"] and s["hits"] == 0
    assert s["files_prefetched"] < len(paths)  # close stopped the rest
    assert fs.stats()["prefetch"]["active"] == 0
    # The filesystem reads as usual after it; the prefetch gives nothing more.
    assert fs.cat_file(paths[1]) == files[paths[1]]
    assert list(pf) == [(p, files[p]) for p in paths]  # plain reads, in order
    assert pf.stats()["hits"] == 0


def test_cold_epoch_one_ufs_request_per_file(make_fs, start_worker, bucket_mount, s3_server):
    """A cold prefetched epoch of N small files costs the UFS exactly N requests: N GETs and
    no HEAD (no ``info`` first: the first read brings the file whole, the worker takes the
    version and size from its GET). open() of a prefetched file has its details all the same."""
    files = _upload(s3_server, "prefetch/count", 40, sizes=(1, 60_000), seed=13)
    paths = _order(files)
    workers = [start_worker(bucket_mount)]
    fs = make_fs(workers)
    assert ufs_requests(workers) == 0
    with fs.prefetch(paths, depth=8) as pf:
        for p in paths:
            with fs.open(p, "rb") as f:
                assert f.size == len(files[p]) and f.read() == files[p]
                d = f.details
                assert d["type"] == "file" and d["size"] == len(files[p])
                assert d["name"] == fs._strip_protocol(p)
        s = pf.stats()
    assert s["hits"] == len(paths) and s["sized_files"] == 0
    assert ufs_requests(workers, "head") == 0
    assert ufs_requests(workers, "get") == len(paths)
    assert ufs_requests(workers) == len(paths)
    # A file bigger than the first read (sizes seen so far < 60 kB): sized with `info` (the
    # worker has its metadata from the GET: no UFS request), then read whole.
    big = f"{s3_server.bucket}/prefetch/count/zz-big.bin"
    files[big] = os.urandom(600_000)
    s3_server.s3fs().pipe_file(big, files[big])
    with fs.prefetch([*paths[:10], big], depth=4) as pf:
        for p in [*paths[:10], big]:
            assert fs.cat_file(p) == files[p]
        s = pf.stats()
    assert s["hits"] == 11 and s["sized_files"] == 1
    assert ufs_requests(workers, "head") == 0


# -- errors, out of order ---------------------------------------------------------------


def test_error_file_raises_when_consumed(make_fs, start_worker, bucket_mount, small_files,
                                         s3_server):  # fmt: skip
    """A missing file and a file deleted after its size was known: each raises at its turn,
    as cat_file does; the files around them read fine."""
    fs = make_fs([start_worker(bucket_mount)])
    paths = _order(small_files)[:30]
    missing = f"{s3_server.bucket}/prefetch/nope/missing.bin"
    gone = f"{s3_server.bucket}/prefetch/gone.bin"
    s3_server.s3fs().pipe_file(gone, b"x" * 5000)
    assert fs.info(gone)["size"] == 5000  # the worker caches its metadata
    s3_server.s3fs().rm_file(gone)
    order = [*paths[:10], missing, *paths[10:20], gone, *paths[20:]]
    with fs.prefetch(order, depth=8) as pf:
        for p in order:
            if p == missing:
                with pytest.raises(FileNotFoundError) as err:
                    fs.cat_file(p)
                with pytest.raises(FileNotFoundError) as direct:
                    fs.cat_file(p)
                assert err.value.errno == direct.value.errno
            elif p == gone:
                with pytest.raises(OSError) as err:
                    fs.cat_file(p)
                prefetched_error = err.value
            else:
                assert fs.cat_file(p) == small_files[p]
        s = pf.stats()
    assert s["hits"] == len(paths)
    assert s["skipped"] + s["errors"] == 2
    with pytest.raises(OSError) as direct:
        fs.cat_file(gone)
    assert type(prefetched_error) is type(direct.value)
    # Iteration raises the error at its file and goes on.
    it = iter(fs.prefetch([paths[0], missing, paths[1]], depth=2))
    assert next(it) == (paths[0], small_files[paths[0]])
    with pytest.raises(FileNotFoundError):
        next(it)
    assert next(it) == (paths[1], small_files[paths[1]])
    with pytest.raises(StopIteration):
        next(it)


def test_out_of_order_and_skipped(make_fs, start_worker, bucket_mount, small_files):
    """Reads out of order within depth are hits; skipped files do not wedge the window."""
    fs = make_fs([start_worker(bucket_mount)])
    paths = _order(small_files)[:80]
    # Pairs swapped: each read is within 2 of the order.
    swapped = [paths[i ^ 1] for i in range(len(paths))]
    with fs.prefetch(paths, depth=4) as pf:
        for p in swapped:
            assert fs.cat_file(p) == small_files[p]
        assert pf.stats()["hits"] == len(paths)
    # Two of every three files never read: the window moves on, what was read is wasted.
    with fs.prefetch(paths, depth=4) as pf:
        for p in paths[::3]:
            assert fs.cat_file(p) == small_files[p]
            assert pf.stats()["window_files"] <= 4
        s = pf.stats()
    assert s["hits"] + s["misses"] == len(paths[::3]) and s["hits"] >= len(paths[::3]) // 2
    assert s["wasted_files"] > 0
    # Jumping far ahead: the file is read (a miss at worst), the rest is dropped.
    with fs.prefetch(paths, depth=4) as pf:
        assert fs.cat_file(paths[-1]) == small_files[paths[-1]]
        assert fs.cat_file(paths[-2]) == small_files[paths[-2]]  # within depth: still wanted
        s = pf.stats()
        assert s["held_files"] <= 4 and s["window_files"] <= 4
    # Never consumed at all, then closed: nothing held.
    pf = fs.prefetch(paths, depth=4)
    time.sleep(0.2)
    pf.close(wait=True)
    s = pf.stats()
    assert s["held_files"] == 0 and s["wasted_files"] == s["files_prefetched"] <= 4


def test_bad_arguments_and_pickle(make_fs, start_worker, bucket_mount, small_files):
    fs = make_fs([start_worker(bucket_mount)])
    paths = _order(small_files)[:3]
    with pytest.raises(TypeError):
        fs.prefetch(paths[0])
    with pytest.raises(ValueError):
        fs.prefetch(paths, depth=0)
    with fs.prefetch(paths, max_bytes="1MiB") as pf:
        assert pf.max_bytes == 1 << 20
        with pytest.raises(TypeError):
            pickle.dumps(pf)
        fs2 = pickle.loads(pickle.dumps(fs))  # the filesystem still pickles
        assert fs2.cat_file(paths[0]) == small_files[paths[0]]


# -- fork -------------------------------------------------------------------------------


def _child(fs, parent_pf, paths, share, files, queue) -> None:
    try:
        # The parent's prefetch is not ours: plain reads, and its object refuses use.
        assert fs.cat_file(paths[0]) == files[paths[0]]
        assert fs.stats()["prefetch"]["hits"] == 0
        try:
            next(iter(parent_pf))
            raise AssertionError("the parent's prefetch was usable in the child")
        except RuntimeError:
            pass
        with fs.prefetch(share, depth=4) as pf:
            for p in share:
                assert fs.cat_file(p) == files[p]
            hits = pf.stats()["hits"]
        queue.put(("ok", hits))
    except BaseException:
        queue.put(("error", traceback.format_exc()))


def test_fork_with_prefetch_in_flight(make_fs, start_worker, bucket_mount, s3_server, slow_s3):
    """Children forked while the parent's prefetch has reads in flight: no deadlock, each
    child reads right and prefetches its own share; the parent's prefetch goes on."""
    files = _upload(s3_server, "prefetch/fork", 48, sizes=(1_000, 8_000), seed=9)
    paths = _order(files)
    fs = make_fs([start_worker(bucket_mount, env=slow_s3)])
    pf = fs.prefetch(paths, depth=16)
    time.sleep(0.03)  # reads in flight, pool threads inside the native client
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    shares = [worker_share(paths, 4, 2, w) for w in range(2)]
    procs = [
        ctx.Process(target=_child, args=(fs, pf, paths, share, files, queue)) for share in shares
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    for (status, detail), share in zip(sorted(results), shares, strict=True):
        assert status == "ok", detail
        assert detail == len(share)
    for p in paths:
        assert fs.cat_file(p) == files[p]
    assert pf.stats()["hits"] == len(paths)
    pf.close()


def test_worker_share():
    """Round robin by batch, as a map-style DataLoader hands batches to its workers."""
    order = list(range(23))
    shares = [worker_share(order, 4, 3, w) for w in range(3)]
    assert shares[0] == [0, 1, 2, 3, 12, 13, 14, 15]
    assert shares[1] == [4, 5, 6, 7, 16, 17, 18, 19]
    assert shares[2] == [8, 9, 10, 11, 20, 21, 22]
    assert sorted(i for share in shares for i in share) == order
    assert worker_share(order, 4, 0, 0) == order
