"""``alluxiofs csi``: the CSI node plugin driven over its Unix socket, as kubelet does.

A real plugin process serves the socket; a gRPC client built here from the
plugin's own ``crates/csi/proto/csi.proto`` calls it. Published volumes are
real FUSE mounts (``alluxiofs mount --daemon``) over a real worker reading a
``file://`` tree, and what the target path shows is compared with that tree.
Every mount and process is stopped when a test ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import alluxiofs
import grpc
import pytest
from alluxiofs import _alluxiofs

REPO = Path(__file__).resolve().parent.parent


def _tree(root: Path) -> Path:
    (root / "train" / "a").mkdir(parents=True)
    for i in range(20):
        (root / "train" / "a" / f"img{i:03d}.bin").write_bytes(os.urandom(1000 + 997 * i))
    (root / "train" / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (root / "train" / "labels.txt").write_text("".join(f"{i}\n" for i in range(100)))
    return root


def _digest(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Plugin:
    """A running ``alluxiofs csi`` process and a client of its socket."""

    def __init__(self, pb: tuple[ModuleType, ModuleType], sock: Path, state: Path, log: Path):
        self.pb2, self.grpc = pb
        self.sock, self.state, self.log = sock, state, log
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.start()

    def start(self, extra: tuple[str, ...] = ()) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "alluxiofs",
                    *extra,
                    "csi",
                    "--endpoint",
                    f"unix://{self.sock}",
                    "--node-id",
                    "test-node",
                    "--state-dir",
                    str(self.state),
                ],
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"the plugin exited:\n{self.log.read_text()[-3000:]}"
            if self.sock.exists():
                # grpc-core would send the socket path, percent-encoded, as
                # :authority, which the HTTP/2 server refuses; kubelet (grpc-go)
                # sends "localhost", as this does.
                self.channel = grpc.insecure_channel(
                    f"unix://{self.sock}", options=[("grpc.default_authority", "localhost")]
                )
                try:
                    grpc.channel_ready_future(self.channel).result(timeout=5)
                    break
                except grpc.FutureTimeoutError:
                    self.channel.close()
            assert time.monotonic() < deadline, self.log.read_text()[-3000:]
            time.sleep(0.05)
        self.identity = self.grpc.IdentityStub(self.channel)
        self.node = self.grpc.NodeStub(self.channel)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.channel is not None:
            self.channel.close()
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def capability(self, block: bool = False, mode: str = "MULTI_NODE_READER_ONLY") -> Any:
        vc = self.pb2.VolumeCapability
        access = vc.AccessMode(mode=getattr(vc.AccessMode, mode))
        if block:
            return vc(block=vc.BlockVolume(), access_mode=access)
        return vc(mount=vc.MountVolume(), access_mode=access)

    def publish(
        self,
        volume_id: str,
        target: Path | str,
        attrs: dict[str, str],
        secrets: dict[str, str] | None = None,
        readonly: bool = False,
        capability: Any = "default",
    ) -> Any:
        req = self.pb2.NodePublishVolumeRequest(
            volume_id=volume_id,
            target_path=str(target),
            readonly=readonly,
            volume_context=attrs,
            secrets=secrets or {},
        )
        cap = self.capability() if capability == "default" else capability
        if cap is not None:
            req.volume_capability.CopyFrom(cap)
        return self.node.NodePublishVolume(req, timeout=150)

    def unpublish(self, volume_id: str, target: Path | str) -> Any:
        req = self.pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=str(target))
        return self.node.NodeUnpublishVolume(req, timeout=60)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.state / "volumes").glob("*.json"))]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@pytest.fixture
def ufs(tmp_path: Path) -> Path:
    return _tree(tmp_path / "ufs")


@pytest.fixture
def plugin(csi_pb, tmp_path: Path) -> Iterator[Plugin]:
    # A short socket path: Unix socket names are limited to 107 bytes.
    sock_dir = Path(tempfile.mkdtemp(prefix="csi-", dir="/tmp"))
    p = Plugin(csi_pb, sock_dir / "csi.sock", tmp_path / "state", tmp_path / "plugin.log")
    try:
        yield p
    finally:
        p.stop()
        # Whatever is still mounted under this test's directory goes, with its daemon.
        for r in p.records():
            if _alluxiofs.mount_state(r["target"]) != "none":
                _alluxiofs.unmount(r["target"])
            if r.get("pid") and _pid_alive(r["pid"]):
                os.kill(r["pid"], signal.SIGKILL)
        for line in Path("/proc/self/mounts").read_text().splitlines():
            mp = line.split()[1].replace("\\040", " ")
            if mp.startswith(str(tmp_path)):
                with contextlib.suppress(OSError):
                    _alluxiofs.unmount(mp)
        shutil.rmtree(sock_dir, ignore_errors=True)


def _target(tmp_path: Path, name: str = "vol") -> Path:
    # kubelet creates the pod's volume directory; the plugin creates the target in it.
    parent = tmp_path / "pods" / "uid-1" / "volumes" / "kubernetes.io~csi" / name
    parent.mkdir(parents=True, exist_ok=True)
    return parent / "mount"


def test_identity_and_node_info(plugin):
    pb2 = plugin.pb2
    info = plugin.identity.GetPluginInfo(pb2.GetPluginInfoRequest())
    assert (info.name, info.vendor_version) == ("csi.alluxiofs.io", alluxiofs.__version__)
    assert plugin.identity.Probe(pb2.ProbeRequest()).ready.value is True
    # Node service only: no controller capability, no staging.
    assert (
        list(plugin.identity.GetPluginCapabilities(pb2.GetPluginCapabilitiesRequest()).capabilities)
        == []
    )
    assert (
        list(plugin.node.NodeGetCapabilities(pb2.NodeGetCapabilitiesRequest()).capabilities) == []
    )
    assert plugin.node.NodeGetInfo(pb2.NodeGetInfoRequest()).node_id == "test-node"
    # A call the plugin does not offer answers UNIMPLEMENTED (an empty request body).
    stage = plugin.channel.unary_unary("/csi.v1.Node/NodeStageVolume")
    with pytest.raises(grpc.RpcError) as e:
        stage(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_publish_twice_read_unpublish_twice(plugin, start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    target = _target(tmp_path)
    attrs = {
        "url": f"file://{ufs}/train",
        "workerHosts": w.addr,
        "attrTimeout": "5",
        "csi.storage.k8s.io/pod.name": "trainer-0",
        "csi.storage.k8s.io/ephemeral": "false",
    }
    plugin.publish("vol-1", target, attrs)
    assert _alluxiofs.mount_state(str(target)) == "mounted"
    first = plugin.records()
    assert [r["volume_id"] for r in first] == ["vol-1"] and first[0]["pid"] > 0
    # The same publish again (kubelet retries): OK, the same daemon.
    plugin.publish("vol-1", target, attrs)
    assert plugin.records() == first
    assert _digest(target) == _digest(ufs / "train")
    # Read-only unless the volume asks for writes.
    with pytest.raises(OSError):
        (target / "new.txt").write_text("x")
    # Another volume, or this one with other options, at the same target: ALREADY_EXISTS.
    for vid, a in (("vol-2", attrs), ("vol-1", {**attrs, "attrTimeout": "9"})):
        with pytest.raises(grpc.RpcError) as e:
            plugin.publish(vid, target, a)
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS, e.value.details()
    assert _digest(target) == _digest(ufs / "train")

    plugin.unpublish("vol-1", target)
    assert not target.exists() and plugin.records() == []
    deadline = time.monotonic() + 15
    while _pid_alive(first[0]["pid"]):
        assert time.monotonic() < deadline, "the mount's daemon outlived the unpublish"
        time.sleep(0.05)
    # Unpublishing what is not published is OK (idempotent).
    plugin.unpublish("vol-1", target)
    assert not target.exists()


def test_a_killed_mount_daemon_is_recovered_at_the_next_publish(
    plugin, start_worker, ufs, tmp_path
):
    w = start_worker(f"file://{ufs}")
    target = _target(tmp_path)
    attrs = {"url": f"file://{ufs}/train", "workerHosts": w.addr}
    plugin.publish("vol-1", target, attrs)
    pid = plugin.records()[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while _alluxiofs.mount_state(str(target)) != "stale":
        assert time.monotonic() < deadline, _alluxiofs.mount_state(str(target))
        time.sleep(0.05)
    with pytest.raises(OSError):
        os.listdir(target)  # "Transport endpoint is not connected"
    plugin.publish("vol-1", target, attrs)
    assert _alluxiofs.mount_state(str(target)) == "mounted"
    new_pid = plugin.records()[0]["pid"]
    assert new_pid != pid and _pid_alive(new_pid)
    assert _digest(target) == _digest(ufs / "train")
    plugin.unpublish("vol-1", target)
    assert not target.exists()


def test_mounts_outlive_a_plugin_restart(plugin, start_worker, ufs, tmp_path):
    w = start_worker(f"file://{ufs}")
    target = _target(tmp_path)
    attrs = {"url": f"file://{ufs}/train", "workerHosts": w.addr}
    plugin.publish("vol-1", target, attrs)
    before = plugin.records()
    plugin.stop(signal.SIGKILL)
    assert _digest(target) == _digest(ufs / "train")
    # A new plugin on the same socket (left behind) and state directory.
    plugin.start()
    plugin.publish("vol-1", target, attrs)
    assert plugin.records() == before
    plugin.unpublish("vol-1", target)
    assert not target.exists()
    assert plugin.stop() == 0


def test_several_urls_writes_and_the_token(plugin, start_worker, ufs, tmp_path):
    token = "csi-tok-" + secrets.token_hex(12)
    (ufs / "ckpt").mkdir()
    w = start_worker(
        [f"file://{ufs}/train", f"file://{ufs}/ckpt"],
        env={"ALLUXIOFS_WORKER_AUTH_TOKEN": token},
        http={"headers": {"Authorization": f"Bearer {token}"}},
    )
    target = _target(tmp_path)
    attrs = {
        "urls": f"data=file://{ufs}/train ckpt=file://{ufs}/ckpt",
        "workerHosts": w.addr,
        "write": "true",
    }
    rw = plugin.capability(mode="MULTI_NODE_MULTI_WRITER")  # a ReadWriteMany volume
    # Without the token the workers refuse the mount, which says why; nothing is
    # left mounted or recorded.
    bare = _target(tmp_path, "no-token")
    with pytest.raises(grpc.RpcError) as e:
        plugin.publish("vol-bare", bare, {**attrs, "noFallback": "true"}, capability=rw)
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "auth token" in e.value.details(), e.value.details()
    assert _alluxiofs.mount_state(str(bare)) == "none" and plugin.records() == []
    plugin.publish(
        "vol-w", target, {**attrs, "noFallback": "true"}, secrets={"token": token}, capability=rw
    )
    assert sorted(os.listdir(target)) == ["ckpt", "data"]
    assert _digest(target / "data") == _digest(ufs / "train")
    (target / "ckpt" / "step-1.pt").write_bytes(b"weights" * 1000)
    assert (ufs / "ckpt" / "step-1.pt").read_bytes() == b"weights" * 1000
    # The token is in no process's command line, and in no record or log of the plugin.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert token not in ps
    for f in plugin.state.rglob("*"):
        if f.is_file():
            assert token not in f.read_text(errors="replace"), f
    assert token not in plugin.log.read_text()
    plugin.unpublish("vol-w", target)
    # A read-only publish (readOnly: true in the pod) of a writable volume, and a
    # reader-only access mode (ReadOnlyMany), both mount it read-only.
    plugin.publish("vol-w", target, attrs, secrets={"token": token}, readonly=True, capability=rw)
    with pytest.raises(OSError):
        (target / "ckpt" / "step-2.pt").write_bytes(b"x")
    plugin.unpublish("vol-w", target)
    plugin.publish("vol-w", target, attrs, secrets={"token": token})
    with pytest.raises(OSError):
        (target / "ckpt" / "step-2.pt").write_bytes(b"x")
    assert not (ufs / "ckpt" / "step-2.pt").exists()
    plugin.unpublish("vol-w", target)


BAD_PUBLISHES = [
    ("no url", {"workerHosts": "127.0.0.1:1"}, {}, "url (or urls) is required"),
    ("misspelt key", {"url": "file:///x", "workerHost": "127.0.0.1:1"}, {}, "workerHost"),
    ("bad scheme", {"url": "ftp://host/x", "workerHosts": "127.0.0.1:1"}, {}, "not supported"),
    ("not a url", {"url": "bucket/prefix", "workerHosts": "127.0.0.1:1"}, {}, "not a URL"),
    ("dot-dot", {"url": "file:///data/../etc", "workerHosts": "127.0.0.1:1"}, {}, "'..'"),
    ("no cluster", {"url": "file:///x"}, {}, "no cluster"),
    ("bad flag", {"url": "file:///x", "workerHosts": "h:1", "write": "yes"}, {}, '"true"'),
    ("bad hosts", {"url": "file:///x", "workerHosts": "h:1 ;x"}, {}, "host:port"),
    ("bad secret", {"url": "file:///x", "workerHosts": "h:1"}, {"password": "pw-9d1"}, "password"),
]


@pytest.mark.parametrize(
    "attrs,secret,want", [c[1:] for c in BAD_PUBLISHES], ids=[c[0] for c in BAD_PUBLISHES]
)
def test_bad_volume_attributes_are_invalid_argument(plugin, tmp_path, attrs, secret, want):
    target = _target(tmp_path)
    with pytest.raises(grpc.RpcError) as e:
        plugin.publish("vol-bad", target, attrs, secrets=secret)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert want in e.value.details(), e.value.details()
    for v in secret.values():
        assert v not in e.value.details()
    assert not target.exists() and plugin.records() == []


def test_bad_requests_are_invalid_argument(plugin, tmp_path):
    target = _target(tmp_path)
    attrs = {"url": "file:///x", "workerHosts": "127.0.0.1:1"}
    cases = [
        ("", target, attrs, "default", "volume_id"),
        ("v", "", attrs, "default", "target_path"),
        ("v", "relative/mount", attrs, "default", "absolute"),
        ("v", target, attrs, None, "volume_capability"),
        ("v", target, attrs, plugin.capability(block=True), "block volumes"),
    ]
    for vid, tgt, a, cap, want in cases:
        with pytest.raises(grpc.RpcError) as e:
            plugin.publish(vid, tgt, a, capability=cap)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (want, e.value.details())
        assert want in e.value.details()
    for vid, tgt in (("", target), ("v", "")):
        with pytest.raises(grpc.RpcError) as e:
            plugin.unpublish(vid, tgt)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A worker that does not answer: the mount fails and says so; nothing is left.
    attrs = {"url": "file:///nonexistent-dir", "workerHosts": "127.0.0.1:1", "noFallback": "true"}
    with pytest.raises(grpc.RpcError) as e:
        plugin.publish("v", target, attrs)
    assert e.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert "alluxiofs mount" in e.value.details() or "mount" in e.value.details()
    assert plugin.records() == []


def test_the_cli_refuses_a_bad_endpoint(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "alluxiofs",
            "csi",
            "--endpoint",
            "tcp://127.0.0.1:1",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "only unix:///path" in r.stderr, r.stderr


def _example_volumes() -> list[tuple[str, dict[str, str], str, dict[str, str]]]:
    """(name, volumeAttributes, access mode, secret) of every CSI volume in the
    deployment examples: PersistentVolumes and pods' inline volumes."""
    import yaml

    docs = [
        d
        for f in sorted((REPO / "deploy" / "kubernetes" / "examples").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    secrets_by_name = {
        d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"
    }
    modes = {"ReadOnlyMany": "MULTI_NODE_READER_ONLY", "ReadWriteMany": "MULTI_NODE_MULTI_WRITER"}
    out = []
    for d in docs:
        if d["kind"] == "PersistentVolume" and d["spec"].get("csi"):
            csi = d["spec"]["csi"]
            mode = modes[d["spec"]["accessModes"][0]]
            out.append((d["metadata"]["name"], csi, mode))
        if d["kind"] == "Pod":
            for v in d["spec"].get("volumes", []):
                if v.get("csi"):
                    out.append(
                        (
                            f"{d['metadata']['name']}/{v['name']}",
                            v["csi"],
                            "MULTI_NODE_MULTI_WRITER",
                        )
                    )
    vols = []
    for name, csi, mode in out:
        assert csi["driver"] == "csi.alluxiofs.io", name
        secret = (
            secrets_by_name[csi["nodePublishSecretRef"]["name"]]
            if "nodePublishSecretRef" in csi
            else {}
        )
        vols.append((name, csi["volumeAttributes"], mode, secret))
    return vols


def test_the_deployment_examples_volumes_are_accepted(plugin, tmp_path):
    """The example volumes pass the plugin's checks: their mounts start and fail only
    because the examples' etcd does not exist here (no INVALID_ARGUMENT)."""
    vols = _example_volumes()
    assert len(vols) >= 3, vols
    for name, attrs, mode, secret in vols:
        assert set(secret) == {"token"}, name
        with pytest.raises(grpc.RpcError) as e:
            plugin.publish(
                name,
                _target(tmp_path, name.replace("/", "-")),
                attrs,
                secrets=secret,
                capability=plugin.capability(mode=mode),
            )
        assert e.value.code() == grpc.StatusCode.INTERNAL, (name, e.value.details())
        assert "no cache workers available" in e.value.details(), (name, e.value.details())
    assert plugin.records() == []
