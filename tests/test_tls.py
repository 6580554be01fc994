"""TLS end to end (docs/security.md): workers serving HTTPS on the HTTP API and the
S3 endpoint, clients that trust a private CA, client certificates (mutual TLS)
between clients, workers and their peers, certificates reloaded on SIGHUP,
and etcd over TLS with client certificates.

Certificates come from a throwaway CA made per test (``trustme``); every
server is a real process on loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import boto3
import pytest
import requests
import trustme
from botocore.config import Config

FILES = {f"tls/f{i}.bin": bytes([i]) * (1000 + 70_000 * i) for i in range(6)}


class Pki:
    """A CA and the PEM files made from it under one directory."""

    def __init__(self, directory, name: str = "ca"):
        self.dir = directory
        self.ca = trustme.CA()
        self.ca_file = str(directory / f"{name}.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.name = name

    def issue(self, label: str, *hosts: str) -> tuple[str, str]:
        """``(cert, key)`` files of a certificate for ``hosts`` (server and client use)."""
        cert = self.ca.issue_cert(*(hosts or ("127.0.0.1", "localhost")))
        cert_file = str(self.dir / f"{self.name}-{label}.crt")
        key_file = str(self.dir / f"{self.name}-{label}.key")
        cert.cert_chain_pems[0].write_to_path(cert_file)
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(cert_file, append=True)
        cert.private_key_pem.write_to_path(key_file)
        return cert_file, key_file


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def files(s3_server) -> dict[str, bytes]:
    fs = s3_server.s3fs()
    data = {f"{s3_server.bucket}/{k}": v for k, v in FILES.items()}
    fs.pipe(data)
    return data


def _tls_args(cert: str, key: str, *more: str) -> list[str]:
    return ["--tls-cert", cert, "--tls-key", key, *more]


def _read_all(fs, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        assert fs.cat_file(path) == data, path
        assert fs.cat_file(path, start=5, end=900) == data[5:900], path


def test_https_worker_serves_clients_that_trust_its_ca(
    start_worker, make_fs, pki, files, s3_server
):
    cert, key = pki.issue("server")
    w = start_worker(
        f"s3://{s3_server.bucket}",
        extra_args=_tls_args(cert, key, "--s3-anonymous"),
        http={"verify": pki.ca_file},
    )
    assert w.url.startswith("https://"), w.url
    # fsspec through the native client, trusting the CA.
    fs = make_fs([w], tls_ca=pki.ca_file, fallback=False)
    _read_all(fs, files)
    assert fs.stats()["ufs_fallback_reads"] == 0
    assert w.metric("alluxiofs_bytes_served_total") > 0
    # The S3 endpoint speaks TLS with the same certificate.
    s3 = boto3.client(
        "s3",
        endpoint_url=w.s3_url,
        region_name="us-east-1",
        verify=pki.ca_file,
        config=Config(s3={"addressing_style": "path"}, signature_version=botocore_unsigned()),
    )
    key0 = next(iter(FILES))
    assert s3.get_object(Bucket=s3_server.bucket, Key=key0)["Body"].read() == FILES[key0]
    # Plain HTTP to the TLS port is refused (no bytes come back).
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{w.host}:{w.port}/healthz", timeout=5)
    # A client that does not trust the CA (system roots) fails with a
    # certificate error, not with data; so does one that speaks plain HTTP.
    untrusting = make_fs([w], tls=True, fallback=False, retries=0)
    with pytest.raises(ConnectionError, match=r"(?i)certificate"):
        untrusting.cat_file(next(iter(files)))
    plain = make_fs([w], fallback=False, retries=0)
    with pytest.raises(ConnectionError):
        plain.cat_file(next(iter(files)))
    # The CLI takes the same settings as flags.
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID=s3_server.access_key,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
        AWS_ENDPOINT_URL=s3_server.endpoint_url,
        ALLUXIOFS_FALLBACK="false",
        ALLUXIOFS_RETRIES="0",
    )
    path, data = next(iter(files.items()))
    cli = [sys.executable, "-m", "alluxiofs", "--worker-hosts", w.addr, "cat", f"s3://{path}"]
    ok = subprocess.run([*cli[:3], "--tls-ca", pki.ca_file, *cli[3:]], capture_output=True,
                        env=env, timeout=120)  # fmt: skip
    assert ok.returncode == 0 and ok.stdout == data, ok.stderr.decode()
    refused = subprocess.run(cli, capture_output=True, env=env, timeout=120)
    assert refused.returncode != 0 and refused.stdout == b""
    # tls_verify=False (testing only) accepts the certificate unchecked.
    unchecked = make_fs([w], tls=True, tls_verify=False, fallback=False)
    assert unchecked.cat_file(next(iter(files))) == next(iter(files.values()))


def botocore_unsigned():
    from botocore import UNSIGNED

    return UNSIGNED


def test_mutual_tls_between_clients_workers_and_peers(
    start_worker, make_fs, pki, files, s3_server, etcd_server
):
    worker_cert, worker_key = pki.issue("worker")
    client_cert, client_key = pki.issue("client")
    other = Pki(pki.dir, "other")
    stranger_cert, stranger_key = other.issue("stranger")
    args = _tls_args(
        worker_cert,
        worker_key,
        "--tls-client-ca", pki.ca_file,
        "--tls-ca", pki.ca_file,
        "--etcd", etcd_server.endpoint,
        "--etcd-lease-ttl", "5s",
        "--s3-anonymous",
    )  # fmt: skip
    http = {"verify": pki.ca_file, "cert": (client_cert, client_key)}
    mount = f"s3://{s3_server.bucket}"
    workers = [start_worker(mount, extra_args=args, http=http) for _ in range(3)]
    for w in workers:
        w.wait_registered()
    # Without a client certificate, or with one of another CA, the
    # handshake fails: nothing is served.
    for cert in (None, (stranger_cert, stranger_key)):
        with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
            requests.get(f"{workers[0].url}/v1/file_info",
                         params={"path": next(iter(files))}, verify=pki.ca_file, cert=cert,
                         timeout=5)  # fmt: skip
    nocert = make_fs(workers, tls_ca=pki.ca_file, fallback=False, retries=0)
    with pytest.raises(ConnectionError):
        nocert.cat_file(next(iter(files)))
    fs = make_fs(
        workers,
        tls_ca=pki.ca_file,
        tls_cert=client_cert,
        tls_key=client_key,
        fallback=False,
    )
    _read_all(fs, files)
    # Worker to worker: S3 GETs sent to one worker are forwarded to the
    # owners over mutual TLS (the worker presents its own certificate).
    deadline = time.monotonic() + 20
    forwarded = 0.0
    while forwarded == 0 and time.monotonic() < deadline:
        for path, data in files.items():
            r = requests.get(f"{workers[0].s3_url}/{path}", timeout=10, **http)
            assert r.status_code == 200 and r.content == data, path
        forwarded = workers[0].metric("alluxiofs_s3_forwarded_total")
        time.sleep(0.2)
    assert forwarded > 0, workers[0].log_tail()
    assert workers[0].metric("alluxiofs_s3_owner_failovers_total") == 0, workers[0].log_tail()


def test_certificates_reload_on_sighup(start_worker, make_fs, pki, files, s3_server, tmp_path):
    cert, key = pki.issue("server")
    w = start_worker(f"s3://{s3_server.bucket}", extra_args=_tls_args(cert, key),
                     http={"verify": pki.ca_file})  # fmt: skip
    path, data = next(iter(files.items()))

    def served_with(ca_file: str) -> bool:
        try:
            return requests.get(f"{w.url}/healthz", verify=ca_file, timeout=5).status_code == 200
        except requests.exceptions.SSLError:
            return False

    assert served_with(pki.ca_file)
    # A new certificate from another CA is written over the old files.
    new = Pki(tmp_path, "renewed")
    new_cert, new_key = new.issue("server")
    for src, dst in ((new_cert, cert), (new_key, key)):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    assert served_with(pki.ca_file), "nothing changes before the signal"
    w.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while not served_with(new.ca_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served_with(new.ca_file), w.log_tail()
    assert not served_with(pki.ca_file)
    w.http = {"verify": new.ca_file}
    assert make_fs([w], tls_ca=new.ca_file, fallback=False).cat_file(path) == data
    # A broken file at the next SIGHUP: the certificate in use stays, the
    # log says why, the worker keeps serving.
    with open(key, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nbroken\n")
    w.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS reload failed" not in w.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "TLS reload failed" in w.log_tail()
    assert w.alive and served_with(new.ca_file)


def test_bad_tls_settings_stop_the_worker_with_a_clear_error(
    start_worker, pki, s3_server, tmp_path
):
    cert, _ = pki.issue("server")
    _, other_key = pki.issue("other")
    cases = [
        (["--tls-cert", cert], "tls_cert and tls_key go together"),
        (_tls_args(cert, str(tmp_path / "missing.key")), "tls_key"),
        (_tls_args(cert, other_key), "does not fit tls_key"),
        (["--tls-client-ca", pki.ca_file], "tls_client_ca needs tls_cert"),
    ]
    for args, message in cases:
        with pytest.raises(RuntimeError, match=message):
            start_worker(f"s3://{s3_server.bucket}", extra_args=args)


def test_etcd_over_tls_with_client_certificates(start_worker, make_fs, pki, files, s3_server):
    from etcd_server import EtcdServer

    etcd_cert, etcd_key = pki.issue("etcd")
    member_cert, member_key = pki.issue("member")
    etcd = EtcdServer(tls={"cert": etcd_cert, "key": etcd_key, "ca": pki.ca_file})
    try:
        assert etcd.endpoint.startswith("https://")
        w = start_worker(
            f"s3://{s3_server.bucket}",
            extra_args=[
                "--etcd", etcd.endpoint,
                "--etcd-tls-ca", pki.ca_file,
                "--etcd-tls-cert", member_cert,
                "--etcd-tls-key", member_key,
            ],
        )  # fmt: skip
        w.wait_registered()
        import fsspec

        fs = fsspec.filesystem(
            "alluxiofs",
            etcd_hosts=etcd.endpoint,
            etcd_tls_ca=pki.ca_file,
            etcd_tls_cert=member_cert,
            etcd_tls_key=member_key,
            target_protocol="s3",
            target_options=s3_server.target_options(),
            fallback=False,
            skip_instance_cache=True,
        )
        _read_all(fs, files)
        assert fs.stats()["ufs_fallback_reads"] == 0
        # Without a client certificate etcd refuses the client, and the
        # error names the cluster and the endpoint.
        with pytest.raises(Exception, match="etcd"):
            fsspec.filesystem(
                "alluxiofs",
                etcd_hosts=etcd.endpoint,
                etcd_tls_ca=pki.ca_file,
                target_protocol="s3",
                target_options=s3_server.target_options(),
                skip_instance_cache=True,
                connect_timeout=2,
            ).cat_file(next(iter(files)))
    finally:
        etcd.close()
