"""A cluster found through etcd: discovery, watch, failover, replicas, placement.

Workers register in a real etcd (started by the test on run-time ports);
clients are given only the etcd endpoint.
"""

from __future__ import annotations

import threading
import time

import pytest


def _etcd_workers(start_worker, bucket_mount, etcd_server, n=3, ttl="2s", extra=()):
    args = ["--etcd", etcd_server.endpoint, "--etcd-lease-ttl", ttl, *extra]
    workers = [start_worker(bucket_mount, extra_args=args) for _ in range(n)]
    # Ready means serving; the etcd record follows a moment later.
    for w in workers:
        w.wait_registered()
    return workers


def _wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _read_all(fs, dataset):
    for path, data in sorted(dataset.small.items()):
        assert fs.cat_file(path) == data, path


def test_clients_find_workers_in_etcd(make_fs, start_worker, bucket_mount, etcd_server, dataset):
    workers = _etcd_workers(start_worker, bucket_mount, etcd_server)
    fs = make_fs([], worker_hosts=None, etcd_hosts=etcd_server.endpoint)
    assert sorted(fs.workers()) == sorted(w.addr for w in workers)
    assert fs.placement() == "alluxio:5"
    _read_all(fs, dataset)
    assert fs.cat_file(dataset.big_path) == dataset.big
    served = [w.metrics()["alluxiofs_bytes_served_total"] for w in workers]
    assert sum(1 for s in served if s > 0) >= 2, served  # the data is spread
    assert fs.stats()["ufs_fallback_reads"] == 0


def test_no_registered_worker_is_a_clear_error(make_fs, etcd_server, dataset):
    fs = make_fs([], worker_hosts=None, etcd_hosts=etcd_server.endpoint,
                 cluster_name="EmptyCluster")  # fmt: skip
    with pytest.raises(ConnectionError, match="EmptyCluster"):
        fs.cat_file(next(iter(dataset.small)))


def test_worker_killed_and_restarted(make_fs, start_worker, bucket_mount, etcd_server, dataset):
    """SIGKILL a worker while a client loops over the dataset comparing every byte,
    then restart it: no failed read, no wrong byte; the dead worker leaves the ring
    when its lease expires; restarted, it returns with the same identity and serves
    its pages from disk without asking the UFS for them again."""
    workers = _etcd_workers(start_worker, bucket_mount, etcd_server)
    fs = make_fs([], worker_hosts=None, etcd_hosts=etcd_server.endpoint, connect_timeout=0.5)
    _read_all(fs, dataset)  # warm every worker's cache
    victim = max(workers, key=lambda w: w.metric("alluxiofs_ufs_requests_total", op="get"))
    owned = [p for p in dataset.small if dataset.small[p] and fs.workers_for(p) == [victim.addr]]
    assert owned, "the victim owns files"
    victim_id = victim.healthz()["worker_id"]
    old_addr = victim.addr  # the restart below picks a new port; the identity stays

    stop = threading.Event()
    reads, wrong, errors = [0], [], []

    def loop() -> None:
        items = sorted(dataset.small.items())
        while not stop.is_set():
            for path, data in items:
                try:
                    if fs.cat_file(path) != data:
                        wrong.append(path)
                except Exception as e:  # every failure is recorded, then asserted on
                    errors.append(repr(e))
                reads[0] += 1

    reader = threading.Thread(target=loop, daemon=True)
    reader.start()
    try:
        time.sleep(0.5)
        victim.kill()
        _wait_for(lambda: victim.addr not in fs.workers(), timeout=10, what="lease expiry")
        reads_while_down = reads[0]
        time.sleep(0.5)
        assert reads[0] > reads_while_down, "the loop kept reading with the worker gone"
        victim.restart()
        assert victim.healthz()["worker_id"] == victim_id
        _wait_for(lambda: victim.addr in fs.workers(), timeout=10, what="re-registration")
        time.sleep(1.0)
    finally:
        stop.set()
        reader.join(60)
    assert not errors, errors[:5]
    assert not wrong, wrong[:5]
    assert reads[0] > 3 * len(dataset.small)
    assert fs.stats()["fallbacks"].get(old_addr, 0) > 0  # the reads it missed went to the UFS

    for p in owned:
        assert fs.workers_for(p) == [victim.addr]
        assert fs.cat_file(p) == dataset.small[p]
    # Its pages were on disk: no data read from the UFS since the restart. (An
    # empty file it owns has no page on disk: its cold lookup is one GET, answered
    # 416 with no bytes, then a HEAD.)
    assert victim.metric("alluxiofs_ufs_bytes_total") == 0
    empty_owned = [p for p in dataset.small if not dataset.small[p]
                   and fs.workers_for(p) == [victim.addr]]  # fmt: skip
    assert victim.metric("alluxiofs_ufs_requests_total", op="get") <= len(empty_owned)
    assert victim.metrics()["alluxiofs_bytes_served_total"] >= sum(
        len(dataset.small[p]) for p in owned
    )


def test_reads_continue_while_etcd_is_down(
    make_fs, start_worker, bucket_mount, etcd_server, dataset
):
    workers = _etcd_workers(start_worker, bucket_mount, etcd_server, ttl="10s")
    fs = make_fs([], worker_hosts=None, etcd_hosts=etcd_server.endpoint)
    _read_all(fs, dataset)
    etcd_server.stop()
    _read_all(fs, dataset)
    assert sorted(fs.workers()) == sorted(w.addr for w in workers)
    assert fs.stats()["ufs_fallback_reads"] == 0
    etcd_server.start()
    _read_all(fs, dataset)


def test_rendezvous_placement_and_replicas(
    make_fs, start_worker, bucket_mount, etcd_server, dataset
):
    """The cluster publishes rendezvous; with replicas=2 the second choice serves
    when the first dies, and the UFS is not asked."""
    workers = _etcd_workers(
        start_worker, bucket_mount, etcd_server, ttl="30s", extra=["--placement", "rendezvous"]
    )
    fs = make_fs([], worker_hosts=None, etcd_hosts=etcd_server.endpoint, replicas=2,
                 connect_timeout=0.5, retries=0)  # fmt: skip
    assert fs.placement() == "rendezvous"
    path = max(dataset.small, key=lambda p: len(dataset.small[p]))
    prefs = fs.workers_for(path)
    assert len(prefs) == 2 and prefs[0] != prefs[1]
    assert fs.cat_file(path) == dataset.small[path]
    first = next(w for w in workers if w.addr == prefs[0])
    first.kill()
    assert fs.cat_file(path) == dataset.small[path]
    assert fs.stats()["ufs_fallback_reads"] == 0
    # A client that asks for another placement than the cluster's is refused.
    other = make_fs([], worker_hosts=None, etcd_hosts=etcd_server.endpoint, placement="alluxio")
    with pytest.raises(ValueError, match="rendezvous"):
        other.cat_file(path)
