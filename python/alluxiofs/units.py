"""Sizes and durations as people write them, in one place.

Every option, CLI flag and report reads and prints sizes and durations
through these functions, so ``64KiB``, ``1MB`` (= MiB, as in Alluxio), ``30s``,
``15m`` or ``2d`` mean the same everywhere.
"""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_HUMAN_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_SECONDS = {
    "": 1.0,
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}


def parse_size(value: int | str) -> int:
    """``1048576``, ``64KiB``, ``1MiB``, ``10GiB`` or ``1MB`` (MB = MiB, as in Alluxio) → bytes."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative: {value}")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 1048576, 64KiB, 1MiB, 10GiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def human_size(n: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in _HUMAN_UNITS:
        if abs(n) < 1024 or unit == _HUMAN_UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - unreachable


def parse_seconds(value: float | int | str) -> float:
    """``2``, ``2.5``, ``500ms``, ``30s``, ``15m``, ``1h``, ``2d``, ``1w`` → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        secs = float(value)
    else:
        m = _DURATION_RE.match(str(value))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _SECONDS:
            raise ValueError(f"not a duration: {value!r} (use e.g. 2, 500ms, 30s, 15m, 1h, 2d)")
        secs = float(m.group(1)) * _SECONDS[unit]
    if secs < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    return secs


def parse_whole_seconds(value: float | int | str) -> int:
    """A duration in whole seconds, at least 1 unless it is 0 (TTLs)."""
    secs = parse_seconds(value)
    return 0 if secs == 0 else max(1, round(secs))
