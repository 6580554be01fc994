"""The soak under faults, short: ``scripts/soak.py`` with the ``make test`` parameters.

The same code as ``make soak`` (10 minutes, 64 readers), for about 40 s with
8 readers in 2 processes: three workers found through etcd, ``replicas=2``,
worker SIGKILLs and restarts, an etcd restart, the UFS answering ``503
SlowDown`` / ``503 ServiceUnavailable`` / resetting / cutting answers, and a
cache directory on a tmpfs smaller than its configured capacity. Every check
of the soak must pass: 0 wrong bytes, 0 failed reads, reads of every kind in
every fault phase, RSS and descriptors of the never-killed worker flat, each
cache within its capacity at every sample, the small disk full and its
ENOSPC counted.

Needs root (or CAP_SYS_ADMIN) for the tmpfs mount and etcd; without them the
test fails with the reason, it is not skipped.
"""

from __future__ import annotations

import os

import pytest
import soak  # scripts/soak.py (harness puts scripts/ on sys.path)

pytestmark = pytest.mark.timeout(240)


def test_short_soak_under_faults(tmp_path, s3_server):
    # The session's S3 server kind (Garage, else moto); the soak starts its own
    # so that its faults and its bucket touch no other test.
    cfg = soak.SoakConfig.short()
    cfg.s3 = s3_server.kind
    if os.geteuid() != 0:
        pytest.fail("the soak mounts a tmpfs for its small cache disk: run as root")
    report = soak.Soak(cfg, tmp_path).run()
    text = soak.format_report(report)
    print(text)
    failed = [f"{name}: {detail}" for name, ok, detail in report.checks if not ok]
    assert not failed, "\n".join(failed) + "\n\n" + text
    # The checks above are the soak's; these say it measured what it claims.
    assert len(report.checks) >= 15
    assert report.small_fs["full_at_s"] is not None
    assert report.reads["small"]["ufs_fault"]["count"] > 0
    # The ordinary caches were measured on filesystems of their own.
    assert all("disk" in w for row in report.samples for w in row["workers"][:2])
    # The RSS chart of docs/reliability.md renders from the report: a line per
    # worker lifetime (the three first ones and every restart).
    import dataclasses
    import json

    import soak_chart

    data = json.loads(json.dumps(dataclasses.asdict(report), default=str))
    chart = soak_chart.svg(data)
    restarts = sum(1 for _t, what in data["events"] if what.startswith("restarted"))
    assert chart.count('<polyline class="rss') == 3 + restarts, chart[:2000]
    # Everything stopped: no worker, etcd, proxy or S3 server left, no mount.
    assert not any(line.split()[1].startswith(str(tmp_path)) for line in open("/proc/mounts")), (
        "the small cache disk is still mounted"
    )


def test_fault_proxy_modes_as_an_s3_client_sees_them(s3_server, tmp_path):
    """The soak's UFS faults, through boto3 with its retries off: what each mode of
    ``alluxiofs-delay-proxy`` looks like to an S3 client, switched while it runs."""
    import boto3
    import botocore.config
    import botocore.exceptions
    from harness import FaultProxy

    proxy = FaultProxy(s3_server.endpoint_url.split("://", 1)[1], tmp_path / "proxy")
    try:
        client = boto3.client(
            "s3",
            endpoint_url=proxy.url,
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=s3_server.secret_key,
            region_name=s3_server.region,
            config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
        body = os.urandom(1 << 20)  # 16 proxy chunks: a cut lands inside it
        client.put_object(Bucket=s3_server.bucket, Key="soak-proxy/obj", Body=body)

        def get() -> bytes:
            r = client.get_object(Bucket=s3_server.bucket, Key="soak-proxy/obj")
            return r["Body"].read()

        assert get() == body
        for mode, code in (("slowdown", "SlowDown"), ("unavailable", "ServiceUnavailable")):
            proxy.set(mode)
            with pytest.raises(botocore.exceptions.ClientError) as e:
                get()
            assert e.value.response["Error"]["Code"] == code
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        proxy.set("reset")
        with pytest.raises(botocore.exceptions.ConnectionClosedError, match="closed before"):
            get()
        proxy.set("cut")
        with pytest.raises(
            (botocore.exceptions.ResponseStreamingError, botocore.exceptions.HTTPClientError)
        ):
            get()
        proxy.set("pass")
        assert get() == body
        proxy.set("slowdown", 0.5)
        outcomes = []
        for _ in range(40):
            try:
                outcomes.append(get() == body)
            except botocore.exceptions.ClientError:
                outcomes.append(None)
        assert 5 < outcomes.count(None) < 35 and outcomes.count(False) == 0, outcomes
        assert proxy.stats()["faults_injected"] >= 4 + outcomes.count(None)
    finally:
        proxy.close()
