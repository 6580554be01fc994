"""Client-side counters of one filesystem instance (part of ``fs.stats()``).

The native client counts what it does itself (bytes and requests served by
the workers, retries, fallbacks per worker); these count what the Python layer
does on top: reads served by the target filesystem, write-throughs and their
fallbacks. Thread safe: fsspec shares one instance between threads.
"""

from __future__ import annotations

import copy
import threading


class Counters:
    """Named counters, each a plain total or a total per key (e.g. per worker)."""

    def __init__(self, *names: str, per_key: tuple[str, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int | dict[str, int]] = dict.fromkeys(names, 0)
        for name in per_key:
            self._values[name] = {}

    def add(self, name: str, n: int = 1, key: str | None = None) -> None:
        """Add ``n`` to ``name`` (to its total for ``key`` when given)."""
        with self._lock:
            if key is None:
                self._values[name] = int(self._values.get(name, 0)) + n  # type: ignore[arg-type]
            else:
                per = self._values.setdefault(name, {})
                assert isinstance(per, dict), f"counter {name} has no keys"
                per[key] = per.get(key, 0) + n

    def snapshot(self) -> dict[str, int | dict[str, int]]:
        """A copy of every counter, safe to hand out."""
        with self._lock:
            return copy.deepcopy(self._values)
