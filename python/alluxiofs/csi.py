"""``alluxiofs csi``: the Kubernetes CSI node plugin (Rust, ``alluxiofs_csi``).

kubelet talks to it over a Unix socket; each published volume becomes an
``alluxiofs mount --daemon`` at the pod's target path, unmounted when the volume
is unpublished. This module only parses the options, starts the server and
waits for SIGTERM/SIGINT::

    alluxiofs csi --endpoint unix:///csi/csi.sock --node-id "$NODE_NAME"
    alluxiofs --etcd-hosts etcd:2379 csi --endpoint unix:///csi/csi.sock --node-id n1

``--etcd-hosts`` / ``--worker-hosts`` (before ``csi``) are the cluster of volumes
whose attributes name none. Stopping the plugin leaves the mounts running. See
``docs/kubernetes.md`` for the volume attributes and the manifests.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from . import _alluxiofs, embedded

DRIVER_NAME = "csi.alluxiofs.io"


def _default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/alluxiofs-csi"
    return str(embedded.home() / "csi")


def add_parsers(sub: Any) -> None:
    """Add the ``csi`` subcommand to ``sub``."""
    c = sub.add_parser(
        "csi",
        help="run the Kubernetes CSI node plugin (volumes as alluxiofs mounts)",
        description="Serve the CSI v1 Identity and Node services on a Unix socket: "
        "NodePublishVolume mounts the volume's URL at the pod's target path with "
        "`alluxiofs mount --daemon`, NodeUnpublishVolume unmounts it. Runs until SIGTERM "
        "or Ctrl-C; the mounts outlive the plugin.",
    )
    c.add_argument(
        "--endpoint",
        default=os.environ.get("CSI_ENDPOINT", "unix:///csi/csi.sock"),
        help="the socket kubelet connects to (unix:///csi/csi.sock, or $CSI_ENDPOINT)",
    )
    c.add_argument(
        "--node-id",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="this node's name ($NODE_NAME, else the host name)",
    )
    c.add_argument("--driver-name", default=DRIVER_NAME, help=f"CSI driver name ({DRIVER_NAME})")
    c.add_argument(
        "--state-dir",
        default=_default_state_dir(),
        help="records of the mounts and their logs (/var/lib/alluxiofs-csi as root)",
    )
    c.add_argument(
        "--mount-timeout",
        type=int,
        default=120,
        help="seconds a mount may take before the publish fails (120)",
    )
    c.add_argument("--log-level", default="info", help="error, warn, info, debug (info)")


def run_cli(args: argparse.Namespace) -> int:
    """Run the plugin until a signal; returns the exit code."""
    _alluxiofs.init_logging(args.log_level)
    etcd = args.etcd_hosts or os.environ.get("ALLUXIOFS_ETCD_HOSTS") or None
    workers = args.worker_hosts or os.environ.get("ALLUXIOFS_WORKER_HOSTS") or None
    if etcd and workers:
        print(
            "alluxiofs csi: give either --etcd-hosts or --worker-hosts, not both", file=sys.stderr
        )
        return 2
    Path(args.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        server = _alluxiofs.csi_serve(
            args.endpoint,
            args.node_id,
            args.driver_name,
            args.state_dir,
            [sys.executable, "-m", "alluxiofs"],
            etcd_hosts=etcd,
            worker_hosts=workers,
            mount_timeout_s=max(1, args.mount_timeout),
        )
    except (OSError, ValueError) as e:
        print(f"alluxiofs csi: {e}", file=sys.stderr)
        return 1
    stop: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop.append(signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    try:
        while not stop:
            if server.wait(0.2):
                print("alluxiofs csi: the server ended", file=sys.stderr)
                return 1
        server.stop()
        server.wait(10.0)
    except OSError as e:
        print(f"alluxiofs csi: {e}", file=sys.stderr)
        return 1
    return 0
