"""The worker's HTTP API and S3 endpoint under a structured fuzzer (docs/reliability.md,
"HTTP fuzzing"; the fuzzer is scripts/http_fuzz.py).

One worker over a ``file://`` mount with a secret file beside it receives
``ALLUXIOFS_FUZZ_REQUESTS`` generated requests (3000 by default; ``make fuzz`` sends
100,000), every endpoint, structured and malformed. It passes when no request gets a 5xx
(but the documented S3 ``501 NotImplemented`` and ``507 quota_exceeded``), no answer holds a
byte of the secret or of /etc/passwd, the worker neither exits nor logs a panic, and after the
run it is healthy, reads the right bytes, and nothing outside the mount changed.
``ALLUXIOFS_FUZZ_SEED`` sets the seed (20261203 by default, so that ``make test`` is the same
every time; ``random`` draws one), printed with the summary and with every failing request
(``scripts/http_fuzz.py --seed S --replay I`` sends request I again).

Bugs the fuzzer finds and that are not fixed yet go in ``http_fuzz.KNOWN_BUGS`` (empty now:
the nine it found are fixed, each with its test at the end of this file): the fuzz run
reports them apart and fails on anything else.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import random
import socket
import time
import urllib.parse

import http_fuzz as hf  # in scripts/, which harness puts on sys.path
from harness import Worker

REQUESTS = int(os.environ.get("ALLUXIOFS_FUZZ_REQUESTS", "3000"))
# A fixed seed by default, so that `make test` sends the same requests every time;
# ALLUXIOFS_FUZZ_SEED=random (as `make fuzz` does) draws one.
_seed = os.environ.get("ALLUXIOFS_FUZZ_SEED", "20261203")
SEED = random.SystemRandom().randrange(2**32) if _seed == "random" else int(_seed)


def start(start_worker, tmp_path, links: bool = False) -> tuple[hf.Layout, Worker]:
    lay = hf.make_layout(tmp_path, links=links)
    w = start_worker(
        lay.mount_url,
        cache_dir=lay.cache_dir,
        capacity=hf.Layout.CAPACITY,
        extra_args=lay.extra_args(),
        env={"RUST_BACKTRACE": "1"},
    )
    return lay, w


def run_fuzz(lay: hf.Layout, w: Worker, count: int, max_findings: int = 25) -> hf.Report:
    before = lay.outside()
    gen = hf.Gen(lay, w.port, w.s3_port)
    sender = hf.Sender(w.host, {"http": w.port, "s3": w.s3_port})
    try:
        rep = hf.fuzz(gen, sender, SEED, count, lambda: w.alive, w.log_path, None, max_findings)
    finally:
        sender.close()
    rep.final_problems = (
        hf.final_checks(lay, w.host, w.port, w.s3_port, before)
        if w.alive
        else ["the worker is not running"]
    )
    return rep


def call(
    port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None
) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body or None, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def q(url: str) -> str:
    return urllib.parse.quote(url, safe="")


def range_path(url: str) -> str:
    return f"/v1/range/{hashlib.sha256(url.encode()).hexdigest()}?ufsFullPath={q(url)}"


def panics(w: Worker) -> list[str]:
    return [ln for ln in w.log_path.read_text(errors="replace").splitlines() if "panicked" in ln]


# -- the oracles themselves -----------------------------------------------------------------


def test_the_oracles_catch_what_they_must(tmp_path):
    """The leak oracle finds the secret in every form and part; the 5xx exceptions, the
    known-bug matching and the request generator are what the fuzz run relies on."""
    lay = hf.make_layout(tmp_path)
    s = lay.secret
    oracle = hf.LeakOracle(s)
    for leaked in [
        s,
        b"xx" + s[20:32] + b"yy",
        s.upper(),
        s.hex().encode(),
        base64.b64encode(s),
        base64.b64encode(b"A" + s),
        base64.urlsafe_b64encode(b"AB" + s),
        b"HTTP/1.1 200 OK\r\n\r\nroot:x:0:0:root:/root:/bin/bash",
    ]:
        assert oracle.find(b"answer: " + leaked + b" end") is not None, leaked
    rnd = random.Random(1)
    clean = [rnd.randbytes(1 << 20), hf.path_id(lay.url("small.bin")).encode(), s[:11]]
    for data in clean:
        assert oracle.find(data) is None
    gen = hf.Gen(lay, 1, 2)
    r1, r2 = gen.request(5, 77), gen.request(5, 77)
    assert r1.describe() == r2.describe() and r1.raw == r2.raw
    assert gen.request(5, 78).describe() != r1.describe()
    s3 = hf.Req(0, "s3", "s3:other", "GET", "/")
    assert hf.allowed_5xx(s3, 501, b"<Error><Code>NotImplemented</Code></Error>")
    assert not hf.allowed_5xx(s3, 500, b"<Error><Code>NotImplemented</Code></Error>")
    assert not hf.allowed_5xx(hf.Req(0, "http", "range", "GET", "/"), 501, b"")
    frames = hf.batch_frames(
        len(b'{"index":0,"status":200,"len":2}').to_bytes(4, "big")
        + b'{"index":0,"status":200,"len":2}ab'
        + len(b'{"index":1,"status":502}').to_bytes(4, "big")
        + b'{"index":1,"status":502}'
    )
    assert [f["status"] for f in frames] == [200, 502]
    bug = hf.KnownBug("too-long", "a name too long", ("5xx",), r"File name too long")
    f = hf.Finding("5xx", "status 502 ufs_failure: x: File name too long (os error 36)", s3, 0)
    assert bug.matches(f)
    assert not bug.matches(hf.Finding("5xx", "status 500 internal: x", s3, 0))
    assert not bug.matches(hf.Finding("panic", "File name too long", s3, 0))


# -- the fuzz run ---------------------------------------------------------------------------


def test_http_fuzz(start_worker, tmp_path, capsys):
    """ALLUXIOFS_FUZZ_REQUESTS requests at every endpoint: no 5xx, no leak, no crash."""
    lay, w = start(start_worker, tmp_path)
    rep = run_fuzz(lay, w, REQUESTS)
    with capsys.disabled():
        print(f"\n{rep.summary()}")
    assert rep.sent == REQUESTS or rep.findings, rep.summary()
    assert not rep.findings, "\n\n".join(map(str, rep.findings[:10]))
    assert not rep.final_problems, rep.final_problems
    assert w.alive
    assert w.healthz()["status"] == "ok"
    assert w.metrics()["alluxiofs_requests_total"] > 0
    # The run reached every endpoint, and past the argument checks of the main ones.
    reached = set(rep.by_endpoint)
    wanted = {e[0] for e in hf.Gen.HTTP} | {e[0] for e in hf.Gen.S3}
    if REQUESTS >= 2000:
        assert wanted <= reached, wanted - reached
        served = {ep for ep, c in rep.by_endpoint.items() if c["2xx"]}
        main = ["range", "page", "info", "files", "batch", "write", "load/file", "pin"]
        main += ["s3:GetObject", "s3:ListObjectsV2", "s3:PutObject", "s3:HeadObject"]
        for ep in main:
            assert ep in served, f"no {ep} request succeeded: {rep.summary()}"
        assert rep.statuses[403] > REQUESTS // 50, "traversal and outside URLs get 403s"
        assert rep.by_endpoint["raw (any endpoint)"]["4xx"] > 0, "malformed requests get 4xx"


def test_http_fuzz_with_symlinks_out_of_the_mount(start_worker, tmp_path, capsys):
    """The same run with symlinks in the mount to the secret and to the mount's parent."""
    lay, w = start(start_worker, tmp_path, links=True)
    rep = run_fuzz(lay, w, min(REQUESTS, 3000), max_findings=5)
    with capsys.disabled():
        print(f"\n{rep.summary()}")
    assert not rep.findings, "\n\n".join(map(str, rep.findings[:10]))
    assert not rep.final_problems, rep.final_problems


# -- the bugs the fuzzer found, fixed ----------------------------------------------------------


def test_symlinks_do_not_lead_out_of_the_mount(start_worker, tmp_path):
    lay, w = start(start_worker, tmp_path, links=True)
    bad = []
    for name in ["link-to-secret", "nested/rel-link", "dir-link/mnt.secret"]:
        st, body = call(w.port, "GET", range_path(lay.url(name)))
        if lay.secret in body or st != 403:
            bad.append(f"GET /v1/range of {name}: {st}, {body[:80]!r}")
        st, body = call(w.s3_port, "GET", f"/{hf.BUCKET}/{name}")
        if lay.secret in body or st != 403:
            bad.append(f"S3 GET {name}: {st}, {body[:80]!r}")
    st, _ = call(w.port, "PUT", f"/v1/write?path={q(lay.url('dir-link/escaped.bin'))}", b"x")
    if (lay.root / "escaped.bin").exists():
        bad.append(f"PUT /v1/write of dir-link/escaped.bin: {st}, wrote {lay.root}/escaped.bin")
    st, _ = call(w.s3_port, "DELETE", f"/{hf.BUCKET}/dir-link/mnt.secret")
    if not (lay.root / "mnt.secret").exists():
        bad.append(f"S3 DELETE dir-link/mnt.secret: {st}, removed the secret")
    assert not bad, bad


def test_a_write_over_a_directory_is_a_4xx(start_worker, tmp_path):
    lay, w = start(start_worker, tmp_path)
    st, body = call(w.port, "PUT", f"/v1/write?path={q(lay.url('nested'))}", b"x")
    assert 400 <= st < 500, (st, body)
    st, body = call(w.s3_port, "PUT", f"/{hf.BUCKET}/emptydir", b"x")
    assert 400 <= st < 500, (st, body)


def test_s3_delete_of_a_directory_is_no_5xx(start_worker, tmp_path):
    _, w = start(start_worker, tmp_path)
    st, body = call(w.s3_port, "DELETE", f"/{hf.BUCKET}/nested/dir")
    assert st < 500, (st, body)


def test_a_name_over_255_bytes_is_a_4xx(start_worker, tmp_path):
    lay, w = start(start_worker, tmp_path)
    url = lay.url("a" * 256)
    answers = {
        "info": call(w.port, "GET", f"/v1/info?path={q(url)}"),
        "files": call(w.port, "GET", f"/v1/files?path={q(url)}"),
        "range": call(w.port, "GET", range_path(url)),
        "write": call(w.port, "PUT", f"/v1/write?path={q(url)}", b"x"),
        "S3 GET": call(w.s3_port, "GET", f"/{hf.BUCKET}/{'a' * 256}"),
    }
    assert all(st < 500 for st, _ in answers.values()), {k: v[0] for k, v in answers.items()}


def test_a_name_ending_in_hash_digits_is_a_4xx(start_worker, tmp_path):
    lay, w = start(start_worker, tmp_path)
    (lay.mount_dir / "part#1").write_bytes(b"a file on disk")
    url = lay.url("part#1")
    answers = {
        "range": call(w.port, "GET", range_path(url)),
        "info": call(w.port, "GET", f"/v1/info?path={q(url)}"),
        "write": call(w.port, "PUT", f"/v1/write?path={q(lay.url('new#2'))}", b"x"),
        "S3 GET": call(w.s3_port, "GET", f"/{hf.BUCKET}/part%231"),
        "S3 PUT": call(w.s3_port, "PUT", f"/{hf.BUCKET}/new%233", b"x"),
    }
    assert all(st < 500 for st, _ in answers.values()), {k: v[0] for k, v in answers.items()}


def test_s3_directory_marker_over_a_file_is_a_4xx(start_worker, tmp_path):
    _, w = start(start_worker, tmp_path)
    st, body = call(w.s3_port, "PUT", f"/{hf.BUCKET}/small.bin/", b"")
    assert st < 500, (st, body)


def test_s3_range_of_an_empty_object_is_a_416(start_worker, tmp_path):
    _, w = start(start_worker, tmp_path)
    try:
        st, _ = call(w.s3_port, "GET", f"/{hf.BUCKET}/empty.bin", headers={"Range": "bytes=-1"})
    except (http.client.HTTPException, OSError) as e:
        st = repr(e)
    assert st in (200, 206, 416), st
    assert not panics(w), panics(w)


def test_ttl_seconds_overflow_is_a_400(start_worker, tmp_path):
    lay, w = start(start_worker, tmp_path)
    st, body = call(w.port, "POST", f"/v1/ttl?path={q(lay.mount_url)}&seconds={2**64 - 1}")
    assert st < 500, (st, body)
    time.sleep(2.5)  # the sweeper runs every second
    assert not panics(w), panics(w)


def test_s3_unreadable_body_is_a_400(start_worker, tmp_path):
    _, w = start(start_worker, tmp_path)
    head = f"POST /{hf.BUCKET}?delete HTTP/1.1\r\nHost: x\r\n"
    answers = []
    for request, shut in [
        # The body ends before its Content-Length.
        (f"{head}Content-Length: 100\r\n\r\n<Delete>".encode(), True),
        # A chunk size that does not fit in 64 bits.
        (f"{head}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
         + b"8\r\n<Delete>\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n", False),
    ]:  # fmt: skip
        with socket.create_connection(("127.0.0.1", w.s3_port), timeout=10) as s:
            s.sendall(request)
            if shut:
                s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        answers.append(answer[:12])
    assert all(a.startswith(b"HTTP/1.1 4") for a in answers), answers
