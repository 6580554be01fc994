"""Three workers as three hosts: each in its own network namespace with its own address.

Shows the cluster works across addresses, not only across ports of 127.0.0.1.
Each namespace gets a veth pair: 10.231.B.(4i+1) on this side, 10.231.B.(4i+2)
inside, a /30 of a block picked at run time that no route uses. Only those
addresses, created and removed by this test, are ever contacted. The UFS is a
local directory (the namespaces share the filesystem, not the loopback S3).
Like another host, a worker here does not share the directory of its
same-node read socket with the reader: it runs in the private mount namespace
``ip netns exec`` makes, with a tmpfs over that directory, so the reader
cannot reach the socket and reads over the network.
Needs root and iproute2; skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time

import fsspec
import pytest
import requests
from harness import worker_command

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def three_hosts():
    """Three namespaces; yields [(namespace, address inside)], removes them after."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    block = next(b for b in random.sample(range(256), 256) if f"10.231.{b}." not in routes)
    tag = f"{os.getpid() % 10000:04d}"
    made, hosts = [], []
    try:
        for i in range(3):
            ns, outer, inner = f"afs{tag}n{i}", f"afs{tag}h{i}", f"afs{tag}p{i}"
            here, there = f"10.231.{block}.{4 * i + 1}", f"10.231.{block}.{4 * i + 2}"
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("addr", "add", f"{here}/30", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{there}/30", "dev", inner)
            _ip("netns", "exec", ns, "ip", "link", "set", inner, "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
            hosts.append((ns, there))
        yield hosts
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # removes the veths


def test_workers_on_three_addresses(three_hosts, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rnd = random.Random(11)
    files = {}
    for i in range(40):
        p = data_dir / f"f{i:02d}.bin"
        p.write_bytes(rnd.randbytes(rnd.randrange(1, 3 << 20)))
        files[str(p)] = p.read_bytes()
    procs, logs, addrs = [], [], []
    try:
        for i, (ns, addr) in enumerate(three_hosts):
            ready = tmp_path / f"w{i}.json"
            sock_dir = tmp_path / f"s{i}"
            sock_dir.mkdir()
            hide = 'mount -t tmpfs tmpfs "$0" && shift && exec "$@"'
            cmd = ["ip", "netns", "exec", ns, "sh", "-c", hide, str(sock_dir), "--",
                   *worker_command(), "--host", addr, "--port", "0",
                   "--mount", f"file://{data_dir}", "--cache-dir", str(tmp_path / f"c{i}"),
                   "--local-socket", str(sock_dir / "w.sock"),
                   "--ready-file", str(ready)]  # fmt: skip
            log = open(tmp_path / f"w{i}.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True))
            deadline = time.monotonic() + 60
            while not ready.exists():
                assert procs[-1].poll() is None, (tmp_path / f"w{i}.log").read_text()
                assert time.monotonic() < deadline, "worker did not start"
                time.sleep(0.05)
            info = json.loads(ready.read_text())
            assert info["host"] == addr
            addrs.append(f"{addr}:{info['port']}")
        fs = fsspec.filesystem(
            "alluxiofs", worker_hosts=",".join(addrs), target_protocol="file",
            skip_instance_cache=True, fallback=False,
        )  # fmt: skip
        for _ in range(2):  # cold, then warm
            for path, data in files.items():
                assert fs.cat_file(path) == data, path
                with fs.open(path, "rb") as f:
                    assert f.read() == data, path
        # The workers advertise their sockets, but from here (another "host") none is
        # reachable: every byte came over HTTP.
        assert all(
            requests.get(f"http://{a}/healthz", timeout=10).json()["local_socket"] for a in addrs
        )
        stats = fs.stats()
        assert stats["bytes_local"] == 0 and stats["bytes_remote"] > 0, stats
        assert not (tmp_path / "s0" / "w.sock").exists()
        served = []
        for a in addrs:
            text = requests.get(f"http://{a}/metrics", timeout=10).text
            served.append(
                sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("alluxiofs_bytes_served_total"))
            )  # fmt: skip
        assert all(s > 0 for s in served), served  # every host served part of the data
        assert sum(served) >= 4 * sum(len(d) for d in files.values())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
