"""Per-job cache reports: what the workers did since a moment, and what it saved.

Each worker keeps snapshots of its counters (every 10 s for 24 h, and one per
``/v1/stats`` request at most once a second); ``GET /v1/stats?since=<unix s>``
answers the deltas from the newest snapshot at or before ``since`` to now.
:func:`cache_window` sums them over the workers; ``alluxiofs cache stats
--since 30m`` prints them and ``fs.stats()`` includes them for the time since
the filesystem was made. Numbers are worker-side: they include every client of
those workers, not only this process. See docs/metrics.md.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

from .units import human_size, parse_seconds

# Counter fields of a /v1/stats answer (summed over workers).
FIELDS = (
    "hits",
    "misses",
    "memory_hits",
    "bytes_served",
    "data_requests",
    "ufs_get_requests",
    "ufs_requests",
    "ufs_bytes",
    "writes",
    "write_bytes",
    "write_pages_cached",
    "ufs_requests_saved",
    "bytes_saved",
    "ufs_outages",
    "ufs_fail_fast",
    "stale_served",
)


def parse_since(value: str, now: float | None = None) -> float:
    """``30m`` / ``2h`` / ``1d`` / ``90s`` (ago), an ISO time (``2026-11-22T07:00``, local
    time unless it has an offset) or ``@<unix seconds>`` → unix seconds."""
    now = time.time() if now is None else now
    v = value.strip()
    if v.startswith("@"):
        return float(v[1:])
    try:
        return now - parse_seconds(v)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(v).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {value!r}: give a duration (30m, 2h, 1d), an ISO time "
            "(2026-11-22T07:00) or @<unix seconds>"
        ) from None


def cache_window(fs: Any, since: float) -> dict[str, Any]:
    """Each worker's counter deltas since ``since`` and their sum.

    Returns ``{"since", "from", "workers": {addr: {...}}, "total": {...},
    "unreachable": [addr, ...]}``; ``from`` is the earliest window start the
    workers could give (at or before ``since``).
    """
    client = fs._client()
    total = dict.fromkeys(FIELDS, 0)
    per: dict[str, dict[str, Any]] = {}
    unreachable: list[str] = []
    start = since
    for w in client.workers():
        try:
            # Every digit: rounded to milliseconds, a mark taken just after a
            # snapshot could fall before it and the window would start a
            # snapshot earlier (counting reads made before the mark).
            d = json.loads(client.get_text(w, f"/v1/stats?since={since!r}"))
        except (OSError, ValueError):
            unreachable.append(w)
            continue
        per[w] = d
        start = min(start, float(d.get("from", since)))
        for k in FIELDS:
            total[k] += int(d.get(k, 0))
    return {
        "since": since,
        "from": start,
        "workers": per,
        "total": total,
        "unreachable": unreachable,
    }


def print_report(window: dict[str, Any]) -> None:
    """Print a window as ``alluxiofs cache stats --since`` shows it."""
    t = window["total"]

    def when(ts: float) -> str:
        return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")

    looked = t["hits"] + t["misses"]
    ratio = f"{100 * t['hits'] / looked:.1f}%" if looked else "-"
    print(f"since:              {when(window['since'])} (window from {when(window['from'])})")
    print(
        f"workers:            {len(window['workers'])}"
        + (f" ({len(window['unreachable'])} unreachable)" if window["unreachable"] else "")
    )
    print(f"page hits:          {t['hits']} ({ratio})")
    print(f"page misses:        {t['misses']}")
    print(f"data requests:      {t['data_requests']}")
    print(f"served:             {human_size(t['bytes_served'])} ({t['bytes_served']} bytes)")
    print(f"UFS requests:       {t['ufs_requests']} ({t['ufs_get_requests']} GET)")
    print(f"UFS bytes fetched:  {human_size(t['ufs_bytes'])} ({t['ufs_bytes']} bytes)")
    print(f"written through:    {t['writes']} files, {human_size(t['write_bytes'])}")
    print(f"UFS requests saved: {t['ufs_requests_saved']}")
    print(f"bytes saved:        {human_size(t['bytes_saved'])} ({t['bytes_saved']} bytes)")
    if t["ufs_outages"] or t["ufs_fail_fast"] or t["stale_served"]:
        print(
            f"UFS outages:        {t['ufs_outages']} ({t['ufs_fail_fast']} requests failed fast, "
            f"{t['stale_served']} lookups served stale)"
        )
