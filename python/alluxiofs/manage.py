"""Keeping and letting go: pin, unpin, TTL and free on every worker.

The filesystem methods (:meth:`AlluxioFileSystem.pin`, ``unpin``, ``free``,
``set_ttl``) and the ``alluxiofs pin|unpin|ttl|free`` commands share this
module. Each request goes to every worker the client knows (a path's pages
may be on any of them); the answer sums pages and bytes over the workers
and lists each worker's answer or error. See ``docs/eviction.md``.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from typing import Any

from ._alluxiofs import AlluxioError
from .units import human_size, parse_whole_seconds


def parse_duration(text: str | int | float) -> int:
    """``"90"``, ``"90s"``, ``"15m"``, ``"1h"``, ``"2d"`` → whole seconds (at least 1 unless 0)."""
    return parse_whole_seconds(text)


def run(
    client: Any,
    op: str,
    url: str,
    seconds: int = 0,
    recursive: bool = True,
    force: bool = False,
    raise_on_refusal: bool = True,
) -> dict[str, Any]:
    """Send ``op`` on ``url`` to every worker of ``client``; the summary as a dict.

    With ``raise_on_refusal``, a worker's refusal raises
    :class:`alluxiofs.AlluxioError`: ``ENOSPC`` when a pin would exceed the
    pin quota, ``EBUSY`` when a free would remove pinned pages. When no
    worker could be reached, ``ConnectionError`` is raised.

    A pin holds on every worker or on none: when one worker refuses it or
    cannot be reached, the client undoes it on the others (``undone`` in the
    summary; workers where undoing failed too are in ``undo_failed``), and
    with ``raise_on_refusal`` an unreachable worker raises ``ConnectionError``.
    """
    summary: dict[str, Any] = json.loads(
        client.manage(op, url, seconds=seconds, recursive=recursive, force=force)
    )
    answers = summary["workers"]
    undone = ""
    if summary.get("undone"):
        undone = "; nothing was pinned (undone on the workers that took it"
        if summary.get("undo_failed"):
            left = ", ".join(a["worker"] for a in summary["undo_failed"])
            undone += f", except {left}, which could not be reached: run unpin"
        undone += ")"
    if raise_on_refusal:
        for a in answers:
            if a.get("status") == 507:
                raise AlluxioError(
                    errno.ENOSPC, f"{op} refused by {a['worker']}: {a['error']}{undone}"
                )
            if a.get("status") == 409:
                raise AlluxioError(errno.EBUSY, f"{op} refused by {a['worker']}: {a['error']}")
            if a.get("status") == 403:
                raise PermissionError(errno.EACCES, a["error"], url)
    if answers and summary["failed"] == len(answers):
        reasons = "; ".join(f"{a['worker']}: {a['error']}" for a in answers)
        raise ConnectionError(f"{op} {url}: no worker answered ({reasons})")
    if raise_on_refusal and undone:
        reasons = "; ".join(f"{a['worker']}: {a['error']}" for a in answers if a.get("error"))
        raise ConnectionError(f"{op} {url}: {reasons}{undone}")
    return summary


# ------------------------------------------------------------------ the CLI


def add_parsers(sub: Any) -> None:
    """Add the ``pin``, ``unpin``, ``ttl`` and ``free`` subcommands to ``sub``."""
    pin = sub.add_parser(
        "pin",
        help="keep a path's cached pages from eviction (bounded by each worker's pin quota)",
        description="Pin PATH (a file or a prefix) on every worker: its cached pages, and "
        "those cached later, are never evicted. Refused when it would take a worker over "
        "its pin quota (--pin-quota of the worker).",
    )
    pin.add_argument("path")
    pin.add_argument(
        "--ttl",
        default=None,
        help="also expire the path's pages this long after they are cached (90s, 15m, 1h, 2d)",
    )
    pin.add_argument("--json", action="store_true", help="print every worker's answer as JSON")
    unpin = sub.add_parser(
        "unpin",
        help="remove the pins at or under a path",
        description="Remove the pins at or under PATH on every worker; the pages become "
        "evictable again.",
    )
    unpin.add_argument("path")
    unpin.add_argument("--json", action="store_true", help="print every worker's answer as JSON")
    ttl = sub.add_parser(
        "ttl",
        help="expire a path's cached pages a while after they are cached (no pin)",
        description="Set a TTL on PATH (a file or a prefix) on every worker: its pages "
        "are dropped DURATION after they were cached and read again from the UFS. "
        "A DURATION of 0 removes the TTL.",
    )
    ttl.add_argument("path")
    ttl.add_argument("duration", help="90s, 15m, 1h, 2d; 0 removes the TTL")
    ttl.add_argument("--json", action="store_true", help="print every worker's answer as JSON")
    free = sub.add_parser(
        "free",
        help="evict a path's cached pages now",
        description="Delete the cached pages of PATH on every worker now (metadata and the "
        "UFS are untouched). Pinned pages are refused unless --force.",
    )
    free.add_argument("path")
    free.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="every file under PATH (a directory or prefix), not only PATH itself",
    )
    free.add_argument("--force", action="store_true", help="also free pinned pages")
    free.add_argument("--json", action="store_true", help="print every worker's answer as JSON")


def _report(summary: dict[str, Any], line: str, as_json: bool) -> int:

    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print(line.format(pages=summary["pages"], size=human_size(summary["bytes"])))
        for a in summary["workers"]:
            if a.get("error"):
                print(f"  {a['worker']}: failed: {a['error']}")
    return 1 if summary["failed"] else 0


def run_cli(fs: Any, args: argparse.Namespace) -> int:
    """Run ``alluxiofs pin|unpin|ttl|free``; returns the exit code."""
    url, _ = fs._resolve(args.path)
    client = fs._client()
    try:
        if args.command == "pin":
            summary = run(client, "pin", url)
            code = _report(summary, f"pinned {url}: {{pages}} cached pages ({{size}})", args.json)
            if args.ttl is not None:
                secs = parse_duration(args.ttl)
                t = run(client, "ttl", url, seconds=secs)
                if not args.json:
                    print(f"ttl of {url}: {secs} s")
                code = code or (1 if t["failed"] else 0)
            return code
        if args.command == "ttl":
            try:
                secs = parse_duration(args.duration)
            except ValueError as e:
                print(f"alluxiofs ttl: {e}", file=sys.stderr)
                return 2
            summary = run(client, "ttl", url, seconds=secs)
            what = f"{secs} s" if secs else "removed"
            return _report(summary, f"ttl of {url}: {what}", args.json)
        if args.command == "unpin":
            summary = run(client, "unpin", url)
            return _report(summary, f"unpinned {url}: {{pages}} pages ({{size}})", args.json)
        summary = run(client, "free", url, recursive=args.recursive, force=args.force)
        code = _report(summary, f"freed {url}: {{pages}} pages ({{size}})", args.json)
        if not args.recursive and summary["pages"] == 0 and not args.json:
            print("(only PATH itself was freed: pass -r for everything under a directory)")
        return code
    except AlluxioError as e:
        print(f"alluxiofs {args.command}: {e.strerror or e}", file=sys.stderr)
        return 1
    except ConnectionError as e:
        print(f"alluxiofs {args.command}: {e}", file=sys.stderr)
        return 1
