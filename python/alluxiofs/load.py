"""Preloading: ``fs.load(...)`` and the ``alluxiofs load`` command (see docs/load.md).

The work is done in Rust (``NativeClient.load``): list, group files by owner
worker, load in parallel. This module parses options, draws the progress bar
and prints the summary.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .config import parse_size


def parse_bandwidth(value: int | str | None) -> int | None:
    """``200MB/s``, ``200MiB``, ``1048576`` → bytes per second; ``None``/0 → unlimited."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if value.lower().endswith("/s"):
            value = value[:-2]
    n = parse_size(value)
    return n or None


def _human(n: float) -> str:
    from .cli import human_size

    return human_size(n)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class ProgressBar:
    """Progress of a load on ``stream``: one line redrawn with ``\\r`` on a
    terminal, else a line every ``interval`` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float = 2.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self.started = time.monotonic()
        self.last_line = 0.0
        self.last_text = ""
        self.width = 0

    def line(self, p: dict[str, Any]) -> str:
        """The progress text of snapshot ``p``."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done, total = p["bytes_done"], p["bytes_total"]
        rate = p["bytes_loaded"] / elapsed
        if not p["listed"]:
            return f"listing... {_duration(elapsed)}"
        pct = 100.0 * done / total if total else 100.0
        fill = int(pct / 5)
        bar = "#" * fill + "-" * (20 - fill)
        # ETA from the rate of all bytes finished (cached ones are fast).
        speed = done / elapsed
        eta = _duration((total - done) / speed) if speed > 0 and done < total else "-"
        text = (
            f"[{bar}] {pct:5.1f}% files {p['files_done']}/{p['files_total']} "
            f"bytes {_human(done)}/{_human(total)} {_human(rate)}/s ETA {eta}"
        )
        if p["files_failed"]:
            text += f" failed {p['files_failed']}"
        return text

    def __call__(self, p: dict[str, Any]) -> None:
        now = time.monotonic()
        text = self.line(p)
        if self.tty:
            pad = max(0, self.width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.width = len(text)
            self.stream.flush()
        elif now - self.last_line >= self.interval:
            self.last_line = now
            self.last_text = text
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self, p: dict[str, Any] | None = None) -> None:
        """Draw the final state and end the line."""
        if p is not None:
            text = self.line(p)
            if self.tty:
                self.stream.write("\r" + text + "\n")
            elif text != self.last_text:
                self.stream.write(text + "\n")
        elif self.tty and self.width:
            self.stream.write("\n")
        self.stream.flush()


def format_summary(s: dict[str, Any]) -> str:
    """The human summary of a load result."""
    secs = s["seconds"]
    rate = s["bytes_loaded"] / secs if secs > 0 else 0.0
    lines = [
        f"files:   {s['files_total']} total, {s['files_loaded']} loaded, "
        f"{s['files_skipped']} skipped (already cached), {s['files_failed']} failed",
        f"bytes:   {_human(s['bytes_loaded'])} loaded, {_human(s['bytes_skipped'])} skipped, "
        f"{_human(s['bytes_total'])} total",
        f"time:    {secs:.2f}s ({_human(rate)}/s from the UFS)",
    ]
    if s.get("cancelled"):
        lines.append("stopped before the end")
    for f in s["failures"]:
        lines.append(f"failed:  {f['path']}: {f['reason']}")
    return "\n".join(lines)


def run_cli(fs: Any, args: Any, stderr: TextIO | None = None) -> int:
    """``alluxiofs load``: load with a progress bar, print the summary;
    exit code 1 when any file failed."""
    stderr = stderr or sys.stderr
    bar = None if args.no_progress else ProgressBar(stderr)
    last: dict[str, Any] = {}

    def progress(p: dict[str, Any]) -> None:
        last.update(p)
        if bar is not None:
            bar(p)

    try:
        summary = fs.load(
            args.path,
            recursive=not args.no_recursive,
            replicas=args.replicas,
            concurrency=args.concurrency,
            bandwidth=args.bandwidth,
            progress=progress,
        )
    except KeyboardInterrupt:
        print(
            "alluxiofs load: interrupted; run it again to resume (cached pages are skipped)",
            file=stderr,
        )
        return 130
    finally:
        if bar is not None:
            bar.close(last or None)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 1 if summary["files_failed"] else 0


def run(
    client: Any,
    url: str,
    progress: Callable[[dict[str, Any]], Any] | bool | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``client.load(url, ...)``; ``progress=True`` draws a :class:`ProgressBar`
    on stderr (ended when the load ends), a callable is called as is."""
    if progress is not True:
        return client.load(url, progress=progress or None, **kwargs)
    bar = ProgressBar()
    last: dict[str, Any] = {}

    def draw(p: dict[str, Any]) -> None:
        last.update(p)
        bar(p)

    try:
        return client.load(url, progress=draw, **kwargs)
    finally:
        bar.close(last or None)
