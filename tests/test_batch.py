"""``fs.cat([...])`` of many small files: one ``POST /v1/batch`` per owner worker.

Real workers over the test S3 server. Requests are counted where they are
answered (the workers' ``alluxiofs_requests_total`` by endpoint) and where
they are sent (the client's ``worker_requests``). A worker killed while its
batch of cold files is in flight (its UFS behind a delaying proxy) still
leaves every file's bytes to the caller. The per-file path for workers
without the route is tested in ``crates/core/tests/batch.rs`` (a worker
cannot be started without it); here it is the baseline of the timing.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest
from harness import TcpProxy, Worker

N_FILES = 1000
BIG = 2 * 1024 * 1024 + 12_345  # over max_chunk (1 MiB below): head in the batch, rest by range
MAX_CHUNK = 1 << 20

BATCH = "/v1/batch"
RANGE = "/v1/range/{path_id}"


@pytest.fixture(scope="module")
def small_files(s3_server) -> dict[str, bytes]:
    """1,000 files of 10 KiB (a few of other small sizes, one empty) and one of ``BIG``."""
    rnd = random.Random(77)
    prefix = f"{s3_server.bucket}/batch"
    files = {}
    for i in range(N_FILES):
        size = 10 * 1024 if i % 10 else rnd.choice([0, 1, 3000, 65_537])
        files[f"{prefix}/small/f{i:04d}.bin"] = rnd.randbytes(size)
    files[f"{prefix}/big.bin"] = rnd.randbytes(BIG)
    fs = s3_server.s3fs()
    fs.pipe(files)
    return files


def requests_at(workers: list[Worker], endpoint: str) -> list[float]:
    """Requests each worker answered on ``endpoint`` (any status)."""
    return [w.metric("alluxiofs_requests_total", endpoint=endpoint) for w in workers]


@pytest.mark.parametrize("n_workers", [1, 3])
def test_cat_of_many_files_is_one_request_per_owner(
    make_fs, start_worker, bucket_mount, small_files, n_workers
):
    workers = [start_worker(bucket_mount) for _ in range(n_workers)]
    # The HTTP batch (a worker on this node is otherwise read from its page files
    # once warm: tests/test_local_reads.py).
    fs = make_fs(workers, max_chunk=MAX_CHUNK, local_reads=False)
    paths = sorted(small_files)
    big = next(p for p in paths if p.endswith("big.bin"))
    missing = paths[0].rsplit("/", 1)[0] + "/missing.bin"
    asked = [*paths, missing]

    # The native client's own count (fs.stats() asks the workers for theirs).
    before = fs._client().stats()["worker_requests"]
    out = fs.cat(asked, on_error="return")
    sent = fs._client().stats()["worker_requests"] - before

    assert set(out) == set(asked)
    for p in paths:
        assert out[p] == small_files[p], p
    assert isinstance(out[missing], FileNotFoundError)
    owners = {fs.workers_for(p)[0] for p in asked}
    assert len(owners) == n_workers
    # One batch per worker; the big file's rest is the only range traffic.
    assert requests_at(workers, BATCH) == [1.0] * n_workers
    rest = -(-(BIG - MAX_CHUNK) // MAX_CHUNK)
    assert sum(requests_at(workers, RANGE)) == rest
    big_owner = [w.addr for w in workers].index(fs.workers_for(big)[0])
    assert requests_at(workers, RANGE)[big_owner] == rest
    assert sent == n_workers + rest

    # Warm, with the other on_error modes: the same one request per worker.
    omitted = fs.cat(asked, on_error="omit")
    assert missing not in omitted and len(omitted) == len(paths)
    assert all(omitted[p] == small_files[p] for p in paths[:50])
    with pytest.raises(FileNotFoundError):
        fs.cat(asked, on_error="raise")
    assert requests_at(workers, BATCH) == [3.0] * n_workers


# -- a worker killed mid-batch -------------------------------------------------------


@pytest.fixture
def slow_s3(s3_server) -> Iterator[str]:
    """The S3 endpoint behind a 20 ms-per-chunk proxy."""
    from urllib.parse import urlsplit

    u = urlsplit(s3_server.endpoint_url)
    proxy = TcpProxy(u.hostname, u.port, delay=0.02)
    yield f"http://127.0.0.1:{proxy.port}"
    proxy.close()


def test_a_worker_killed_mid_batch_still_gives_every_file(
    make_fs, start_worker, bucket_mount, small_files, slow_s3
):
    env = {"AWS_ENDPOINT": slow_s3, "AWS_ENDPOINT_URL": slow_s3}
    workers = [start_worker(bucket_mount, env=env) for _ in range(2)]
    fs = make_fs(workers, replicas=2, local_reads=False)
    paths = sorted(p for p in small_files if "/small/" in p)[:400]
    victim = workers[0]
    mine = [p for p in paths if fs.workers_for(p)[0] == victim.addr]
    assert len(mine) > 100

    result: dict = {}

    def cat() -> None:
        try:
            result["out"] = fs.cat(paths)
        except BaseException as e:  # handed to the test thread
            result["error"] = e

    reader = threading.Thread(target=cat)
    reader.start()
    # Kill the victim once its batch is reading from the (slow) UFS.
    deadline = time.monotonic() + 30
    while victim.metric("alluxiofs_ufs_requests_total") < 4:
        assert time.monotonic() < deadline, "the batch never reached the UFS"
        time.sleep(0.01)
    served_before_kill = victim.metric("alluxiofs_ufs_requests_total", op="get")
    victim.kill()
    reader.join(120)
    assert not reader.is_alive()
    assert "error" not in result, result.get("error")
    out = result["out"]
    assert set(out) == set(paths)
    for p in paths:
        assert out[p] == small_files[p], p
    survivor = workers[1]
    # The victim's unsent files came from the survivor, one request each.
    assert served_before_kill < len(mine)
    assert survivor.metric("alluxiofs_requests_total", endpoint=RANGE) > 0
    assert survivor.metric("alluxiofs_requests_total", endpoint=BATCH) == 1
    stats = fs.stats()
    assert stats["errors"].get(victim.addr, 0) >= 1, stats["errors"]


# -- batched vs per file -----------------------------------------------------------------


def test_warm_cat_batched_vs_per_file(make_fs, start_worker, bucket_mount, small_files, capsys):
    """A sanity ratio (debug build, shared CPUs): warm whole-file reads of 1,000 small
    files, batched vs the per-file path, in the same run on the same worker."""
    workers = [start_worker(bucket_mount)]
    fs = make_fs(workers, local_reads=False)
    paths = sorted(p for p in small_files if "/small/" in p)
    urls = [fs._resolve(p)[0] for p in paths]
    client = fs._client()
    expected = [small_files[p] for p in paths]
    assert client.read_files(urls, None) == expected  # warm the cache

    def once(batch: bool) -> float:
        t = time.perf_counter()
        got = client.read_files(urls, None, batch=batch)
        elapsed = time.perf_counter() - t
        assert got == expected
        return elapsed

    # Interleaved, best of five each: a stall of the shared machine during
    # one run then hurts both sides alike.
    r0 = requests_at(workers, RANGE)[0]
    b0 = requests_at(workers, BATCH)[0]
    runs = [(once(False), once(True)) for _ in range(5)]
    per_file = min(p for p, _ in runs)
    batched = min(b for _, b in runs)
    assert requests_at(workers, RANGE)[0] - r0 == 5 * len(urls)
    assert requests_at(workers, BATCH)[0] - b0 == 5
    t = time.perf_counter()
    assert fs.cat(paths) == dict(zip(paths, expected, strict=True))
    fs_cat = time.perf_counter() - t
    with capsys.disabled():
        print(
            f"\n[batch] warm {len(urls)} files: per-file {per_file * 1e3:.1f} ms, "
            f"batched {batched * 1e3:.1f} ms, ratio {per_file / batched:.2f}x; "
            f"fs.cat {fs_cat * 1e3:.1f} ms"
        )
    # Not a benchmark: only that batching is not a slowdown.
    assert batched < per_file * 1.5
