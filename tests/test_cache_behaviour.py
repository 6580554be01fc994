"""Cache behaviour seen from outside: eviction under a small capacity, other page
sizes, several cache directories, many threads, property-based ranges."""

from __future__ import annotations

import random
import threading

from harness import ufs_requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st


def test_small_capacity_evicts_and_stays_correct(make_fs, start_worker, bucket_mount, dataset):
    """With 4 MiB of disk and no memory tier, reading 30 MiB evicts pages; bytes stay right."""
    args = ["--memory-capacity", "0"]
    workers = [start_worker(bucket_mount, capacity="4MiB", extra_args=args) for _ in range(2)]
    fs = make_fs(workers)
    for start in range(0, 30 << 20, 3 << 20):
        assert (
            fs.cat_file(dataset.big_path, start, start + (3 << 20))
            == (dataset.big[start : start + (3 << 20)])
        )
    evictions = sum(w.metric("alluxiofs_cache_evictions_total") for w in workers)
    assert evictions > 0
    for w in workers:
        assert w.metric("alluxiofs_cache_used_bytes") <= 4 << 20
    # Evicted pages are read again from the UFS, correctly.
    gets = ufs_requests(workers, "get")
    assert fs.cat_file(dataset.big_path, 0, 1 << 20) == dataset.big[: 1 << 20]
    assert ufs_requests(workers, "get") > gets


def test_other_page_size(make_fs, start_worker, bucket_mount, dataset):
    """Workers and client agreeing on 256 KiB pages read exactly, across page boundaries."""
    page = 256 * 1024
    args = ["--page-size", "256KiB"]
    workers = [start_worker(bucket_mount, extra_args=args) for _ in range(2)]
    fs = make_fs(workers, page_size=page)
    rnd = random.Random(5)
    for _ in range(20):
        s = rnd.randrange(0, len(dataset.big) - 2 * page)
        e = s + rnd.randrange(1, 3 * page)
        assert fs.cat_file(dataset.big_path, s, e) == dataset.big[s:e]
    for path, data in dataset.small.items():
        assert fs.cat_file(path) == data


def test_several_cache_dirs(make_fs, start_worker, bucket_mount, dataset, tmp_path):
    """A worker with two cache directories spreads pages over both and reads correctly."""
    dirs = [tmp_path / "d1", tmp_path / "d2"]
    for d in dirs:
        d.mkdir()
    w = start_worker(bucket_mount, cache_dir=dirs[0], extra_args=["--cache-dir", str(dirs[1])])
    fs = make_fs([w])
    assert fs.cat_file(dataset.big_path) == dataset.big

    # Count page data only: page files and segments (the first dir also holds
    # the worker identity file, each its index).
    def data_bytes(d) -> int:
        found = [f for sub in ("large", "segments") for f in (d / sub).rglob("*")]
        return sum(f.stat().st_size for f in found if f.is_file())

    used = [data_bytes(d) for d in dirs]
    assert all(u > 0 for u in used), used
    assert sum(used) >= len(dataset.big)


def test_many_threads_one_fs(make_fs, two_workers, dataset):
    """Eight threads share one filesystem; every read is exact."""
    fs = make_fs(two_workers)
    small = list(dataset.small.items())
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(25):
                if rnd.random() < 0.5:
                    path, data = rnd.choice(small)
                    assert fs.cat_file(path) == data, path
                else:
                    s = rnd.randrange(0, len(dataset.big))
                    e = s + rnd.randrange(1, 4 << 20)
                    assert fs.cat_file(dataset.big_path, s, e) == dataset.big[s:e], (s, e)
        except BaseException as e:  # re-raised below, in the test thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert errors == []
    assert not any(t.is_alive() for t in threads)


SIZE_HINT = 70 << 20


@settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    start=st.integers(min_value=-SIZE_HINT - 10, max_value=SIZE_HINT + 10),
    length=st.integers(min_value=0, max_value=5 << 20),
    negative_end=st.booleans(),
)
def test_ranges_follow_slice_semantics(make_fs, two_workers, dataset, start, length, negative_end):
    """cat_file(start, end) equals data[start:end] for any in-order range, negatives included."""
    fs = make_fs(two_workers)
    size = len(dataset.big)
    s = start if start >= 0 else max(0, size + start)
    end = start + length if start >= 0 else min(start + length, -1) if negative_end else None
    # An end before the start is a ValueError, not part of this property.
    assume(end is None or end >= 0 or s <= size + end)
    assert fs.cat_file(dataset.big_path, start, end) == dataset.big[start:end]
