"""The ``alluxiofs`` command.

``alluxiofs worker ...`` runs the cache worker (the same program as the
standalone ``alluxiofs-worker`` binary, built into this package). The other
commands talk to a cluster with the same connection options as the Python
filesystem (``--worker-hosts``, ``--etcd-hosts``, ``--config``, and the
matching ``ALLUXIOFS_*`` environment variables), so a shell and a notebook
configured alike see the same cache::

    alluxiofs --etcd-hosts etcd:2379 ls s3://bucket/train/
    alluxiofs --worker-hosts w1:28080,w2:28080 cluster status
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .units import human_size


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alluxiofs",
        description="alluxiofs: a distributed cache for ML data on object storage.",
        epilog="`alluxiofs worker --help` lists the cache worker's options.",
    )
    conn = p.add_argument_group("connection (default: ALLUXIOFS_* environment variables)")
    conn.add_argument("--worker-hosts", help="host[:port],... of the cache workers")
    conn.add_argument("--etcd-hosts", help="host[:port],... of etcd (find the workers there)")
    conn.add_argument("--cluster-name", help="cluster name in etcd (DefaultAlluxioCluster)")
    conn.add_argument("--config", help="YAML file of client options")
    conn.add_argument("--target-protocol", help="UFS protocol when paths have no scheme")
    conn.add_argument("--tls-ca", help="PEM CA bundle of the workers' certificates (HTTPS)")
    conn.add_argument("--tls-cert", help="PEM client certificate for workers that require one")
    conn.add_argument("--tls-key", help="PEM private key of --tls-cert")
    conn.add_argument(
        "--no-tls-verify", action="store_true", help="do not check worker certificates (testing)"
    )
    sub = p.add_subparsers(dest="command", metavar="command")
    sub.add_parser("worker", help="run a cache worker (alluxiofs worker --help)", add_help=False)
    sub.add_parser("version", help="print the version")
    ls = sub.add_parser("ls", help="list a directory")
    ls.add_argument("path")
    ls.add_argument("-l", "--long", action="store_true", help="sizes, times and cache share")
    st = sub.add_parser("stat", help="metadata of a path (JSON)")
    st.add_argument("path")
    cat = sub.add_parser("cat", help="write a file's bytes to standard output")
    cat.add_argument("path")
    cat.add_argument("--offset", type=int, default=None, help="first byte (negative: from the end)")
    cat.add_argument("--length", type=int, default=None, help="number of bytes")
    get = sub.add_parser("get", help="copy a file or directory to local disk")
    get.add_argument("path")
    get.add_argument("local")
    get.add_argument("-r", "--recursive", action="store_true")
    cluster = sub.add_parser("cluster", help="cluster commands")
    csub = cluster.add_subparsers(dest="cluster_command", metavar="command")
    csub.add_parser("status", help="every worker: address, state, used/capacity, hit ratio")
    cache = sub.add_parser("cache", help="cache commands")
    ksub = cache.add_subparsers(dest="cache_command", metavar="command")
    stats = ksub.add_parser("stats", help="hits, misses, UFS requests and bytes saved")
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.add_argument(
        "--since",
        help="only what happened since then: 30m, 2h, 1d, an ISO time (2026-11-22T07:00) "
        "or @<unix seconds>; shows UFS requests and bytes saved by the cache",
    )
    doctor = sub.add_parser(
        "doctor",
        help="check the configuration and connectivity and say what is wrong",
        description="Check the configuration (resolved like the filesystem's), etcd, every "
        "worker's health and agreement, the embedded worker, and with PATH that a mount "
        "covers it and that bytes read through the cache equal the UFS's. Exit 1 on a failure.",
    )
    doctor.add_argument("path", nargs="?", help="a UFS path to read a few bytes of")
    from .manage import add_parsers as _add_manage_parsers

    _add_manage_parsers(sub)
    from .mount import add_parsers as _add_mount_parsers

    _add_mount_parsers(sub)
    from .csi import add_parsers as _add_csi_parsers

    _add_csi_parsers(sub)
    load = sub.add_parser("load", help="warm the cache with a file or a whole prefix")
    load.add_argument("path")
    load.add_argument("--replicas", type=int, default=1, help="workers per file (1)")
    load.add_argument("--concurrency", type=int, default=4, help="requests per worker (4)")
    load.add_argument("--bandwidth", default=None, help="limit for the whole load, e.g. 200MB/s")
    load.add_argument("--no-recursive", action="store_true", help="only the files directly in PATH")
    load.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    load.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def _filesystem(args: argparse.Namespace) -> Any:
    from .core import AlluxioFileSystem

    kwargs: dict[str, Any] = {"skip_instance_cache": True}
    if args.worker_hosts:
        kwargs["worker_hosts"] = args.worker_hosts
    if args.etcd_hosts:
        kwargs["etcd_hosts"] = args.etcd_hosts
    if args.cluster_name:
        kwargs["cluster_name"] = args.cluster_name
    if args.config:
        kwargs["config_file"] = args.config
    for name in ("tls_ca", "tls_cert", "tls_key"):
        if getattr(args, name):
            kwargs[name] = getattr(args, name)
    if args.no_tls_verify:
        kwargs["tls"] = True
        kwargs["tls_verify"] = False
    if args.target_protocol:
        kwargs["target_protocol"] = args.target_protocol
    elif "://" in str(getattr(args, "path", "")):
        # fsspec strips schemes before some methods (get) reach us: take the
        # protocol from the path given on the command line.
        kwargs["target_protocol"] = args.path.split("://", 1)[0]
    fs = AlluxioFileSystem(**kwargs)
    if not (fs.options.worker_hosts or fs.options.etcd_hosts) and args.command in (
        "cluster",
        "cache",
    ):
        raise SystemExit(
            "alluxiofs: no cluster given: pass --worker-hosts or --etcd-hosts "
            "(or set ALLUXIOFS_WORKER_HOSTS / ALLUXIOFS_ETCD_HOSTS)"
        )
    return fs


def _cmd_ls(fs: Any, args: argparse.Namespace) -> None:
    for e in fs.ls(args.path, detail=True):
        if not args.long:
            print(e["name"] + ("/" if e["type"] == "directory" else ""))
            continue
        import datetime

        mtime = e.get("mtime")
        when = (
            datetime.datetime.fromtimestamp(mtime, datetime.UTC).strftime("%Y-%m-%d %H:%M")
            if mtime
            else "-"
        )
        kind = "d" if e["type"] == "directory" else "-"
        cached = f"{e.get('cached_percent', 0):>3}%" if e["type"] == "file" else "    "
        print(f"{kind} {human_size(e['size']):>10} {when:>16} {cached} {e['name']}")


def _cmd_cat(fs: Any, args: argparse.Namespace) -> None:
    start = args.offset
    end = None
    if args.length is not None:
        if args.length < 0:
            raise ValueError("--length must not be negative")
        if start is None:
            start = 0
        if start >= 0:
            end = start + args.length
        else:
            end = start + args.length if start + args.length < 0 else None
    data = fs.cat_file(args.path, start, end)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _worker_rows(fs: Any) -> list[dict[str, Any]]:
    client = fs._client()
    rows = []
    for w in fs.workers():
        row: dict[str, Any] = {"worker": w, "state": "down"}
        try:
            health = json.loads(client.get_text(w, "/healthz"))
            row["state"] = health.get("status", "?")
            row["registration"] = health.get("registration")
            row["worker_id"] = health.get("worker_id")
            from .core import parse_prometheus

            row["metrics"] = parse_prometheus(client.get_text(w, "/metrics"))
        except (OSError, ValueError):
            row["metrics"] = {}
        rows.append(row)
    return rows


def _ratio(hits: float, misses: float) -> str:
    total = hits + misses
    return f"{100 * hits / total:.1f}%" if total else "-"


def _cmd_cluster_status(fs: Any) -> int:
    rows = _worker_rows(fs)
    print(f"{'worker':<24} {'state':<12} {'used':>11} {'capacity':>11} {'hit ratio':>9}")
    for r in rows:
        m = r["metrics"]
        used = human_size(m.get("alluxiofs_cache_used_bytes", 0)) if m else "-"
        cap = human_size(m.get("alluxiofs_cache_capacity_bytes", 0)) if m else "-"
        hit = _ratio(
            m.get("alluxiofs_cache_hits_total", 0), m.get("alluxiofs_cache_misses_total", 0)
        )
        print(f"{r['worker']:<24} {r['state']:<12} {used:>11} {cap:>11} {hit:>9}")
    down = sum(1 for r in rows if r["state"] != "ok")
    print(f"{len(rows)} workers, {len(rows) - down} ok, {down} not ok")
    return 1 if down else 0


_STAT_KEYS = {
    "hits": "alluxiofs_cache_hits_total",
    "misses": "alluxiofs_cache_misses_total",
    "bytes_served": "alluxiofs_bytes_served_total",
    "ufs_requests": "alluxiofs_ufs_requests_total",
    "ufs_bytes": "alluxiofs_ufs_bytes_total",
    "used_bytes": "alluxiofs_cache_used_bytes",
    "capacity_bytes": "alluxiofs_cache_capacity_bytes",
    "evictions": "alluxiofs_cache_evictions_total",
}


def _print_mounts(mounts: list[dict[str, Any]]) -> None:
    """One line per live ``alluxiofs mount`` of this machine (its counters)."""
    for m in mounts:
        c = m["counters"]
        print(f"mount {m['mountpoint']} (pid {m['pid']}{', writable' if m['write'] else ''}): "
              f"{c['opens']} opens, {c['reads']} reads, {human_size(c['read_bytes'])} read "
              f"({human_size(c['ufs_bytes'])} from the UFS), {c['read_errors']} read errors, "
              f"{c['writes_done']} files written ({human_size(c['write_bytes'])}), "
              f"{c['changes']} changes")  # fmt: skip


def _cmd_cache_stats(fs: Any, args: argparse.Namespace) -> None:
    if getattr(args, "since", None):
        from .mount import live_mounts
        from .stats import cache_window, parse_since, print_report

        window = cache_window(fs, parse_since(args.since))
        mounts = live_mounts()
        if args.json:
            print(json.dumps({**window, "mounts": mounts}, indent=2))
        else:
            print_report(window)
            _print_mounts(mounts)
        return
    rows = _worker_rows(fs)
    total = {k: 0.0 for k in _STAT_KEYS}
    per = {}
    for r in rows:
        vals = {k: r["metrics"].get(name, 0.0) for k, name in _STAT_KEYS.items()}
        per[r["worker"]] = vals
        for k, v in vals.items():
            total[k] += v
    # Bytes the workers served that they did not have to fetch from the UFS
    # themselves: what the cache saved the object store.
    total["ufs_bytes_saved"] = max(0.0, total["bytes_served"] - total["ufs_bytes"])
    from .mount import live_mounts

    mounts = live_mounts()
    if args.json:
        print(json.dumps({"total": total, "workers": per, "mounts": mounts}, indent=2))
        return
    print(f"workers:          {len(rows)}")
    print(f"page hits:        {total['hits']:.0f} ({_ratio(total['hits'], total['misses'])})")
    print(f"page misses:      {total['misses']:.0f}")
    print(f"served:           {human_size(total['bytes_served'])}")
    print(f"UFS requests:     {total['ufs_requests']:.0f}")
    print(f"UFS bytes:        {human_size(total['ufs_bytes'])}")
    print(f"UFS bytes saved:  {human_size(total['ufs_bytes_saved'])}")
    print(f"used / capacity:  {human_size(total['used_bytes'])} / "
          f"{human_size(total['capacity_bytes'])}")  # fmt: skip
    print(f"evictions:        {total['evictions']:.0f}")
    _print_mounts(mounts)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alluxiofs`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `alluxiofs worker ...` hands everything after `worker` to the worker's
    # own parser (it has its own --help and options).
    if argv and argv[0] == "worker":
        from ._alluxiofs import run_worker

        try:
            run_worker(["alluxiofs worker", *argv[1:]])
        except RuntimeError as e:
            print(f"alluxiofs worker: {e}", file=sys.stderr)
            return 1
        return 0
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "version":
        from ._alluxiofs import __version__

        print(f"alluxiofs {__version__}")
        return 0
    if args.command == "doctor":
        from .doctor import run

        return run(args, _filesystem)
    if args.command in ("mount", "unmount"):
        from .mount import run_cli as _mount_cli

        return _mount_cli(args, argv, _filesystem)
    if args.command == "csi":
        from .csi import run_cli as _csi_cli

        return _csi_cli(args)
    try:
        fs = _filesystem(args)
        if args.command == "ls":
            _cmd_ls(fs, args)
        elif args.command == "stat":
            print(json.dumps(fs.info(args.path), indent=2, default=str))
        elif args.command == "cat":
            _cmd_cat(fs, args)
        elif args.command == "get":
            fs.get(args.path, args.local, recursive=args.recursive)
        elif args.command == "cluster":
            if args.cluster_command != "status":
                parser.parse_args(["cluster", "--help"])
            return _cmd_cluster_status(fs)
        elif args.command in ("pin", "unpin", "ttl", "free"):
            from .manage import run_cli as _manage_cli

            return _manage_cli(fs, args)
        elif args.command == "load":
            from .load import run_cli as _load_cli

            return _load_cli(fs, args)
        elif args.command == "cache":
            if args.cache_command != "stats":
                parser.parse_args(["cache", "--help"])
            _cmd_cache_stats(fs, args)
    except BrokenPipeError:  # e.g. `alluxiofs cat ... | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except FileNotFoundError as e:
        print(f"alluxiofs {args.command}: not found: {e.filename or e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"alluxiofs {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
