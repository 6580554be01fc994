"""One grammar for sizes and durations: options, CLI flags and reports agree."""

from __future__ import annotations

import pytest
from alluxiofs.stats import parse_since
from alluxiofs.units import human_size, parse_seconds, parse_size, parse_whole_seconds


def test_sizes():
    assert [parse_size(v) for v in (0, 4096, "4096", "64KiB", "1MB", "1MiB", "1.5GiB", "2t")] == [
        0, 4096, 4096, 64 << 10, 1 << 20, 1 << 20, 3 << 29, 2 << 40,
    ]  # fmt: skip
    for bad in (-1, True, "", "1 parsec", "MiB", "1e3"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert [human_size(n) for n in (0, 1023, 1536, 5 << 30)] == ["0 B", "1023 B", "1.5 KiB",
                                                                 "5.0 GiB"]  # fmt: skip


def test_durations():
    cases = {"2": 2, 2.5: 2.5, "500ms": 0.5, "30s": 30, "2 sec": 2, "15m": 900, "15min": 900,
             "1h": 3600, "2d": 172800, "1w": 604800, "0": 0}  # fmt: skip
    assert {k: parse_seconds(k) for k in cases} == cases
    for bad in (-1, "-1s", True, "soon", "1y", "", "m"):
        with pytest.raises(ValueError):
            parse_seconds(bad)
    assert [parse_whole_seconds(v) for v in ("0", "400ms", "1.6s", "1h")] == [0, 1, 2, 3600]


def test_since_uses_the_same_durations():
    assert parse_since("90s", now=1000.0) == 910.0
    assert parse_since("15min", now=10_000.0) == 9100.0
    assert parse_since("500ms", now=10.0) == 9.5
    assert parse_since("@1234.5") == 1234.5
    with pytest.raises(ValueError, match="duration"):
        parse_since("yesterday")
