"""Preloading: ``fs.load(...)`` and the ``alluxiofs load`` command (see docs/load.md).

The work is done in Rust (``NativeClient.load``): list, group files by owner
worker, load in parallel. This module parses options, draws the progress bar
(on a terminal, or as one output updated in place in a Jupyter notebook) and
prints the summary.
"""

from __future__ import annotations

import html
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .units import human_size, parse_size


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
            f"bytes {human_size(done)}/{human_size(total)} {human_size(rate)}/s ETA {eta}"
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


def in_jupyter() -> bool:
    """Whether this runs in a Jupyter kernel. Its stderr is no terminal, so
    :class:`ProgressBar` would add a line to the cell's output every 2 s (and
    ``\\r`` redraws pile up in the saved notebook): an updated display is used there."""
    ipython = sys.modules.get("IPython")  # a kernel has imported it; never import it here
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    # ipykernel's shell (and the shells derived from it); the terminal IPython's
    # TerminalInteractiveShell keeps the terminal bar.
    return shell is not None and any(
        c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__
    )


class NotebookProgress(ProgressBar):
    """Progress of a load in a Jupyter notebook: one display output updated in
    place (an HTML ``<progress>`` bar with the :class:`ProgressBar` text, the
    text alone for plain-text front ends), ending with the summary."""

    def __init__(self, interval: float = 0.2) -> None:
        # No stream: only ProgressBar.line() is shared, which needs ``started``.
        self.started = time.monotonic()
        self.interval = interval
        self.last_update = 0.0
        self.handle: Any = None

    @staticmethod
    def _percent(p: dict[str, Any]) -> float | None:
        if not p["listed"]:
            return None
        total = p["bytes_total"]
        return 100.0 * p["bytes_done"] / total if total else 100.0

    def bundle(self, p: dict[str, Any], summary: dict[str, Any] | None = None) -> dict[str, str]:
        """The ``text/plain`` and ``text/html`` of snapshot ``p`` (and the summary at the end)."""
        text = self.line(p)
        pct = self._percent(p)
        value = "" if pct is None else f' value="{pct:.1f}"'
        body = (
            f'<progress max="100"{value} style="width:20em;vertical-align:middle"></progress> '
            f"<code>{html.escape(text)}</code>"
        )
        if summary is not None:
            done = format_summary(summary)
            text += "\n" + done
            body += f'<pre style="margin:0.3em 0 0 0">{html.escape(done)}</pre>'
        return {"text/plain": text, "text/html": f"<div>{body}</div>"}

    def _show(self, data: dict[str, str]) -> None:
        from IPython.display import display

        if self.handle is None:
            self.handle = display(data, raw=True, display_id=True)
        else:
            self.handle.update(data, raw=True)

    def __call__(self, p: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.handle is None or now - self.last_update >= self.interval:
            self.last_update = now
            self._show(self.bundle(p))

    def close(self, p: dict[str, Any] | None = None, summary: dict[str, Any] | None = None) -> None:
        """Draw the final state, with the summary of a load that finished."""
        if p is None and summary is not None:
            p = {
                "listed": True,
                "files_total": summary["files_total"],
                "files_done": summary["files_total"],
                "files_failed": summary["files_failed"],
                "bytes_total": summary["bytes_total"],
                "bytes_done": summary["bytes_total"],
                "bytes_loaded": summary["bytes_loaded"],
            }
        if p is not None:
            self._show(self.bundle(p, summary))


def format_summary(s: dict[str, Any]) -> str:
    """The human summary of a load result."""
    secs = s["seconds"]
    rate = s["bytes_loaded"] / secs if secs > 0 else 0.0
    lines = [
        f"files:   {s['files_total']} total, {s['files_loaded']} loaded, "
        f"{s['files_skipped']} skipped (already cached), {s['files_failed']} failed",
        f"bytes:   {human_size(s['bytes_loaded'])} loaded, "
        f"{human_size(s['bytes_skipped'])} skipped, "
        f"{human_size(s['bytes_total'])} total",
        f"time:    {secs:.2f}s ({human_size(rate)}/s from the UFS)",
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
    on stderr (ended when the load ends), or in a Jupyter notebook a
    :class:`NotebookProgress` ending with the summary; a callable is called as is."""
    if progress is not True:
        return client.load(url, progress=progress or None, **kwargs)
    notebook = NotebookProgress() if in_jupyter() else None
    bar = notebook or ProgressBar()
    last: dict[str, Any] = {}
    summary = None

    def draw(p: dict[str, Any]) -> None:
        last.update(p)
        bar(p)

    try:
        summary = client.load(url, progress=draw, **kwargs)
        return summary
    finally:
        if notebook is not None:
            notebook.close(last or None, summary)
        else:
            bar.close(last or None)
