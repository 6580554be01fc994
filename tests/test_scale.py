"""Scale: one worker holding many small pages, measured from outside the worker.

The step of ``benches/scale.py`` (``make bench-scale`` runs it at 1 M and 10 M
files) at ``$ALLUXIOFS_SCALE_FILES`` files of 2 KiB (100,000 by default; e.g.
``ALLUXIOFS_SCALE_FILES=20000`` for a quick local run): generate a ``file://``
tree, fill one worker (``--memory-capacity 0``) with its load job, stop it,
measure its cache directory, start it again and read a cached file. The
targets of the page store are asserted as ratios, never as times of this
machine:

- resident memory per cached page after the restart (the worker's ``VmRSS``
  minus that of a worker restarted over a one-page cache, over the pages
  gauge) <= 64 bytes;
- allocated disk (``st_blocks * 512`` of every file under the cache
  directory) <= 1.1x the bytes cached;
- bytes the restarted process read until its first hit (``rchar``, minus the
  one-page worker's) <= 5% of the bytes cached: the index is read, the pages
  are not;
- time from spawning the restarted worker to its first hit <= 5x the same
  time of the one-page worker.

All four failures are reported together, with the numbers measured.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bench_scale", REPO / "benches" / "scale.py")
assert _spec is not None and _spec.loader is not None
scale = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = scale  # dataclasses and the generator's process pool look it up
_spec.loader.exec_module(scale)

FILES = int(os.environ.get("ALLUXIOFS_SCALE_FILES", "100000"))

RSS_PER_PAGE_MAX = 64
DISK_PER_CACHED_BYTE_MAX = 1.1
STARTUP_READ_SHARE_MAX = 0.05
FIRST_HIT_VS_EMPTY_MAX = 5.0


def test_one_worker_many_small_files_ratios(start_worker, tmp_path):
    """Fill, restart and read one worker at ``FILES`` small files; assert the ratios."""

    def start(mount, cache_dir, name, capacity):
        return start_worker(
            mount,
            cache_dir=cache_dir,
            capacity=str(capacity),
            extra_args=scale.WORKER_EXTRA_ARGS,
        )

    cfg = scale.StepConfig(
        files=FILES,
        workdir=tmp_path,
        warm_sample=2000,
        single_sample=500,
        threads=4,
        log=print,
    )
    res = scale.measure_step(cfg, start, lambda w: w.stop(timeout=60))
    print(json.dumps(res, indent=1))
    fill, disk, rs, warm = res["fill"], res["disk"], res["restart"], res["warm"]

    # What must hold whatever the store: everything cached, served from the cache.
    assert fill["job_state"] == "SUCCEEDED" and fill["files_failed"] == 0, fill
    assert fill["pages"] >= FILES, fill
    assert rs["pages"] >= FILES, rs
    assert rs["hit"], f"the first read after the restart was not a cache hit: {rs}"
    assert res["baseline"]["hit"], res["baseline"]
    assert warm["ufs_gets"] == 0, f"warm reads went to the UFS: {warm}"

    cached = FILES * scale.FILE_SIZE
    measured = {
        "resident bytes per page after restart": (rs["rss_per_page"], RSS_PER_PAGE_MAX),
        "allocated disk bytes / bytes cached": (
            disk["allocated_bytes"] / cached,
            DISK_PER_CACHED_BYTE_MAX,
        ),
        "startup read bytes (rchar at first hit) / bytes cached": (
            rs["rchar_share"],
            STARTUP_READ_SHARE_MAX,
        ),
        "time to first hit / same with a one-page cache": (
            rs["first_hit_vs_baseline"],
            FIRST_HIT_VS_EMPTY_MAX,
        ),
    }
    failed = [
        f"{what}: {value:.4g} > {limit:g}"
        for what, (value, limit) in measured.items()
        if value > limit
    ]
    summary = (
        f"{FILES:,} files of 2 KiB, {fill['pages']:,} pages: "
        f"{rs['rss_per_page']:.0f} B/page resident, disk {disk['allocated_bytes']:,} B "
        f"allocated in {disk['files']:,} files (index {disk['index_bytes']:,} B), "
        f"startup read {rs['rchar_over_baseline']:,} B, first hit {rs['first_hit_s']:.3f} s "
        f"vs {res['baseline']['first_hit_s']:.3f} s"
    )
    assert not failed, summary + "\n" + "\n".join(failed)
