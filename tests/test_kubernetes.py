"""The Kubernetes deployment (deploy/kubernetes, deploy/grafana): valid, complete, runnable.

1. Every object validates, strictly (unknown fields refused), against the
   schemas of Kubernetes 1.37 shipped by ``kubernetes-validate``; each
   ``kustomization.yaml`` lists exactly the manifests beside it; the names the
   objects use to refer to each other (ConfigMap, Secrets, driver, class) exist.
2. Every metric the Grafana dashboard queries is served by a live worker.
3. The etcd StatefulSet and the worker DaemonSet run as written: their
   containers' command, args and env, ``$(VAR)`` expanded the way the kubelet
   does, with the downward API values a pod would get, each pod in a network
   namespace of its own on one bridge (its own address: the pod IP). The
   members find each other by the headless Service's DNS names, which a hosts
   file bind-mounted over ``/etc/hosts`` in each namespace resolves; the
   ConfigMap and the Secret are written as files where the pod mounts them.
   Paths are rewritten in one place, ``container_path``: a volume's mountPath
   ``/etc/alluxiofs/config`` is ``<pod dir>/etc/alluxiofs/config`` here, a
   hostPath ``/var/lib/alluxiofs`` is ``<node dir>/var/lib/alluxiofs``; the
   args and env values that name such paths are rewritten the same way. The
   one change to a manifest's content: the ConfigMap's ``mounts`` become the
   test's local dataset (the manifest's are S3 buckets). Then a client reads
   the dataset through the workers found in etcd and gets the right bytes; a
   worker SIGTERMed leaves etcd at once and, restarted on the same node,
   has the same identity. So a typo in a flag, a path, a port, a DNS name or
   a volume fails here, not in a cluster.

The commands' binaries are found through PATH: ``alluxiofs`` in this venv,
``etcd`` from Debian's etcd-server (3.4 here, 3.5 in the image: the flags the
manifest uses mean the same in both). The fixed ports of the manifests
(2379, 2380, 28080) are bound only inside the test's own network namespaces.
Needs root and iproute2, like tests/test_netns.py.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import grpc
import pytest
import requests
import yaml
from harness import REPO

DEPLOY = REPO / "deploy" / "kubernetes"
DASHBOARD = REPO / "deploy" / "grafana" / "alluxiofs.json"
# The newest schemas kubernetes-validate (requirements-dev.txt) ships.
KUBERNETES_VERSION = "1.37.0"
DRIVER = "csi.alluxiofs.io"


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def objects() -> list[dict]:
    """Every YAML document of every manifest under deploy/kubernetes."""
    docs = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), f"{path}: an empty or non-object document"
            docs.append(doc)
    return docs


def find(kind: str, name: str) -> dict:
    found = [d for d in objects() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def secret_data(secret: dict) -> dict[str, bytes]:
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return out


# -- 1. schemas, kustomizations, references --------------------------------------------


def test_every_manifest_validates_strictly():
    import kubernetes_validate

    docs = objects()
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace", "Service", "StatefulSet", "ConfigMap", "Secret", "DaemonSet",
        "CSIDriver", "StorageClass", "PersistentVolume", "PersistentVolumeClaim", "Pod",
    } <= kinds, kinds  # fmt: skip
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    # Strict means strict: a misspelt field is an error, not ignored.
    broken = copy.deepcopy(find("DaemonSet", "alluxiofs-worker"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomizations_name_every_manifest():
    dirs = sorted({p.parent for p in manifest_files()})
    assert dirs == [DEPLOY, DEPLOY / "examples"], dirs
    for d in dirs:
        k = yaml.safe_load((d / "kustomization.yaml").read_text())
        assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
        assert k["kind"] == "Kustomization"
        here = sorted(p.name for p in d.glob("*.yaml") if p.name != "kustomization.yaml")
        assert sorted(k["resources"]) == here, d
    # The base's image rewrite covers the image its pods use.
    base = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    rewritten = {i["name"] for i in base["images"]}
    for ds in ("alluxiofs-worker", "alluxiofs-csi-node"):
        image = find("DaemonSet", ds)["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.split(":")[0] in rewritten, image


def test_references_resolve():
    docs = objects()
    names = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs}
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert namespaces == {"alluxiofs"}
    for d in docs:
        if d["kind"] in ("Namespace", "CSIDriver", "StorageClass", "PersistentVolume"):
            assert "namespace" not in d["metadata"], d["metadata"]
        else:
            assert d["metadata"].get("namespace") in ("alluxiofs", "default"), d["metadata"]
    # Volumes of the pod templates and pods name objects that exist.
    pods = [
        (d["metadata"]["namespace"], d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("DaemonSet", "StatefulSet")
    ] + [(d["metadata"]["namespace"], d["spec"]) for d in docs if d["kind"] == "Pod"]
    for ns, spec in pods:
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert ("ConfigMap", ns, v["configMap"]["name"]) in names, v
            if "secret" in v:
                assert ("Secret", ns, v["secret"]["secretName"]) in names, v
            if "persistentVolumeClaim" in v:
                assert (
                    "PersistentVolumeClaim",
                    ns,
                    v["persistentVolumeClaim"]["claimName"],
                ) in names
            if "csi" in v:
                assert v["csi"]["driver"] == DRIVER
                ref = v["csi"]["nodePublishSecretRef"]["name"]
                assert ("Secret", ns, ref) in names, v
        for c in spec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ("Secret", ns, ref["name"]) in names, e
    # The CSI objects agree on the driver's name; the volumes present the workers' token.
    assert find("CSIDriver", DRIVER)["spec"]["volumeLifecycleModes"] == ["Persistent", "Ephemeral"]
    token = secret_data(find("Secret", "alluxiofs"))["token"]
    assert secret_data(find("Secret", "alluxiofs-client"))["token"] == token
    sc = find("StorageClass", "alluxiofs")
    assert sc["provisioner"] == "kubernetes.io/no-provisioner"
    for d in docs:
        if d["kind"] == "PersistentVolume":
            assert d["spec"]["csi"]["driver"] == DRIVER
            assert d["spec"]["storageClassName"] == sc["metadata"]["name"]
            ref = d["spec"]["csi"]["nodePublishSecretRef"]
            assert ("Secret", ref["namespace"], ref["name"]) in names
    node = find("DaemonSet", "alluxiofs-csi-node")["spec"]["template"]["spec"]
    plugin = node["containers"][0]
    assert plugin["command"][:2] == ["alluxiofs", "csi"]
    registrar = next(c for c in node["containers"] if c["name"] == "node-driver-registrar")
    assert (
        f"--kubelet-registration-path=/var/lib/kubelet/plugins/{DRIVER}/csi.sock"
        in (registrar["args"])
    )
    socket_dir = next(v for v in node["volumes"] if v["name"] == "socket-dir")
    assert socket_dir["hostPath"]["path"].rstrip("/") == f"/var/lib/kubelet/plugins/{DRIVER}"
    pods_dir = next(m for m in plugin["volumeMounts"] if m["name"] == "pods-dir")
    assert pods_dir["mountPath"] == "/var/lib/kubelet/pods"
    assert pods_dir["mountPropagation"] == "Bidirectional"
    assert plugin["securityContext"]["privileged"] is True


# -- 2. the dashboard --------------------------------------------------------------------


def dashboard_queries(node: object) -> list[str]:
    """Every PromQL text of the dashboard: panel targets and template variable queries."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                out.append(value)
            elif key == "query" and isinstance(value, str | dict):
                out += [value] if isinstance(value, str) else dashboard_queries(value)
            else:
                out += dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            out += dashboard_queries(item)
    return out


def test_dashboard_metrics_exist(start_worker, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rnd = random.Random(5)
    files = {}
    for i in range(6):
        p = data / f"f{i}.bin"
        p.write_bytes(rnd.randbytes(rnd.randrange(1, 3 << 20)))
        files[str(p)] = p.read_bytes()
    w = start_worker(f"file://{data}")
    fs = fsspec.filesystem(
        "alluxiofs", worker_hosts=w.addr, target_protocol="file",
        skip_instance_cache=True, fallback=False,
    )  # fmt: skip
    for _ in range(2):
        for path, content in files.items():
            assert fs.cat_file(path) == content
    w.metrics_samples()  # so that /metrics itself is in the request metrics
    served = {name for name, _labels, _value in w.metrics_samples()}
    assert "alluxiofs_request_duration_seconds_bucket" in served, sorted(served)

    dashboard = json.loads(DASHBOARD.read_text())
    assert len(dashboard["panels"]) >= 10
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    used = set()
    for query in dashboard_queries(dashboard):
        used |= set(re.findall(r"\balluxiofs_[a-z0-9_]+", query))
    assert len(used) >= 20, used
    assert not used - served, f"the dashboard queries metrics no worker serves: {used - served}"


# -- 3. etcd and the workers, run as written -------------------------------------------


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")


class PodNetwork:
    """Network namespaces on one bridge (in a namespace of its own), reachable from here.

    The subnet is 10.232.B.0/24 with a B no route uses; this host is .1.
    """

    def __init__(self) -> None:
        routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
        self.block = next(b for b in random.sample(range(256), 256) if f"10.232.{b}." not in routes)
        # A tag no link or namespace has: a namespace is destroyed after `ip netns
        # del` returns, so the veths of an earlier network (of this process, too)
        # may still be there for a moment.
        taken = (
            subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
            + subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        )
        self.tag = next(
            t for t in (f"ak{random.randrange(16**4):04x}" for _ in range(1000)) if t not in taken
        )
        self.made: list[str] = []
        self.count = 0
        switch = f"{self.tag}sw"
        _ip("netns", "add", switch)
        self.made.append(switch)
        self.switch = switch
        try:
            _ip("-n", switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", switch, "link", "set", "br0", "up")
            up, down = f"{self.tag}up", f"{self.tag}upb"
            _ip("link", "add", up, "type", "veth", "peer", "name", down)
            self._plug(down)
            _ip("addr", "add", f"10.232.{self.block}.1/24", "dev", up)
            _ip("link", "set", up, "up")
        except BaseException:
            self.close()  # a half-made network is taken down too
            raise

    def _plug(self, link: str) -> None:
        _ip("link", "set", link, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", link, "master", "br0")
        _ip("-n", self.switch, "link", "set", link, "up")

    def add(self) -> tuple[str, str]:
        """A new namespace with its own address on the bridge: (namespace, address)."""
        i = self.count
        self.count += 1
        ns, outer, inner = f"{self.tag}n{i}", f"{self.tag}h{i}", f"{self.tag}p{i}"
        addr = f"10.232.{self.block}.{10 + i}"
        _ip("netns", "add", ns)
        self.made.append(ns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        self._plug(outer)
        _ip("link", "set", inner, "netns", ns)
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns, addr

    def close(self) -> None:
        for ns in reversed(self.made):  # removing a namespace removes its veths
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        # ... once the kernel has destroyed it, a moment later: wait for that, so
        # that nothing of this network is left when the test ends.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
            if f"{self.tag}up" not in links:
                return
            time.sleep(0.05)
        subprocess.run(["ip", "link", "del", f"{self.tag}up"], capture_output=True)


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: defined variables replaced, ``$$`` an escaped ``$``,
    references to undefined variables left as written."""

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, text)


def container_path(path: str, mounts: dict[str, Path]) -> str:
    """Where the container's absolute ``path`` lies on this machine: below the longest
    mountPath that holds it, in the directory standing for that volume. A path under no
    mountPath would be in the image, which this test does not have: an error."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            return str(mounts[mount_path] / os.path.relpath(path, mount_path))
    raise AssertionError(f"{path} is in no volume of the container ({sorted(mounts)})")


def rewrite_paths(value: str, mounts: dict[str, Path]) -> str:
    """An argument or env value with its container path rewritten: ``/p``, ``--flag=/p``
    or a socket address ``unix:///p``."""
    flag, eq, rest = value.partition("=")
    if value.startswith("/"):
        return container_path(value, mounts)
    if value.startswith("unix:///"):
        return "unix://" + container_path(value.removeprefix("unix://"), mounts)
    if flag.startswith("-") and eq and rest.startswith("/"):
        return f"{flag}={container_path(rest, mounts)}"
    return value


class Pod:
    """One container of a pod template, run as written in a network namespace of its own.

    ``node_dir`` holds the node's hostPath directories (kept across pods on the node),
    ``pod_dir`` the pod's other volumes.
    """

    def __init__(
        self, template: dict, name: str, namespace: str, node: str, net: tuple[str, str],
        node_dir: Path, pod_dir: Path, hosts_file: Path, docs: list[dict],
        claims: tuple[str, ...] = (), edit_config=None, container: str | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.ns, self.ip = net
        self.spec = template["spec"]
        if container is None:
            (self.container,) = self.spec["containers"]
        else:
            (self.container,) = [c for c in self.spec["containers"] if c["name"] == container]
        self.pod_dir = pod_dir
        self.mounts = self._volumes(node_dir, pod_dir, namespace, docs, claims, edit_config)
        fields = {
            "metadata.name": name,
            "metadata.namespace": namespace,
            "spec.nodeName": node,
            "status.podIP": self.ip,
            "status.hostIP": self.ip,
        }
        env = {}
        for e in self.container.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
                continue
            source = e["valueFrom"]
            if "fieldRef" in source:
                env[e["name"]] = fields[source["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = secret_data(self._get(docs, "Secret", ref["name"], namespace))
                if ref["key"] in data:
                    env[e["name"]] = data[ref["key"]].decode()
                else:
                    assert ref.get("optional"), f"{e['name']}: no key {ref['key']}"
            else:
                raise AssertionError(f"env {e['name']}: {source} is not handled here")
        self.env = {k: rewrite_paths(v, self.mounts) for k, v in env.items()}
        self.argv = [
            rewrite_paths(expand(a, env), self.mounts)
            for a in [*self.container.get("command", []), *self.container.get("args", [])]
        ]
        self.hosts_file = hosts_file
        self.proc: subprocess.Popen | None = None
        self.log_path = pod_dir / "container.log"

    @staticmethod
    def _get(docs: list[dict], kind: str, name: str, namespace: str) -> dict:
        (obj,) = [
            d for d in docs
            if d["kind"] == kind and d["metadata"]["name"] == name
            and d["metadata"].get("namespace") == namespace
        ]  # fmt: skip
        return obj

    def _volumes(self, node_dir, pod_dir, namespace, docs, claims, edit_config):
        """Make each volume's directory, with the ConfigMap and Secret files in it;
        return mountPath -> directory."""
        where = {}
        for v in self.spec.get("volumes", []):
            name = v["name"]
            if "hostPath" in v and v["hostPath"].get("type") == "CharDevice":
                assert Path(v["hostPath"]["path"]).is_char_device(), v  # /dev/fuse: the node's
                where[name] = Path(v["hostPath"]["path"])
            elif "hostPath" in v:
                # Directory: kubelet's own directories, which exist on a node.
                assert v["hostPath"].get("type") in ("DirectoryOrCreate", "Directory"), v
                where[name] = node_dir / v["hostPath"]["path"].lstrip("/")
            else:
                where[name] = None  # under the pod's directory, at its mountPath
        for claim in claims:  # volumeClaimTemplates: the pod's own disk
            where[claim] = None
        mounts = {}
        for m in self.container.get("volumeMounts", []):
            assert m["name"] in where, f"volumeMount {m['name']} has no volume"
            d = where[m["name"]] or pod_dir / m["mountPath"].lstrip("/")
            if not d.is_char_device():
                d.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"]] = d
        for v in self.spec.get("volumes", []):
            target = [
                mounts[m["mountPath"]]
                for m in self.container["volumeMounts"]
                if m["name"] == v["name"]
            ]
            if "configMap" in v:
                cm = self._get(docs, "ConfigMap", v["configMap"]["name"], namespace)
                for key, text in cm["data"].items():
                    if edit_config is not None:
                        text = edit_config(key, text)
                    for d in target:
                        (d / key).write_text(text)
            if "secret" in v:
                secret = self._get(docs, "Secret", v["secret"]["secretName"], namespace)
                for key, value in secret_data(secret).items():
                    for d in target:
                        (d / key).write_bytes(value)
                        os.chmod(d / key, v["secret"].get("defaultMode", 0o644))
        return mounts

    def start(self, hide: str = "") -> None:
        """Run the container's command in its namespace, with the hosts file as /etc/hosts
        and, when ``hide`` is given, a private tmpfs over that directory (tests/test_netns.py:
        a socket there is this "host's" alone)."""
        script = (
            'mount --bind "$0" /etc/hosts && if [ -n "$1" ]; then mount -t tmpfs tmpfs "$1"; fi'
            ' && shift && exec "$@"'
        )
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:"
            "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.pod_dir),
            "HOSTNAME": self.name,
            **self.env,
        }
        cmd = ["ip", "netns", "exec", self.ns, "sh", "-c", script, str(self.hosts_file), hide]
        self.pod_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, *self.argv], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.pod_dir, start_new_session=True,
            )  # fmt: skip

    def port(self, name_or_number: str | int) -> int:
        if isinstance(name_or_number, int):
            return name_or_number
        (port,) = [p for p in self.container["ports"] if p["name"] == name_or_number]
        return port["containerPort"]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll the manifest's readiness probe (httpGet) until it answers 200."""
        probe = self.container["readinessProbe"]["httpGet"]
        url = f"http://{self.ip}:{self.port(probe['port'])}{probe['path']}"
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"{self.name}: {url} not ready\n{self.log()}"
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def etcdctl(endpoints: str, *args: str) -> str:
    out = subprocess.run(
        ["etcdctl", f"--endpoints={endpoints}", *args],
        capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_etcd_and_workers_run_as_written(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces), as make test runs it")
    for tool in ("ip", "etcd", "etcdctl"):
        assert shutil.which(tool), f"{tool} missing: make system-deps installs it"
    assert shutil.which("alluxiofs", path=str(Path(sys.executable).parent))
    docs = objects()
    sts = find("StatefulSet", "alluxiofs-etcd")
    ds = find("DaemonSet", "alluxiofs-worker")
    namespace = sts["metadata"]["namespace"]
    service = find("Service", sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    claims = tuple(c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", []))

    data = tmp_path / "data"
    data.mkdir()
    rnd = random.Random(17)
    files = {}
    for i in range(30):
        p = data / f"f{i:02d}.bin"
        p.write_bytes(rnd.randbytes(rnd.randrange(1, 3 << 20)))
        files[str(p)] = p.read_bytes()

    def edit_config(key: str, text: str) -> str:
        config = yaml.safe_load(text)
        assert config["mounts"], key
        config["mounts"] = [f"file://{data}"]  # the only change: the test's dataset as the UFS
        return yaml.safe_dump(config)

    net = PodNetwork()
    pods: list[Pod] = []
    try:
        replicas = sts["spec"]["replicas"]
        assert replicas == 3
        etcd_net = [net.add() for _ in range(replicas)]
        worker_net = [net.add() for _ in range(3)]
        hosts_file = tmp_path / "hosts"
        lines = ["127.0.0.1 localhost"]
        for i, (_ns, addr) in enumerate(etcd_net):
            pod = f"{sts['metadata']['name']}-{i}"
            fqdn = f"{pod}.{service['metadata']['name']}.{namespace}.svc"
            lines.append(f"{addr} {fqdn} {fqdn}.cluster.local")
        hosts_file.write_text("\n".join(lines) + "\n")

        # etcd: three members, started together (podManagementPolicy: Parallel).
        members = []
        for i, pod_net in enumerate(etcd_net):
            name = f"{sts['metadata']['name']}-{i}"
            members.append(Pod(
                sts["spec"]["template"], name, namespace, f"node{i}", pod_net,
                tmp_path / f"node{i}", tmp_path / "pods" / name, hosts_file, docs, claims=claims,
            ))  # fmt: skip
        pods += members
        for m in members:
            assert m.argv[0] == "etcd", m.argv
            m.start()
        for m in members:
            m.wait_ready()
        client_port = members[0].port("client")
        endpoints = ",".join(f"http://{m.ip}:{client_port}" for m in members)
        listed = json.loads(etcdctl(endpoints, "member", "list", "-w", "json"))["members"]
        assert sorted(m["name"] for m in listed) == sorted(m.name for m in members)
        for m in listed:
            (peer,) = m["peerURLs"]
            assert peer.startswith(f"http://{m['name']}.{service['metadata']['name']}."), peer

        # The workers: the DaemonSet's pod on three labelled nodes.
        template = ds["spec"]["template"]
        assert template["spec"]["nodeSelector"] == {"alluxiofs.io/worker": "true"}
        token = secret_data(find("Secret", "alluxiofs"))["token"].decode()

        def worker_pod(i: int, generation: int) -> Pod:
            name = f"alluxiofs-worker-{generation}{i}"
            return Pod(
                template, name, namespace, f"node{i}", worker_net[i], tmp_path / f"node{i}",
                tmp_path / "pods" / name, hosts_file, docs, edit_config=edit_config,
            )  # fmt: skip

        def socket_dir(pod: Pod) -> str:
            (arg,) = [a for a in pod.argv if a.startswith("--local-socket=")]
            return os.path.dirname(arg.partition("=")[2])

        workers = [worker_pod(i, 0) for i in range(3)]
        pods += workers
        for w in workers:
            assert w.argv[:2] == ["alluxiofs", "worker"], w.argv
            w.start(hide=socket_dir(w))
        for w in workers:
            w.wait_ready()
        http_port = workers[0].port("http")

        def healthz(w: Pod) -> dict:
            return requests.get(f"http://{w.ip}:{http_port}/healthz", timeout=10).json()

        def wait_registered(w: Pod) -> None:
            deadline = time.monotonic() + 30
            while (state := healthz(w)["registration"]) != "registered":
                assert time.monotonic() < deadline, f"{w.name}: {state}\n{w.log()}"
                time.sleep(0.1)

        for w in workers:
            wait_registered(w)
        cluster = healthz(workers[0])["cluster"]

        def live_records() -> str:
            return etcdctl(endpoints, "get", "--prefix", f"/ServiceDiscovery/{cluster}/")

        records = live_records()
        for w in workers:  # --advertise-host=$(POD_IP): the pod's address is in etcd
            assert f'"{w.ip}"' in records, records

        etcd_hosts = ",".join(f"{m.ip}:{client_port}" for m in members)

        def read_all() -> dict:
            fs = fsspec.filesystem(
                "alluxiofs", etcd_hosts=etcd_hosts, cluster_name=cluster, auth_token=token,
                target_protocol="file", skip_instance_cache=True, fallback=False,
            )  # fmt: skip
            for _ in range(2):  # cold, then warm
                for path, content in files.items():
                    assert fs.cat_file(path) == content, path
            return fs.stats()

        stats = read_all()
        # Across "hosts": no same-node socket reachable, every byte over HTTP.
        assert stats["bytes_local"] == 0 and stats["bytes_remote"] > 0, stats

        # Prometheus scrapes the annotated port and path (with the token).
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        served = []
        for w in workers:
            url = f"http://{w.ip}:{annotations['prometheus.io/port']}"
            url += annotations["prometheus.io/path"]
            assert requests.get(url, timeout=10).status_code == 401  # the Secret's token is on
            r = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 200
            served.append(
                sum(float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines()
                    if line.startswith("alluxiofs_bytes_served_total"))
            )  # fmt: skip
        assert all(s > 0 for s in served), served
        # Sized from the node: the ConfigMap's shares of the cache disk and of the memory.
        config = yaml.safe_load(find("ConfigMap", "alluxiofs-worker")["data"]["worker.yaml"])
        capacity, memory = str(config["capacity"]), str(config["memory_capacity"])
        assert capacity.endswith("%") and memory.endswith("%"), (capacity, memory)
        share = float(capacity.rstrip("%")) / 100
        for w in workers:
            metrics_url = f"http://{w.ip}:{annotations['prometheus.io/port']}"
            metrics_url += annotations["prometheus.io/path"]
            auth = {"Authorization": f"Bearer {token}"}
            text = requests.get(metrics_url, headers=auth, timeout=10).text
            (cap,) = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("alluxiofs_cache_dir_capacity_bytes{")]  # fmt: skip
            (cache_dir,) = [a.partition("=")[2] for a in w.argv if a.startswith("--cache-dir=")]
            fs = os.statvfs(cache_dir)
            assert abs(cap - share * fs.f_blocks * fs.f_frsize) <= 1 << 20, (w.name, cap)
            (mem,) = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("alluxiofs_cache_memory_capacity_bytes")]  # fmt: skip
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            assert 0 < mem <= ram * float(memory.rstrip("%")) / 100 + 1, mem

        # SIGTERM (what the kubelet sends): the worker leaves etcd before it exits,
        # within the grace period; the next pod on that node is the same worker.
        old = workers[0]
        identity = healthz(old)["worker_id"]
        grace = template["spec"]["terminationGracePeriodSeconds"]
        started = time.monotonic()
        assert old.stop(timeout=grace) == 0, old.log()
        assert time.monotonic() - started < grace
        assert identity not in live_records()
        assert all(identity_of in live_records() for identity_of in
                   [healthz(w)["worker_id"] for w in workers[1:]])  # fmt: skip
        new = worker_pod(0, 1)
        pods.append(new)
        new.start(hide=socket_dir(new))
        new.wait_ready()
        wait_registered(new)
        assert healthz(new)["worker_id"] == identity
        assert identity in live_records()
        read_all()
    finally:
        for p in reversed(pods):
            try:
                p.stop()
            except Exception:  # stop the others whatever happens
                pass
        net.close()


def test_the_csi_plugin_runs_as_written(tmp_path, csi_pb):
    """The CSI DaemonSet's plugin container, run as written, serves the driver the
    CSIDriver object names on the socket its registrar sidecar uses, at the path
    kubelet is told."""
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces), as make test runs it")
    docs = objects()
    ds = find("DaemonSet", "alluxiofs-csi-node")
    (driver,) = [d for d in docs if d["kind"] == "CSIDriver"]
    template = ds["spec"]["template"]
    containers = {c["name"]: c for c in template["spec"]["containers"]}
    registrar = containers["node-driver-registrar"]
    args = dict(a.removeprefix("--").split("=", 1) for a in registrar["args"])
    # The registrar and the plugin share the socket directory; kubelet reaches the
    # socket through that directory's hostPath.
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    (reg_mount,) = [
        m for m in registrar["volumeMounts"] if args["csi-address"].startswith(m["mountPath"] + "/")
    ]
    host_dir = volumes[reg_mount["name"]]["hostPath"]["path"].rstrip("/")
    rel = args["csi-address"][len(reg_mount["mountPath"]) :]
    assert args["kubelet-registration-path"] == host_dir + rel
    assert host_dir == f"/var/lib/kubelet/plugins/{driver['metadata']['name']}"
    net = PodNetwork()
    pod = None
    # A short node directory: the socket's path must fit a Unix socket name (107 bytes).
    node_dir = Path(tempfile.mkdtemp(prefix="k8s-", dir="/tmp"))
    try:
        pod = Pod(
            template, "alluxiofs-csi-node-0", ds["metadata"]["namespace"], "node0", net.add(),
            node_dir, tmp_path / "pods" / "csi", tmp_path / "hosts", docs,
            container="csi-plugin",
        )  # fmt: skip
        (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
        assert pod.argv[:2] == ["alluxiofs", "csi"], pod.argv
        assert "--node-id" in pod.argv and pod.argv[pod.argv.index("--node-id") + 1] == "node0"
        # Where the plugin's socket lands (the registrar's --csi-address in this pod).
        socket = Path(rewrite_paths(args["csi-address"], pod.mounts))
        assert f"unix://{socket}" in pod.argv, pod.argv
        pod.start()
        deadline = time.monotonic() + 60
        while not socket.exists():
            assert pod.proc is not None and pod.proc.poll() is None, pod.log()
            assert time.monotonic() < deadline, pod.log()
            time.sleep(0.1)
        pb2, pb2_grpc = csi_pb
        with grpc.insecure_channel(
            f"unix://{socket}", options=[("grpc.default_authority", "localhost")]
        ) as ch:
            info = pb2_grpc.IdentityStub(ch).GetPluginInfo(pb2.GetPluginInfoRequest(), timeout=30)
            assert info.name == driver["metadata"]["name"]
            node = pb2_grpc.NodeStub(ch).NodeGetInfo(pb2.NodeGetInfoRequest(), timeout=30)
            assert node.node_id == "node0"
        # Its state directory is the hostPath the manifest keeps across restarts.
        state = Path(rewrite_paths("/var/lib/alluxiofs-csi", pod.mounts))
        assert (state / "volumes").is_dir(), pod.log()
        assert pod.stop() == 0, pod.log()
    finally:
        if pod is not None:
            pod.stop()
        net.close()
        shutil.rmtree(node_dir, ignore_errors=True)
