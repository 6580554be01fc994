"""The ``alluxiofs`` command.

``alluxiofs worker ...`` runs the cache worker (the same program as the
standalone ``alluxiofs-worker`` binary, built into this package);
``alluxiofs version`` prints the version. ``alluxiofs worker --help`` lists
the worker's options.
"""

from __future__ import annotations

import sys

USAGE = """usage: alluxiofs <command> [options]

commands:
  worker    run a cache worker (alluxiofs worker --help for its options)
  version   print the alluxiofs version

The Python API: fsspec.filesystem("alluxiofs", worker_hosts=..., target_protocol=...)
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alluxiofs`` command; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    if cmd == "worker":
        from ._alluxiofs import run_worker

        try:
            run_worker(["alluxiofs worker", *rest])
        except RuntimeError as e:
            print(f"alluxiofs worker: {e}", file=sys.stderr)
            return 1
        return 0
    if cmd in ("version", "--version", "-V"):
        from ._alluxiofs import __version__

        print(f"alluxiofs {__version__}")
        return 0
    print(f"alluxiofs: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
