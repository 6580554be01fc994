"""Data loaders fork and Ray pickles: the filesystem must survive both."""

from __future__ import annotations

import hashlib
import multiprocessing
import pickle
import traceback


def _child_reads(fs, paths, queue) -> None:
    """Run in a forked child: read ``paths`` through the parent's fs, report digests."""
    try:
        digests = {}
        total = 0
        for p in paths:
            data = fs.cat_file(p)
            total += len(data)
            digests[p] = hashlib.sha256(data).hexdigest()
        with fs.open(paths[-1], "rb") as f:
            f.seek(5)
            digests["tail"] = (paths[-1], hashlib.sha256(f.read()).hexdigest())
        queue.put(("ok", digests, total, fs.stats()["bytes_read"]))
    except BaseException:
        queue.put(("error", traceback.format_exc(), 0, 0))


def test_fork_after_parent_read(make_fs, two_workers, dataset):
    """Children forked after the parent used the fs read correctly with their own client."""
    fs = make_fs(two_workers)
    paths = sorted(p for p, d in dataset.small.items() if len(d) > 10)
    # The parent reads first: its native client, runtime and connections exist.
    for p in paths:
        assert fs.cat_file(p) == dataset.small[p]
    parent_bytes = fs.stats()["bytes_read"]
    assert parent_bytes >= sum(len(dataset.small[p]) for p in paths)

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    chunks = [paths[i::3] for i in range(3)]
    procs = [ctx.Process(target=_child_reads, args=(fs, chunk, queue)) for chunk in chunks]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    for status, digests, total, child_bytes in results:
        assert status == "ok", digests
        tail_path, tail_digest = digests.pop("tail")
        # After a seek: the bytes from offset 5 to the end, through the child's reader.
        assert tail_digest == hashlib.sha256(dataset.small[tail_path][5:]).hexdigest()
        assert sorted(digests) in [sorted(chunk) for chunk in chunks]
        for p, d in digests.items():
            assert d == hashlib.sha256(dataset.small[p]).hexdigest(), p
        # A fresh client per process: the child's counters do not include the parent's.
        assert total <= child_bytes < total + parent_bytes
    # The parent still works after its children came and went.
    assert fs.cat_file(paths[0]) == dataset.small[paths[0]]


def test_pickle_round_trip(make_fs, two_workers, dataset):
    """A pickled and restored fs has the same options and reads the same bytes."""
    fs = make_fs(two_workers)
    path, data = max(dataset.small.items(), key=lambda kv: len(kv[1]))
    assert fs.cat_file(path) == data
    fs2 = pickle.loads(pickle.dumps(fs))
    assert fs2.cat_file(path) == data
    assert fs2.cat_file(dataset.big_path, 1000, 2000) == dataset.big[1000:2000]
    assert sorted(fs2.workers()) == sorted(w.addr for w in two_workers)
    assert fs2.info(path)["size"] == len(data)


def test_pickle_before_first_use(make_fs, two_workers, dataset):
    """An fs pickled before any read (no native client yet) works after unpickling."""
    blob = pickle.dumps(make_fs(two_workers))
    fs = pickle.loads(blob)
    path, data = min(((p, d) for p, d in dataset.small.items() if d), key=lambda kv: len(kv[1]))
    assert fs.cat_file(path) == data
