"""Draw a soak's resident memory over time as an SVG (no plotting library).

    python scripts/soak_chart.py target/soak-report.json docs/img/soak-rss.svg

One line per worker and lifetime (a SIGKILLed worker's line ends; its
restart starts a new one), RSS in MiB against seconds since the soak began,
from the samples ``scripts/soak.py --json`` writes; grey ticks at the top mark
the kills and restarts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MiB = 1 << 20
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 320, 60, 110, 30, 40


def lifetimes(report: dict[str, Any]) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """(worker, generation) -> [(seconds, RSS MiB)] from the report's samples."""
    lines: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for row in report["samples"]:
        for w in row["workers"]:
            if w.get("alive") and "rss" in w:
                lines.setdefault((w["name"], w["gen"]), []).append((row["t"], w["rss"] / MiB))
    return lines


def svg(report: dict[str, Any]) -> str:
    """The chart of ``report`` as SVG text."""
    lines = lifetimes(report)
    if not lines:
        raise ValueError("the report has no RSS samples")
    t_max = max(t for pts in lines.values() for t, _ in pts) or 1.0
    r_max = max(r for pts in lines.values() for _, r in pts) * 1.1 or 1.0
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + pw * t / t_max

    def y(r: float) -> float:
        return TOP + ph * (1 - r / r_max)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="13">Worker RSS during the soak (MiB; a line per '
        "worker lifetime)</text>",
    ]
    for i in range(6):
        r = r_max * i / 5
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(r):.1f}" y2="{y(r):.1f}" '
                   'stroke="#ddd"/>')  # fmt: skip
        out.append(f'<text x="{LEFT - 6}" y="{y(r) + 4:.1f}" text-anchor="end">{r:.0f}</text>')
    step = 60 if t_max > 240 else 10
    for t in range(0, int(t_max) + 1, step):
        out.append(f'<text x="{x(t):.1f}" y="{TOP + ph + 16}" text-anchor="middle">{t}</text>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 6}" text-anchor="middle">seconds</text>')
    for t, what in report.get("events", []):
        if what.startswith(("SIGKILL", "restarted")):
            out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP}" '
                       f'y2="{TOP + 6}" stroke="#999"/>')  # fmt: skip
    names = sorted({name for name, _ in lines})
    for (name, _gen), pts in sorted(lines.items()):
        color = COLORS[names.index(name) % len(COLORS)]
        path = " ".join(f"{x(t):.1f},{y(r):.1f}" for t, r in pts)
        out.append(f'<polyline class="rss {name}" fill="none" stroke="{color}" '
                   f'stroke-width="1.5" points="{path}"/>')  # fmt: skip
    for i, name in enumerate(names):
        color = COLORS[i % len(COLORS)]
        yy = TOP + 14 * i + 8
        out.append(f'<line x1="{W - RIGHT + 12}" x2="{W - RIGHT + 32}" y1="{yy}" y2="{yy}" '
                   f'stroke="{color}" stroke-width="2"/>')  # fmt: skip
        out.append(f'<text x="{W - RIGHT + 38}" y="{yy + 4}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    report = json.loads(Path(argv[0]).read_text())
    Path(argv[1]).write_text(svg(report))
    print(f"wrote {argv[1]}: {len(lifetimes(report))} worker lifetimes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
