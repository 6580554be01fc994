"""A worker dying mid-workload: reads stay correct, the fallback is counted."""

from __future__ import annotations

import random
import threading

from harness import Worker


def _busiest(workers: list[Worker]) -> Worker:
    """The worker that made the most UFS GETs: it owns the most of what was read."""
    return max(workers, key=lambda w: w.metric("alluxiofs_ufs_requests_total", op="get"))


def test_worker_sigkilled_during_read_loop(make_fs, start_worker, bucket_mount, dataset):
    """SIGKILL one of three workers halfway through a read loop.

    Every read before, during and after the kill returns the right bytes, and
    fs.stats()["fallbacks"] names the dead worker and only it.
    """
    workers = [start_worker(bucket_mount) for _ in range(3)]
    fs = make_fs(workers)
    items = sorted(dataset.small.items())
    rnd = random.Random(3)
    reads = 0
    victim = None
    for round_ in range(4):
        if round_ == 2:
            victim = _busiest(workers)
            victim.kill()
            assert not victim.alive
        for path, data in items:
            assert fs.cat_file(path) == data, (round_, path)
            reads += 1
        start = rnd.randrange(0, len(dataset.big) - 3_000_000)
        expected = dataset.big[start : start + 3_000_000]
        assert fs.cat_file(dataset.big_path, start, start + 3_000_000) == expected
    assert reads == 4 * len(items)
    assert victim is not None
    fallbacks = fs.stats()["fallbacks"]
    assert fallbacks.get(victim.addr, 0) > 0, fallbacks
    # The survivors kept serving.
    assert all(fallbacks.get(w.addr, 0) == 0 for w in workers if w is not victim), fallbacks


def test_worker_killed_while_threads_read(make_fs, start_worker, bucket_mount, dataset):
    """Concurrent readers of one file: its worker killed under them causes no wrong byte."""
    workers = [start_worker(bucket_mount) for _ in range(2)]
    fs = make_fs(workers)
    assert fs.cat_file(dataset.big_path, 0, 10) == dataset.big[:10]
    owner = _busiest(workers)  # the big file is one URL: one worker owns it
    errors: list[BaseException] = []
    started = threading.Barrier(5)

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            started.wait(30)
            for _ in range(30):
                s = rnd.randrange(0, len(dataset.big) - 1_500_000)
                got = fs.cat_file(dataset.big_path, s, s + 1_500_000)
                assert got == dataset.big[s : s + 1_500_000], s
        except BaseException as e:  # collected and re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait(30)
    owner.kill()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert fs.stats()["fallbacks"].get(owner.addr, 0) > 0


def test_restarted_worker_serves_again(make_fs, start_worker, bucket_mount, dataset):
    """SIGTERM exits cleanly; after a restart (new port) a new client reads correctly."""
    w = start_worker(bucket_mount)
    path, data = max(dataset.small.items(), key=lambda kv: len(kv[1]))
    assert make_fs([w]).cat_file(path) == data
    assert w.stop() == 0  # SIGTERM is a graceful shutdown
    w.restart()
    assert w.alive
    assert make_fs([w]).cat_file(path) == data
