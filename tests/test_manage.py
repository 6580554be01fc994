"""Keeping and letting go against real workers and a real S3 server: pins survive
eviction pressure and respect the pin quota, TTLs expire, free evicts, capacity and
mount quotas hold under 2x overfill, and the metrics count what the test did."""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import alluxiofs
import pytest
from harness import ufs_requests

KiB = 1 << 10
MiB = 1 << 20
PAGE = 64 * KiB
# Small pages, a 2 MiB disk and no memory tier: every hit comes from disk and
# eviction starts after a few files.
BASE_ARGS = ["--page-size", "64KiB", "--memory-capacity", "0"]


@pytest.fixture
def tree(s3_server):
    """A fresh prefix: hot/ (2 x 256 KiB) and cold/ (16 x 256 KiB = 4 MiB)."""
    rnd = random.Random(11)
    fs = s3_server.s3fs()
    base = f"{s3_server.bucket}/manage-{uuid.uuid4().hex[:8]}"
    files = {f"{base}/hot/h{i}.bin": rnd.randbytes(256 * KiB) for i in range(2)}
    files.update({f"{base}/cold/c{i:02d}.bin": rnd.randbytes(256 * KiB) for i in range(16)})
    fs.pipe(files)
    return base, files


def _worker(start_worker, bucket_mount, capacity="2MiB", extra=()):
    return start_worker(bucket_mount, capacity=capacity, extra_args=[*BASE_ARGS, *extra])


def _fs(make_fs, workers):
    return make_fs(workers, page_size=PAGE)


def _pages_on_disk(cache_dir: Path) -> tuple[int, int]:
    """(page files, bytes of page files and segments): 64 KiB pages in a 2 MiB
    cache are too large to pack, so each has a file under ``large/``."""
    large = [f for f in (cache_dir / "large").rglob("*") if f.is_file()]
    segments = [f for f in (cache_dir / "segments").rglob("*") if f.is_file()]
    return len(large), sum(f.stat().st_size for f in large + segments)


def _rules(worker) -> dict:
    with urllib.request.urlopen(f"http://{worker.addr}/v1/rules", timeout=10) as r:
        return json.loads(r.read())


def test_pin_survives_eviction_pressure(make_fs, start_worker, bucket_mount, tree):
    base, files = tree
    w = _worker(start_worker, bucket_mount, extra=["--pin-quota", "1MiB"])
    fs = _fs(make_fs, [w])
    hot = sorted(p for p in files if "/hot/" in p)
    for p in hot:
        assert fs.cat_file(p) == files[p]
    summary = fs.pin(f"s3://{base}/hot")
    assert summary["pages"] == 8 and summary["failed"] == 0
    assert w.metric("alluxiofs_pinned_bytes") == summary["bytes"] > 8 * PAGE
    # 4 MiB of cold data, twice, through a 2 MiB cache.
    cold = sorted(p for p in files if "/cold/" in p)
    for _ in range(2):
        for p in cold:
            assert fs.cat_file(p) == files[p]
    assert w.metric("alluxiofs_evictions_total", reason="capacity") > 0
    gets = ufs_requests([w], "get")
    for p in hot:
        assert fs.cat_file(p) == files[p]
    assert ufs_requests([w], "get") == gets, "pinned pages were evicted"
    assert _rules(w)["pins"] == [f"s3://{base}/hot"]
    # Unpinned, they go under the same pressure.
    assert fs.unpin(f"s3://{base}")["pages"] == 8
    assert w.metric("alluxiofs_pinned_bytes") == 0
    for p in cold:
        fs.cat_file(p)
    gets = ufs_requests([w], "get")
    fs.cat_file(hot[0])
    assert ufs_requests([w], "get") > gets


def test_pin_beyond_the_quota_is_refused(make_fs, start_worker, bucket_mount, tree):
    base, files = tree
    w = _worker(start_worker, bucket_mount, capacity="8MiB", extra=["--pin-quota", "512KiB"])
    fs = _fs(make_fs, [w])
    cold = sorted(p for p in files if "/cold/" in p)
    for p in cold[:4]:  # 1 MiB cached under cold/
        fs.cat_file(p)
    with pytest.raises(alluxiofs.AlluxioError) as e:
        fs.pin(f"s3://{base}/cold")
    assert e.value.errno == errno.ENOSPC
    assert "pin quota exceeded" in str(e.value) and "524288" in str(e.value), str(e.value)
    assert _rules(w)["pins"] == []
    # Pinned before anything is cached: pages beyond the quota are served, not cached.
    fs.pin(f"s3://{base}/hot")
    hot = sorted(p for p in files if "/hot/" in p)
    for p in hot:  # 512 KiB of data + headers > 512 KiB
        assert fs.cat_file(p) == files[p]
    assert w.metric("alluxiofs_cache_pin_refused_total") >= 1
    assert 0 < w.metric("alluxiofs_pinned_bytes") <= 512 * KiB
    assert w.metric("alluxiofs_pin_quota_bytes") == 512 * KiB


def test_a_pin_holds_on_every_worker_or_on_none(make_fs, start_worker, bucket_mount, tree):
    """One worker refuses a pin (its quota): the others undo it, except where the path was
    pinned before; a worker that cannot be reached undoes it too."""
    base, files = tree
    roomy = _worker(start_worker, bucket_mount, capacity="8MiB", extra=["--pin-quota", "8MiB"])
    tight = _worker(start_worker, bucket_mount, capacity="8MiB", extra=["--pin-quota", "128KiB"])
    fs = _fs(make_fs, [roomy, tight])
    cold = sorted(p for p in files if "/cold/" in p)
    for p in cold:  # 4 MiB over the two workers: each holds far more than 128 KiB of it
        assert fs.cat_file(p) == files[p]
    assert (
        roomy.metric("alluxiofs_cache_used_bytes")
        > MiB
        < tight.metric("alluxiofs_cache_used_bytes")
    )
    with pytest.raises(alluxiofs.AlluxioError) as e:
        fs.pin(f"s3://{base}/cold")
    assert e.value.errno == errno.ENOSPC
    assert "nothing was pinned" in str(e.value), str(e.value)
    for w in (roomy, tight):
        assert _rules(w)["pins"] == [], w.addr
        assert w.metric("alluxiofs_pinned_bytes") == 0, w.addr

    # Pinned on `roomy` before (directly): the refused pin leaves that pin where it was.
    req = urllib.request.Request(
        f"http://{roomy.addr}/v1/pin?path=s3://{base}/cold", method="POST", data=b""
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read())["new_rule"] is True
    pinned = roomy.metric("alluxiofs_pinned_bytes")
    assert pinned > MiB
    with pytest.raises(alluxiofs.AlluxioError):
        fs.pin(f"s3://{base}/cold")
    assert _rules(roomy)["pins"] == [f"s3://{base}/cold"]
    assert roomy.metric("alluxiofs_pinned_bytes") == pinned
    assert _rules(tight)["pins"] == []

    # A worker that cannot be reached: the pin is undone on the one that took it.
    gone = _worker(start_worker, bucket_mount)
    gone.stop()
    fs2 = _fs(make_fs, [roomy, gone])
    with pytest.raises(ConnectionError, match="nothing was pinned"):
        fs2.pin(f"s3://{base}/hot")
    assert _rules(roomy)["pins"] == [f"s3://{base}/cold"]


def test_ttl_expires(make_fs, start_worker, bucket_mount, tree):
    base, files = tree
    w = _worker(start_worker, bucket_mount, capacity="8MiB")
    fs = _fs(make_fs, [w])
    path = sorted(files)[0]
    fs.set_ttl(f"s3://{base}", 1)
    assert _rules(w)["ttls"] == {f"s3://{base}": 1}
    assert fs.cat_file(path) == files[path]
    gets = ufs_requests([w], "get")
    assert fs.cat_file(path) == files[path]
    assert ufs_requests([w], "get") == gets, "fresh pages are hits"
    # The sweep (every second) removes the 4 pages once they are older than 1 s.
    deadline = time.monotonic() + 10
    while w.metric("alluxiofs_evictions_total", reason="ttl") < 4:
        assert time.monotonic() < deadline, "pages did not expire"
        time.sleep(0.2)
    assert w.metric("alluxiofs_evictions_total", reason="ttl") == 4
    assert fs.cat_file(path) == files[path]
    assert ufs_requests([w], "get") > gets, "expired pages are read through"
    # Cleared: pages stay.
    fs.set_ttl(f"s3://{base}", 0)
    time.sleep(2.2)
    gets = ufs_requests([w], "get")
    assert fs.cat_file(path) == files[path]
    assert ufs_requests([w], "get") == gets


def test_free_evicts(make_fs, start_worker, bucket_mount, tree):
    base, files = tree
    workers = [_worker(start_worker, bucket_mount, capacity="8MiB") for _ in range(2)]
    fs = _fs(make_fs, workers)
    hot = sorted(p for p in files if "/hot/" in p)
    for p in hot:
        fs.cat_file(p)
    one = fs.free(f"s3://{hot[0]}", recursive=False)
    assert one["pages"] == 4 and len(one["workers"]) == 2 and one["failed"] == 0
    gets = ufs_requests(workers, "get")
    assert fs.cat_file(hot[0]) == files[hot[0]]
    assert ufs_requests(workers, "get") == gets + 1, "the next read is a UFS request"
    fs.pin(f"s3://{base}/hot")
    with pytest.raises(alluxiofs.AlluxioError) as e:
        fs.free(f"s3://{base}")
    assert e.value.errno == errno.EBUSY and "pinned pages" in str(e.value)
    summary = fs.free(f"s3://{base}", force=True)
    assert summary["pages"] == 8
    assert sum(w.metric("alluxiofs_evictions_total", reason="free") for w in workers) == 12
    assert sum(w.metric("alluxiofs_cache_pages") for w in workers) == 0
    with pytest.raises(PermissionError):
        fs.free("s3://some-other-bucket/x")


@pytest.mark.parametrize(
    "policy",
    [
        "lru",
        pytest.param(
            "s3fifo",
            marks=pytest.mark.xfail(
                reason="known bug since the one-GET cold read (issue 12): a cold GET's pages "
                "that S3-FIFO evicts before they are first served are never counted as "
                "misses (misses - evicted came out 25-29 against 31 pages on disk)",
                strict=False,
            ),
        ),
    ],
)
def test_capacity_never_exceeded_under_2x_overfill(
    make_fs, start_worker, bucket_mount, tree, tmp_path, policy
):
    _base, files = tree
    cache = tmp_path / "cache"
    capacity = 2 * MiB
    w = start_worker(
        bucket_mount,
        cache_dir=cache,
        capacity="2MiB",
        extra_args=[*BASE_ARGS, "--eviction-policy", policy],
    )
    fs = _fs(make_fs, [w])
    cold = sorted(p for p in files if "/cold/" in p)
    order = cold * 2
    random.Random(3).shuffle(order)
    for p in order:  # one reader: no coalescing, every miss is stored
        assert fs.cat_file(p) == files[p]
        assert w.metric("alluxiofs_cache_used_bytes") <= capacity
        pages, size = _pages_on_disk(cache)
        assert size <= capacity
    assert w.metric("alluxiofs_cache_used_bytes") == size
    assert w.metric("alluxiofs_cache_dir_used_bytes", dir=str(cache)) == size
    assert w.metric("alluxiofs_cache_dir_capacity_bytes", dir=str(cache)) == capacity
    # Every page read from the UFS was stored; what is not on disk was evicted.
    misses = w.metric("alluxiofs_cache_misses_total")
    hits = w.metric("alluxiofs_cache_hits_total")
    evicted = w.metric("alluxiofs_evictions_total", reason="capacity")
    assert misses + hits == 2 * 16 * 4
    assert misses - evicted == pages == w.metric("alluxiofs_cache_pages")
    assert w.metric("alluxiofs_cache_evictions_total") == evicted
    for reason in ("ttl", "free", "mount_quota", "corrupt"):
        assert w.metric("alluxiofs_evictions_total", reason=reason) == 0


def test_mount_quota(make_fs, start_worker, bucket_mount, tree):
    base, files = tree
    w = _worker(
        start_worker,
        bucket_mount,
        capacity="8MiB",
        extra=["--mount-quota", f"s3://{base}/cold=1MiB"],
    )
    fs = _fs(make_fs, [w])
    for p in sorted(files):
        assert fs.cat_file(p) == files[p]
    quota = _rules(w)["mount_quotas"][0]
    assert quota["mount"] == f"s3://{base}/cold"
    assert 0 < quota["used_bytes"] <= quota["quota_bytes"] == MiB
    assert w.metric("alluxiofs_evictions_total", reason="mount_quota") > 0
    assert w.metric("alluxiofs_evictions_total", reason="capacity") == 0
    # The other files were not touched by the quota.
    gets = ufs_requests([w], "get")
    for p in sorted(p for p in files if "/hot/" in p):
        fs.cat_file(p)
    assert ufs_requests([w], "get") == gets


def test_mount_quota_outside_the_mounts_is_refused_at_start(start_worker, bucket_mount):
    with pytest.raises(RuntimeError, match="mount quota"):
        start_worker(bucket_mount, extra_args=["--mount-quota", "s3://elsewhere/x=1MiB"])


def test_rules_survive_a_restart(make_fs, start_worker, bucket_mount, tree):
    base, files = tree
    w = _worker(start_worker, bucket_mount, capacity="8MiB")
    fs = _fs(make_fs, [w])
    hot = sorted(p for p in files if "/hot/" in p)
    fs.cat_file(hot[0])
    fs.pin(f"s3://{base}/hot")
    fs.set_ttl(f"s3://{base}/cold", 3600)
    w.restart()
    rules = _rules(w)
    assert rules["pins"] == [f"s3://{base}/hot"]
    assert rules["ttls"] == {f"s3://{base}/cold": 3600}
    assert rules["pinned_bytes"] == w.metric("alluxiofs_pinned_bytes") > 4 * PAGE


def test_cli_pin_unpin_free(start_worker, bucket_mount, s3_server, make_fs, tree):
    base, files = tree
    w = _worker(start_worker, bucket_mount, capacity="8MiB")
    fs = _fs(make_fs, [w])
    for p in sorted(p for p in files if "/hot/" in p):
        fs.cat_file(p)
    env = dict(os.environ)
    env["ALLUXIOFS_WORKER_HOSTS"] = w.addr
    env["AWS_ACCESS_KEY_ID"] = s3_server.access_key
    env["AWS_SECRET_ACCESS_KEY"] = s3_server.secret_key
    env["AWS_ENDPOINT_URL"] = s3_server.endpoint_url

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "alluxiofs", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    for cmd in ("pin", "unpin", "ttl", "free"):
        h = cli(cmd, "--help")
        assert h.returncode == 0 and "--json" in h.stdout, h.stderr
    hot = f"s3://{base}/hot"
    out = cli("pin", hot, "--ttl", "1h")
    assert out.returncode == 0, out.stderr
    assert f"pinned {hot}: 8 cached pages" in out.stdout and "KiB" in out.stdout
    assert "ttl of" in out.stdout and "3600 s" in out.stdout
    assert _rules(w)["ttls"] == {hot: 3600}
    refused = cli("free", hot, "-r")
    assert refused.returncode == 1 and "pinned pages" in refused.stderr
    out = cli("unpin", hot)
    assert out.returncode == 0 and f"unpinned {hot}: 8 pages" in out.stdout, out.stderr
    out = cli("free", hot, "-r", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pages"] == 8
    assert w.metric("alluxiofs_evictions_total", reason="free") == 8
    cold = f"s3://{base}/cold"
    out = cli("ttl", cold, "15m")
    assert out.returncode == 0 and f"ttl of {cold}: 900 s" in out.stdout, out.stderr
    assert _rules(w)["ttls"] == {hot: 3600, cold: 900}
    out = cli("ttl", cold, "0")
    assert out.returncode == 0 and "removed" in out.stdout, out.stderr
    assert _rules(w)["ttls"] == {hot: 3600}
    bad = cli("ttl", cold, "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr


def test_multi_epoch_over_a_larger_dataset_does_not_thrash(
    make_fs, start_worker, bucket_mount, tree
):
    """Sequential epochs over 1.5x the cache: LRU gets no hits, S3-FIFO (the default) does."""
    _base, files = tree
    data = sorted(p for p in files if "/cold/" in p)[:12]  # 3 MiB for a 2 MiB cache
    ratios = {}
    for policy in ("lru", None):
        extra = ["--eviction-policy", policy] if policy else []
        w = _worker(start_worker, bucket_mount, extra=extra)
        fs = _fs(make_fs, [w])
        for p in data:  # epoch 1: all misses
            fs.cat_file(p)
        h0, m0 = w.metric("alluxiofs_cache_hits_total"), w.metric("alluxiofs_cache_misses_total")
        for _ in range(3):
            for p in data:
                assert fs.cat_file(p) == files[p]
        hits = w.metric("alluxiofs_cache_hits_total") - h0
        misses = w.metric("alluxiofs_cache_misses_total") - m0
        ratios[policy or "default"] = hits / (hits + misses)
        assert w.metric("alluxiofs_cache_used_bytes") <= 2 * MiB
    assert ratios["lru"] == 0.0, ratios
    assert ratios["default"] >= 0.2, ratios
    assert _rules(w)["eviction_policy"] == "s3fifo"


def test_durations_in_human_units():
    from alluxiofs.manage import parse_duration

    assert [parse_duration(t) for t in ("90", "90s", "15m", "1h", "2d", "1w", "0", 0, 1.4)] == [
        90,
        90,
        900,
        3600,
        172800,
        604800,
        0,
        0,
        1,
    ]
    assert parse_duration("500ms") == 1, "a TTL is at least a second"
    for bad in ("-1", "1y", "soon", -5):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_kill_during_eviction_and_compaction_loses_no_byte(
    make_fs, start_worker, bucket_mount, s3_server, tmp_path
):
    """SIGKILL a worker three times while readers overfill its small cache of packed
    pages (it evicts and compacts segments all the time); no read is ever wrong, and
    after each restart the used bytes match the disk and stay within the capacity,
    every file reads right and what the worker kept is served from its cache."""
    rnd = random.Random(5)
    base = f"{s3_server.bucket}/crash-{uuid.uuid4().hex[:8]}"
    files = {
        f"{base}/f{i:04d}.bin": rnd.randbytes(rnd.randint(2 * KiB, 12 * KiB)) for i in range(600)
    }
    s3_server.s3fs().pipe(files)
    paths = sorted(files)
    cache = tmp_path / "cache"
    capacity = 2 * MiB
    # 16 KiB pages: every file is one packed record (a 2 MiB cache has 128 KiB
    # segments, which take records up to 16 KiB); 3.6 MB of files overfill it.
    w = start_worker(
        bucket_mount,
        cache_dir=cache,
        capacity="2MiB",
        extra_args=["--page-size", "16KiB", "--memory-capacity", "0"],
    )
    fs = make_fs([w], page_size=16 * KiB)
    wrong: list[str] = []
    reads = [0]
    compacted = 0.0
    for rnd_no in range(3):
        stop = threading.Event()

        def loop(seed: int, stop: threading.Event = stop) -> None:
            r = random.Random(seed)
            while not stop.is_set():
                p = r.choice(paths)
                try:
                    got = fs.cat_file(p)
                except Exception:  # the worker is being killed: only wrong bytes count
                    continue
                reads[0] += 1
                if got != files[p]:
                    wrong.append(p)

        threads = [
            threading.Thread(target=loop, args=(10 * rnd_no + k,), daemon=True) for k in range(3)
        ]
        for t in threads:
            t.start()
        time.sleep(rnd.uniform(1.0, 2.0))
        compacted += w.metric("alluxiofs_segments_compacted_total")
        w.kill()
        stop.set()
        for t in threads:
            t.join(30)
        w.restart(same_port=True)
        used = w.metric("alluxiofs_cache_used_bytes")
        kept = w.metric("alluxiofs_cache_pages")
        assert 0 < used <= capacity, used
        assert used == _pages_on_disk(cache)[1]
        assert kept > 0
        hits0 = w.metric("alluxiofs_cache_hits_total")
        for p in paths:
            assert fs.cat_file(p) == files[p], p
        assert w.metric("alluxiofs_cache_hits_total") - hits0 > 0
    print(f"[crash] {reads[0]} reads, {compacted:.0f} segments compacted before the kills")
    assert not wrong, wrong[:5]
    assert reads[0] > 300
    assert compacted > 0, "the cache compacted segments while it was killed"
