"""The UFS goes away: what is cached stays readable, the rest fails fast.

One worker reads the test bucket through a TCP proxy (``harness.TcpProxy``)
with ``--metadata-ttl 1s``; the client's own route to the UFS (its fallback)
goes through the same proxy. The proxy then resets every connection, as a
dead S3 server's host does:

- files read before, whose metadata has expired since, are still served from
  the cache with their last verified version (``stale_if_error``), and so is
  a listing;
- a file never read fails at once with ``alluxiofs.UfsUnreachableError``
  (a ``ConnectionError``) once the outage is known, without the client
  trying the dead UFS itself;
- a file deleted from the UFS while it was up is gone, never served stale;
- once the proxy passes connections again, reads of new files work.
"""

from __future__ import annotations

import posixpath
import time
from urllib.parse import urlsplit

import alluxiofs
import pytest
from harness import TcpProxy


@pytest.fixture
def proxy(s3_server):
    u = urlsplit(s3_server.endpoint_url)
    p = TcpProxy(u.hostname, u.port)
    yield p
    p.close()


def test_cached_files_are_served_and_the_rest_fail_fast_while_the_ufs_is_down(
    s3_server, start_worker, make_fs, bucket_mount, dataset, proxy, capsys
):
    env = {"AWS_ENDPOINT": proxy.url, "AWS_ENDPOINT_URL": proxy.url}
    w = start_worker(bucket_mount, env=env, extra_args=["--metadata-ttl", "1s"])
    opts = s3_server.target_options()
    opts["client_kwargs"] = {**opts["client_kwargs"], "endpoint_url": proxy.url}
    fs = make_fs([w], target_options=opts)

    files = sorted(dataset.small.items())
    directory = posixpath.dirname(files[0][0])
    in_dir = sorted(p for p, _ in files if posixpath.dirname(p) == directory)
    cached = [(p, d) for p, d in files if posixpath.dirname(p) == directory][:8]
    cold = [p for p, _ in files if posixpath.dirname(p) != directory][:3]
    assert len(cached) >= 4 and cold
    for p, d in cached:
        assert fs.cat_file(p) == d
    assert sorted(fs.ls(directory, detail=False)) == in_dir

    # Deleted from the UFS while it is up: gone once the metadata expires.
    deleted, _ = cached.pop()
    s3_server.s3fs().rm(deleted)
    time.sleep(1.2)
    with pytest.raises(FileNotFoundError):
        fs.cat_file(deleted)

    proxy.down()
    time.sleep(1.2)  # every cached info and listing has expired
    for p, d in cached:
        assert fs.cat_file(p) == d, p
    listed = sorted(fs.ls(directory, detail=False))
    assert set(listed) >= {p for p, _ in cached}
    assert w.metric("alluxiofs_ufs_outages_total") >= 1
    assert w.metric("alluxiofs_ufs_stale_served_total") >= len(cached)

    # Never read: no cached bytes to serve, so an error, fast, and the
    # client does not wait out the outage at the UFS itself.
    fast = w.metric("alluxiofs_ufs_fail_fast_total")
    t0 = time.monotonic()
    with pytest.raises(alluxiofs.UfsUnreachableError) as e:
        fs.cat_file(cold[0])
    took = time.monotonic() - t0
    assert "unreachable" in str(e.value)
    assert took < 5, f"{took:.1f} s to fail"
    assert w.metric("alluxiofs_ufs_fail_fast_total") > fast
    assert fs.stats()["ufs_fallback_reads"] == 0
    with pytest.raises(alluxiofs.UfsUnreachableError):
        fs.info(cold[1])
    assert fs.stats()["metadata_fallbacks"] == 0
    # fs.stats() and `alluxiofs cache stats` show the outage.
    window = fs.stats()["cache"]["total"]
    assert window["ufs_outages"] >= 1 and window["stale_served"] >= len(cached), window
    assert window["ufs_fail_fast"] >= 1, window
    from alluxiofs.stats import print_report

    print_report(fs.stats()["cache"])
    assert "UFS outages:" in capsys.readouterr().out

    # Back up: the next try after the wait reaches it.
    proxy.up()
    deadline = time.monotonic() + 40
    while True:
        try:
            assert fs.cat_file(cold[0]) == dataset.small[cold[0]]
            break
        except alluxiofs.UfsUnreachableError:
            assert time.monotonic() < deadline, "the UFS was never tried again"
            time.sleep(0.2)
    assert fs.cat_file(cold[1]) == dataset.small[cold[1]]
