"""``alluxiofs doctor``: check the configuration and connectivity, say what is wrong.

The configuration is resolved exactly as the filesystem resolves it (flags,
``--config`` / ``$ALLUXIOFS_CONFIG``, ``ALLUXIOFS_*`` variables, defaults). Each
check prints ``OK`` or ``FAIL`` with a hint; the exit code is 1 when any check
failed:

* the configuration parses (and where each setting came from);
* with ``etcd_hosts``: etcd answers and workers are registered in the cluster;
* every worker answers ``/healthz``; versions, cluster names and page sizes agree
  with each other and with the client's ``page_size``;
* without hosts: the embedded local worker's status;
* with a path (``alluxiofs doctor s3://bucket/x``): a worker mount covers it, and a
  few bytes read through the cache equal the same bytes read directly from the UFS.
"""

from __future__ import annotations

import json
import os
from typing import Any


class Report:
    """Collects check results and prints them as they come."""

    def __init__(self) -> None:
        self.failures = 0

    def ok(self, what: str, detail: str = "") -> None:
        """A passed check."""
        print(f"OK    {what}" + (f": {detail}" if detail else ""))

    def fail(self, what: str, detail: str, hint: str) -> None:
        """A failed check, with what to do about it."""
        self.failures += 1
        print(f"FAIL  {what}: {detail}")
        print(f"      hint: {hint}")

    def info(self, what: str) -> None:
        """A line of context that is not a check."""
        print(f"      {what}")


def _covered(url: str, mounts: list[str]) -> bool:
    for m in mounts:
        base = m.rstrip("/")
        if url == base or url.startswith(base + "/"):
            return True
    return False


def _sources(args: Any) -> list[str]:
    out = []
    for flag in ("worker_hosts", "etcd_hosts", "cluster_name", "config", "target_protocol"):
        if getattr(args, flag, None):
            out.append(f"--{flag.replace('_', '-')}")
    import dataclasses

    from .config import ClientOptions

    names = {"ALLUXIOFS_CONFIG"} | {
        "ALLUXIOFS_" + f.name.upper() for f in dataclasses.fields(ClientOptions)
    }
    out += sorted(k for k in os.environ if k in names and os.environ[k])
    return out


def _check_workers(rep: Report, fs: Any, client: Any) -> list[dict[str, Any]]:
    healthy: list[dict[str, Any]] = []
    for w in client.workers():
        try:
            h = json.loads(client.get_text(w, "/healthz"))
        except (OSError, ValueError) as e:
            rep.fail(
                f"worker {w}",
                f"does not answer /healthz ({e})",
                "is the worker running and reachable from here? check the host, port "
                "and firewall (worker log: `alluxiofs worker` prints where it listens)",
            )
            continue
        if h.get("status") != "ok":
            rep.fail(
                f"worker {w}",
                f"status {h.get('status')!r}",
                "the worker is shutting down; restart it",
            )
            continue
        rep.ok(
            f"worker {w}",
            f"version {h.get('version')}, cluster {h.get('cluster')}, "
            f"page size {h.get('page_size')}, mounts {', '.join(h.get('mounts', []))}",
        )
        h["addr"] = w
        healthy.append(h)
    if not healthy:
        return healthy
    for key, what in (
        ("version", "versions"),
        ("cluster", "cluster names"),
        ("page_size", "page sizes"),
    ):
        values = {str(h.get(key)) for h in healthy}
        if len(values) > 1:
            detail = ", ".join(f"{h['addr']}={h.get(key)}" for h in healthy)
            rep.fail(
                f"workers agree on {what}",
                detail,
                f"run every worker with the same {key.replace('_', ' ')}",
            )
        else:
            rep.ok(f"workers agree on {what}", values.pop())
    sizes = {int(h.get("page_size", 0)) for h in healthy}
    if sizes and fs.options.page_size not in sizes:
        rep.fail(
            "client page size",
            f"{fs.options.page_size}, workers use {sorted(sizes)}",
            f"set page_size={sorted(sizes)[0]} (ALLUXIOFS_PAGE_SIZE or the config file)",
        )
    else:
        rep.ok("client page size", str(fs.options.page_size))
    return healthy


def _check_path(rep: Report, fs: Any, path: str, healthy: list[dict[str, Any]]) -> None:
    from . import _alluxiofs

    try:
        url = _alluxiofs.normalize_url(fs._resolve(path)[0])
    except (ValueError, OSError) as e:
        rep.fail(f"path {path}", str(e), "give a full URL such as s3://bucket/key")
        return
    if healthy:
        mounts = sorted({m for h in healthy for m in h.get("mounts", [])})
        if _covered(url, mounts):
            rep.ok("mounts cover the path", url)
        else:
            rep.fail(
                "mounts cover the path",
                f"{url} is under none of {mounts}",
                "start the workers with a --mount that contains this path",
            )
            return
    try:
        info = fs.info(path)
    except (OSError, ValueError) as e:
        rep.fail(f"info {path}", str(e), "check the path and the workers' UFS credentials")
        return
    if info["type"] != "file":
        rep.ok(f"info {path}", f"a directory with {len(fs.ls(path))} entries")
        return
    n = min(int(info["size"]), 4096)
    before = dict(fs._client().stats().get("fallbacks", {}))
    try:
        cached = fs.cat_file(path, 0, n)
    except (OSError, ValueError) as e:
        rep.fail("read through the cache", str(e), "see the worker log for the UFS error")
        return
    after = dict(fs._client().stats().get("fallbacks", {}))
    if after != before:
        rep.fail(
            "read through the cache",
            "no worker served it (read from the UFS instead)",
            "check the workers above and their UFS credentials",
        )
    else:
        rep.ok("read through the cache", f"{len(cached)} bytes")
    try:
        direct = fs.target_fs.cat_file(fs._target_path(url), start=0, end=n)
    except Exception as e:  # any target filesystem error is a finding, not a crash
        rep.fail(
            "read from the UFS directly",
            f"{type(e).__name__}: {e}",
            "check target_options / credentials of this client",
        )
        return
    if direct == cached:
        rep.ok("cache and UFS agree", f"first {n} bytes identical")
    else:
        rep.fail(
            "cache and UFS agree",
            f"first {n} bytes differ",
            f"invalidate the path (fs.invalidate_cache({path!r})) and report a bug",
        )


def run(args: Any, make_fs: Any) -> int:
    """Run the checks for the parsed command line ``args``; returns the exit code.

    ``make_fs(args)`` builds the filesystem as every other subcommand does."""
    rep = Report()
    try:
        fs = make_fs(args)
    except (OSError, ValueError, TypeError) as e:
        rep.fail(
            "configuration",
            str(e),
            "fix the option named above (flags, --config file or ALLUXIOFS_* variables)",
        )
        return 1
    o = fs.options
    mode = (
        ("etcd " + o.etcd_hosts)
        if o.etcd_hosts
        else (("workers " + o.worker_hosts) if o.worker_hosts else "embedded local worker")
    )
    rep.ok("configuration", f"{mode}; from {', '.join(_sources(args)) or 'defaults'}")
    if not (o.etcd_hosts or o.worker_hosts):
        from . import embedded

        running = embedded.running()
        if running:
            rep.ok(
                "embedded worker", ", ".join(f"{w.name} at {w.addr} (pid {w.pid})" for w in running)
            )
        else:
            rep.info(
                "no embedded worker is running: the filesystem starts one on first use "
                f"(state in {embedded.home()})"
            )
        if not args.path:
            return 1 if rep.failures else 0
    try:
        client = fs._client()
        workers = client.workers()
    except (OSError, ValueError) as e:
        if o.etcd_hosts:
            rep.fail(
                "etcd",
                str(e),
                f"is etcd running at {o.etcd_hosts}? check --etcd-hosts / "
                "ALLUXIOFS_ETCD_HOSTS and the etcd user/password",
            )
        else:
            rep.fail("client", str(e), "check --worker-hosts / ALLUXIOFS_WORKER_HOSTS")
        return 1
    if o.etcd_hosts:
        if workers:
            rep.ok("etcd", f"{len(workers)} workers registered in cluster {o.cluster_name}")
        else:
            rep.fail(
                "etcd",
                f"no workers registered in cluster {o.cluster_name!r}",
                "start workers with --etcd and the same --cluster-name",
            )
    healthy = _check_workers(rep, fs, client)
    if args.path:
        _check_path(rep, fs, args.path, healthy)
    print(f"{rep.failures} problem(s) found" if rep.failures else "all checks passed")
    return 1 if rep.failures else 0
