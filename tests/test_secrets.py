"""Secrets never leave the worker (docs/security.md).

A whole workload runs with distinctive secret values: two workers in an etcd
with authentication on, a bearer token, S3 access keys for the worker's
endpoint, UFS credentials; reads, writes, a load, ``alluxiofs doctor``,
answers to wrong tokens and wrong signatures, a worker killed under load. Then
every worker log (at debug level), every answer the workload saw, ``/metrics``,
``/healthz``, the ready files, every process's command line and every key in
etcd are searched for each secret, as is and base64/hex encoded.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import subprocess
import sys

import boto3
import fsspec
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

TOKEN = "tok-" + secrets.token_hex(16)
ETCD_PASSWORD = "etcdpw-" + secrets.token_hex(12)
S3_ACCESS = "AKIASWEEP" + secrets.token_hex(6).upper()
S3_SECRET = "s3sec-" + secrets.token_hex(16)
UFS_ACCESS = "GK" + secrets.token_hex(12)
UFS_SECRET = secrets.token_hex(32)
SECRETS = {
    "auth token": TOKEN,
    "etcd password": ETCD_PASSWORD,
    "S3 secret key": S3_SECRET,
    "UFS secret key": UFS_SECRET,
}


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode()]


def _etcdctl(endpoint: str, *args: str, user: str | None = None) -> str:
    cmd = ["etcdctl", "--endpoints", endpoint, *args]
    env = dict(os.environ, ETCDCTL_API="3")
    if user:
        # The password goes through the environment, never argv.
        env["ETCDCTL_USER"] = user
    out = subprocess.run(cmd, capture_output=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode(errors="replace")


@pytest.fixture
def auth_etcd(etcd_server):
    ep = etcd_server.endpoint
    _etcdctl(ep, "user", "add", "root", f"--new-user-password={ETCD_PASSWORD}",
             "--interactive=false")  # fmt: skip
    _etcdctl(ep, "role", "add", "root")
    _etcdctl(ep, "user", "grant-role", "root", "root")
    _etcdctl(ep, "auth", "enable")
    return etcd_server


def test_secrets_stay_out_of_logs_answers_command_lines_and_etcd(
    start_worker, s3_server, auth_etcd, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    ep = auth_etcd.endpoint
    bucket = s3_server.bucket
    fs_ufs = s3_server.s3fs()
    files = {f"{bucket}/sweep/f{i}.bin": os.urandom(50_000 + 300_000 * i) for i in range(4)}
    fs_ufs.pipe(files)
    env = {
        "ALLUXIOFS_WORKER_AUTH_TOKEN": TOKEN,
        "ALLUXIOFS_WORKER_ETCD_PASSWORD": ETCD_PASSWORD,
        "ALLUXIOFS_WORKER_S3_ACCESS_KEY": S3_ACCESS,
        "ALLUXIOFS_WORKER_S3_SECRET_KEY": S3_SECRET,
        **s3_server.add_key(UFS_ACCESS, UFS_SECRET),
    }
    args = ["--etcd", ep, "--etcd-username", "root", "--etcd-lease-ttl", "3s",
            "--log-level", "debug"]  # fmt: skip
    auth = {"headers": {"Authorization": f"Bearer {TOKEN}"}}
    workers = [
        start_worker(f"s3://{bucket}", extra_args=args, env=env, http=auth) for _ in range(2)
    ]
    for w in workers:
        w.wait_registered()
    seen: list[tuple[str, bytes]] = []

    def keep(where: str, r: requests.Response) -> requests.Response:
        seen.append((where, r.content))
        seen.append((where + " headers", repr(dict(r.headers)).encode()))
        return r

    fs = fsspec.filesystem(
        "alluxiofs",
        etcd_hosts=ep,
        etcd_username="root",
        etcd_password=ETCD_PASSWORD,
        auth_token=TOKEN,
        target_protocol="s3",
        target_options=s3_server.target_options(),
        skip_instance_cache=True,
    )
    # Reads, a write through the owner, a load.
    for path, data in files.items():
        assert fs.cat_file(path) == data
    fs.pipe_file(f"{bucket}/sweep/written.bin", b"w" * 100_000)
    assert fs_ufs.cat_file(f"{bucket}/sweep/written.bin") == b"w" * 100_000
    fs.load(f"{bucket}/sweep")
    assert fs.stats()["ufs_fallback_reads"] == 0, "the workers served with the UFS secret"
    # Wrong and missing tokens: 401 answers on every kind of endpoint.
    w = workers[0]
    path0 = next(iter(files))
    for method, endpoint, params in [
        ("GET", "/v1/info", {"path": f"s3://{path0}"}),
        ("PUT", "/v1/write", {"path": f"s3://{bucket}/sweep/x"}),
        ("POST", "/v1/load/file", {"path": f"s3://{path0}"}),
        ("POST", "/v1/pin", {"path": f"s3://{path0}"}),
        ("GET", "/metrics", {}),
    ]:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN[:-1]}x"}, {"Authorization": TOKEN}):
            r = keep(endpoint, requests.request(method, f"{w.url}{endpoint}", params=params,
                                                headers=headers, timeout=10))  # fmt: skip
            assert r.status_code == 401, (endpoint, headers, r.text)
    # Answers with the token: health, metrics, stats, an error body.
    for endpoint in ("/healthz", "/metrics", "/v1/stats"):
        for x in workers:
            keep(endpoint, requests.get(f"{x.url}{endpoint}", timeout=10, **auth))
    missing = keep("404", requests.get(f"{w.url}/v1/info", params={"path": f"s3://{bucket}/no"},
                                       timeout=10, **auth))  # fmt: skip
    assert missing.status_code == 404

    # The S3 endpoint: right and wrong signatures.
    def s3(secret: str):
        return boto3.client("s3", endpoint_url=w.s3_url, region_name="us-east-1",
                            aws_access_key_id=S3_ACCESS, aws_secret_access_key=secret,
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 1}))  # fmt: skip

    key0 = path0.split("/", 1)[1]
    assert s3(S3_SECRET).get_object(Bucket=bucket, Key=key0)["Body"].read() == files[path0]
    with pytest.raises(ClientError) as e:
        s3("wrong-" + S3_SECRET).get_object(Bucket=bucket, Key=key0)
    seen.append(("s3 error", repr(e.value.response).encode()))
    # doctor, configured the way a user would (environment variables).
    cli_env = dict(os.environ)
    cli_env.update(
        ALLUXIOFS_ETCD_HOSTS=ep,
        ALLUXIOFS_ETCD_USERNAME="root",
        ALLUXIOFS_ETCD_PASSWORD=ETCD_PASSWORD,
        ALLUXIOFS_AUTH_TOKEN=TOKEN,
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
        AWS_ENDPOINT_URL=s3_server.endpoint_url,
    )
    doctor = subprocess.run([sys.executable, "-m", "alluxiofs", "doctor", f"s3://{path0}"],
                            capture_output=True, env=cli_env, timeout=120)  # fmt: skip
    assert doctor.returncode == 0, doctor.stdout.decode() + doctor.stderr.decode()
    seen.append(("doctor", doctor.stdout + doctor.stderr))
    # The command lines of every process while the workers run.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, timeout=30).stdout
    seen.append(("ps", ps))
    for x in workers:
        seen.append((f"{x.name} cmdline", open(f"/proc/{x.proc.pid}/cmdline", "rb").read()))
    # A worker dies under load: the other one and the UFS serve, and the
    # failure is logged by the client.
    workers[1].kill()
    for path, data in files.items():
        assert fs.cat_file(path) == data
    # Everything in etcd (the registrations, the placement).
    etcd_dump = _etcdctl(ep, "get", "", "--prefix", user=f"root:{ETCD_PASSWORD}")
    assert "worker" in etcd_dump.lower() or "ServiceDiscovery" in etcd_dump, etcd_dump
    seen.append(("etcd", etcd_dump.encode()))
    for x in workers:
        seen.append((f"{x.name} log", x.log_path.read_bytes()))
        for ready in x.run_dir.glob(f"{x.name}.ready.*"):
            seen.append((f"{x.name} ready file", ready.read_bytes()))
    seen.append(("client log", "\n".join(r.getMessage() for r in caplog.records).encode()))
    assert any(b"DEBUG" in text for where, text in seen if where.endswith(" log"))
    # The search finds a secret where it is meant to be: the environment the
    # worker was given.
    environ = open(f"/proc/{workers[0].proc.pid}/environ", "rb").read()
    for secret in SECRETS.values():
        assert any(form in environ for form in _forms(secret))
    leaks = [
        (where, name)
        for where, text in seen
        for name, secret in SECRETS.items()
        if any(form in text for form in _forms(secret))
    ]
    assert not leaks, leaks
