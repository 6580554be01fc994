"""``alluxiofs mount`` and ``alluxiofs unmount``: the cache as a local directory.

The FUSE filesystem is Rust (``alluxiofs_fuse``, served from its own threads
with the GIL released): this module only resolves the connection like every
other command (``--worker-hosts``, ``--etcd-hosts``, ``--config``, else the
embedded worker), mounts, waits for a signal or an unmount, and unmounts::

    alluxiofs mount /mnt/train s3://bucket/train          # foreground; Ctrl-C unmounts
    alluxiofs mount --daemon /mnt/data s3://b/train val=s3://b/val
    alluxiofs mount --write /mnt/ckpt s3://bucket/checkpoints   # whole-file writes too
    alluxiofs unmount /mnt/data

A running mount writes its counters to a state file beside its log every second;
``alluxiofs cache stats`` shows the live ones (:func:`live_mounts`). See ``docs/fuse.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _alluxiofs, embedded


def add_parsers(sub: Any) -> None:
    """Add the ``mount`` and ``unmount`` subcommands to ``sub``."""
    m = sub.add_parser(
        "mount",
        help="mount UFS URLs as a local directory (FUSE; read-only unless --write)",
        description="Mount URL (or several: each becomes a directory of MOUNTPOINT, named "
        "by its last path segment or NAME=URL) at MOUNTPOINT. Reads go through the cache "
        "workers, and to the UFS for what no worker serves. Runs until Ctrl-C, SIGTERM or "
        "`alluxiofs unmount MOUNTPOINT`; a mount left by a killed daemon is recovered.",
    )
    m.add_argument("mountpoint")
    m.add_argument("urls", nargs="+", metavar="URL")
    m.add_argument("--daemon", action="store_true", help="run in the background; log to a file")
    m.add_argument(
        "--attr-timeout",
        type=float,
        default=60.0,
        help="seconds the kernel trusts attributes; a UFS change shows after this (60)",
    )
    m.add_argument(
        "--entry-timeout", type=float, default=60.0, help="seconds the kernel trusts names (60)"
    )
    m.add_argument(
        "--no-kernel-cache",
        action="store_true",
        help="drop file bytes from the kernel page cache at every open",
    )
    m.add_argument("--threads", type=int, default=16, help="FUSE request threads (16)")
    m.add_argument(
        "--readahead-kib",
        type=int,
        default=4096,
        help="the kernel's readahead for the mount, KiB (4096; its default is 128; needs root; "
        "0 keeps the default)",
    )
    m.add_argument("--allow-other", action="store_true", help="let other users use the mount")
    m.add_argument(
        "--no-fallback",
        action="store_true",
        help="never read the UFS directly: what no worker serves fails with EIO",
    )
    m.add_argument(
        "--write",
        action="store_true",
        help="allow writing new files whole and in order (through the workers' write-through "
        "path), unlink, mkdir, rmdir and rename; random writes and appends fail with ENOTSUP",
    )
    m.add_argument("--log-level", default="info", help="error, warn, info, debug (info)")
    m.add_argument("--log-file", default=None, help="with --daemon: where to log")
    u = sub.add_parser("unmount", help="unmount an alluxiofs mount (also one left by a crash)")
    u.add_argument("mountpoint")


def log_path(mountpoint: str) -> Path:
    """Where a daemon mounted at ``mountpoint`` logs (beside the embedded workers' logs)."""
    digest = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:12]
    d = embedded.home() / "mounts"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d / f"mount-{digest}.log"


def state_path(mountpoint: str) -> Path:
    """The state file of the mount at ``mountpoint`` (its counters, while it runs)."""
    return log_path(mountpoint).with_suffix(".json")


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


def live_mounts() -> list[dict[str, Any]]:
    """The mounts running on this machine under this user's cache home: mount point,
    URLs, pid, start time, whether writable, and their counters (a second old at most).
    State files of processes that are gone are removed."""
    d = embedded.home() / "mounts"
    out = []
    for f in sorted(d.glob("mount-*.json")) if d.is_dir() else []:
        try:
            state = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not embedded.pid_alive(int(state.get("pid", 0))):
            f.unlink(missing_ok=True)
            continue
        out.append(state)
    return out


def _daemonize(argv: list[str], args: argparse.Namespace) -> int:
    """Start this command again in the background without ``--daemon`` and wait until
    the mount answers (or the child fails: its log is shown)."""
    log = Path(args.log_file) if args.log_file else log_path(args.mountpoint)
    child_argv = [a for a in argv if a != "--daemon"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alluxiofs", *child_argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr)
            print(f"alluxiofs mount: the daemon exited ({proc.returncode})", file=sys.stderr)
            return 1
        if _alluxiofs.mount_state(args.mountpoint) == "mounted":
            print(f"alluxiofs mount: {args.mountpoint} mounted (pid {proc.pid}, log {log})")
            return 0
        time.sleep(0.05)
    print(f"alluxiofs mount: not mounted after 120 s; see {log}", file=sys.stderr)
    return 1


def run_cli(
    args: argparse.Namespace, argv: list[str], filesystem: Callable[[argparse.Namespace], Any]
) -> int:
    """Run ``mount`` or ``unmount``; returns the exit code."""
    if args.command == "unmount":
        try:
            was = _alluxiofs.unmount(args.mountpoint)
        except OSError as e:
            print(f"alluxiofs unmount: {e}", file=sys.stderr)
            return 1
        if not was:
            print(f"alluxiofs unmount: nothing is mounted at {args.mountpoint}", file=sys.stderr)
            return 1
        return 0
    if args.daemon:
        return _daemonize(argv, args)
    if not args.target_protocol:
        url = next(u.split("=", 1)[-1] for u in args.urls)
        args.target_protocol = url.split("://", 1)[0] if "://" in url else "file"
    _alluxiofs.init_logging(args.log_level)
    fs = filesystem(args)
    # The UFS fallback runs in this process: give it the credentials the
    # embedded worker would get, unless the environment already has them.
    for k, v in embedded.worker_env(fs.target_protocol or "", fs.target_options).items():
        os.environ.setdefault(k, v)
    stop: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop.append(signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    try:
        m = _alluxiofs.mount(
            fs._client(),
            args.mountpoint,
            args.urls,
            fallback=not args.no_fallback and fs.options.fallback,
            attr_timeout=args.attr_timeout,
            entry_timeout=args.entry_timeout,
            kernel_cache=not args.no_kernel_cache,
            threads=args.threads,
            allow_other=args.allow_other,
            write=args.write,
            readahead_kib=max(0, args.readahead_kib),
        )
    except (OSError, ValueError) as e:
        print(f"alluxiofs mount: {e}", file=sys.stderr)
        return 1
    mode = "read-write" if args.write else "read-only"
    print(f"alluxiofs mount: {args.mountpoint} mounted ({mode})", file=sys.stderr, flush=True)
    state = state_path(args.mountpoint)
    info = {
        "mountpoint": os.path.realpath(args.mountpoint),
        "urls": list(args.urls),
        "pid": os.getpid(),
        "started": time.time(),
        "write": bool(args.write),
    }
    try:
        while not stop and not m.wait(1.0):
            _write_state(state, {**info, "counters": m.counters()})
    finally:
        m.unmount()
        state.unlink(missing_ok=True)
    why = f"signal {signal.Signals(stop[0]).name}" if stop else "unmounted"
    counters = " ".join(f"{k}={v}" for k, v in m.counters().items())
    print(f"alluxiofs mount: {args.mountpoint} ended ({why}); {counters}", file=sys.stderr)
    return 0
