#!/usr/bin/env python3
"""A structured HTTP fuzzer against a live alluxiofs worker (docs/reliability.md, "HTTP fuzzing").

It builds a ``file://`` mount of a few files (multi-page with a 64 KiB page, empty, nested,
names with spaces, unicode and percent signs) and puts a *secret* file beside the mount
(outside it: ``mnt.secret``, whose name also starts with the mount's, and
``mnt-private/key.bin``); ``--links`` adds symlinks inside the mount that point at the
secret and at the directory above the mount. It then sends generated requests to every
endpoint of the worker's HTTP API and of its S3 endpoint: methods, paths, ``path_id``
values, query strings with traversal, encodings, other schemes, NUL bytes, long and
invalid UTF-8 values, numbers that overflow, Range and other headers, bodies of the wrong
shape, and (a fraction of the requests) malformed HTTP sent over a raw socket.

Oracles, per request: no status >= 500 (but the documented answers to input the worker
does not serve: the S3 endpoint's ``501 NotImplemented`` and ``/v1/pin``'s
``507 quota_exceeded``, counted apart); no answer holds the secret (its bytes, hex or
base64, any 12 characters of it) or ``/etc/passwd``; the worker stays alive and logs no
panic. After the run: ``/healthz`` is ok, reads of a file no request named return the
right bytes (HTTP API and S3), files of the mount read as they are on disk, and nothing
outside the mount (the secret included) was created, changed or removed.

Every request is generated from ``random.Random(f"{seed}:{index}")`` alone, so a failing
request is printed with its seed and index, and ``--seed S --replay I`` sends it again to a
fresh worker (requests that reuse an S3 upload id learnt from an earlier answer may need
the run up to them).

    .venv/bin/python scripts/http_fuzz.py --requests 100000            # a fresh worker
    .venv/bin/python scripts/http_fuzz.py --seed 7 --replay 1234 -v    # one request again

``tests/test_http_fuzz.py`` runs the same fuzzer under pytest (``ALLUXIOFS_FUZZ_REQUESTS``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import html
import http.client
import json
import os
import random
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PAGE_SIZE = 64 * 1024
BUCKET = "fuzz"
BODY_CAP = 16 << 20  # bytes read of one answer at most
HTTP_TIMEOUT = 20.0
RAW_TIMEOUT = 4.0
PASSWD_MARK = b"root:x:0:0:"


# -- the files -----------------------------------------------------------------------------


@dataclass
class Layout:
    """The directories of one fuzz run; ``outer`` holds everything."""

    outer: Path
    root: Path  # the mount's parent: the secret lives here
    mount_dir: Path
    cache_dir: Path
    secret: bytes
    secret_files: list[Path]
    files: dict[str, bytes]  # name under the mount -> content at the start
    dirs: list[str]
    pristine: str  # a file that no generated request names
    links: list[str] = field(default_factory=list)  # symlinks under the mount (names)

    @property
    def mount_url(self) -> str:
        return f"file://{self.mount_dir}"

    def url(self, name: str) -> str:
        return f"{self.mount_url}/{name}"

    CAPACITY = "512MiB"

    def extra_args(self) -> list[str]:
        """Worker arguments besides the mount, the cache dir and its capacity."""
        return [
            "--memory-capacity", "64MiB",
            "--page-size", "64KiB",
            "--s3-port", "0",
            "--s3-anonymous",
            "--s3-bucket", f"{self.mount_url}={BUCKET}",
        ]  # fmt: skip

    def worker_args(self) -> list[str]:
        """All the arguments of ``alluxiofs worker`` for this layout."""
        return [
            "--mount", self.mount_url,
            "--cache-dir", str(self.cache_dir),
            "--capacity", self.CAPACITY,
            *self.extra_args(),
        ]  # fmt: skip

    def restore(self) -> None:
        """Put back the secret and the links as they were, remove anything new outside."""
        for p in self.secret_files:
            if p.is_symlink() or p.is_dir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(self.secret)
        keep = {self.mount_dir, self.cache_dir, *self.secret_files}
        keep |= {p.parent for p in self.secret_files} | {self.root, self.root.parent}
        for dirpath, dirnames, filenames in os.walk(self.outer, topdown=True):
            d = Path(dirpath)
            dirnames[:] = [n for n in dirnames if d / n not in (self.mount_dir, self.cache_dir)]
            for n in [*dirnames, *filenames]:
                p = d / n
                if p not in keep and not any(k.is_relative_to(p) for k in keep):
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p, ignore_errors=True)
                    elif p.exists() or p.is_symlink():
                        p.unlink()
        for name, target in self.link_targets().items():
            p = self.mount_dir / name
            if not (p.is_symlink() and Path(os.readlink(p)) == target):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.exists() or p.is_symlink():
                    p.unlink()
                p.parent.mkdir(parents=True, exist_ok=True)
                p.symlink_to(target)

    def link_targets(self) -> dict[str, Path]:
        """The symlinks of the mount (``links``) and where they point."""
        if not self.links:
            return {}
        return {
            "link-to-secret": self.root / "mnt.secret",
            "nested/rel-link": Path("..") / ".." / "mnt.secret",
            "dir-link": self.root,
        }

    def outside(self) -> dict[str, tuple]:
        """Everything under ``outer`` but the mount and the cache: kind, size, digest."""
        seen: dict[str, tuple] = {}
        skip = {self.mount_dir, self.cache_dir}
        for dirpath, dirnames, filenames in os.walk(self.outer):
            d = Path(dirpath)
            dirnames[:] = [n for n in dirnames if d / n not in skip]
            for n in dirnames:
                p = d / n
                rel = str(p.relative_to(self.outer))
                seen[rel] = ("link", os.readlink(p)) if p.is_symlink() else ("dir",)
            for n in filenames:
                p = d / n
                rel = str(p.relative_to(self.outer))
                if p.is_symlink():
                    seen[rel] = ("link", os.readlink(p))
                else:
                    data = p.read_bytes()
                    seen[rel] = ("file", len(data), hashlib.sha256(data).hexdigest())
        return seen


def make_layout(base: Path, links: bool = False) -> Layout:
    """Create the mount, the secret beside it and (``links``) symlinks pointing out of it."""
    outer = base / "outer"
    root = outer / "root"
    mnt = root / "mnt"
    cache = outer / "cache"
    for d in (mnt / "nested" / "dir", mnt / "emptydir", root / "mnt-private", cache):
        d.mkdir(parents=True, exist_ok=True)
    # 64 hex characters from the OS, never from the seed: no request can carry them.
    secret = secrets.token_hex(32).encode()
    secret_files = [root / "mnt.secret", root / "mnt-private" / "key.bin"]
    for p in secret_files:
        p.write_bytes(secret)
    rnd = random.Random(20261203)
    files = {
        "small.bin": rnd.randbytes(100),
        "page.bin": rnd.randbytes(PAGE_SIZE),
        "multi.bin": rnd.randbytes(3 * PAGE_SIZE + 1234),
        "empty.bin": b"",
        "nested/n.txt": b"nested text\n",
        "nested/dir/deep.bin": rnd.randbytes(5000),
        "with space.bin": rnd.randbytes(300),
        "ünïcödé ñ.bin": rnd.randbytes(2 * PAGE_SIZE + 5),
        "percent%41%2e%2e.bin": rnd.randbytes(64),
        "q?mark#hash&amp=x.bin": rnd.randbytes(65),
        "plus+sign.bin": rnd.randbytes(66),
        "...": rnd.randbytes(10),
        ".hidden": rnd.randbytes(11),
    }
    for name, data in files.items():
        (mnt / name).write_bytes(data)
    pristine = f"pristine-{secrets.token_hex(6)}.bin"
    (mnt / pristine).write_bytes(rnd.randbytes(2 * PAGE_SIZE + 77))
    lay = Layout(
        outer=outer,
        root=root,
        mount_dir=mnt,
        cache_dir=cache,
        secret=secret,
        secret_files=secret_files,
        files=files,
        dirs=["nested", "nested/dir", "emptydir"],
        pristine=pristine,
    )
    if links:
        lay.links = ["link-to-secret", "nested/rel-link", "dir-link", "dir-link/mnt.secret"]
        for name, target in lay.link_targets().items():
            (mnt / name).symlink_to(target)
    return lay


def quote(s: str, safe: str = "/") -> str:
    """Percent-encode ``s`` as UTF-8 (lone surrogates too: invalid UTF-8 on purpose)."""
    return urllib.parse.quote(s, safe=safe, errors="surrogatepass")


def quote_plus(s: str) -> str:
    return urllib.parse.quote_plus(s, errors="surrogatepass")


def path_id(url: str) -> str:
    """The worker's ``path_id`` of a normalized URL."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


# -- the oracle of leaked bytes ------------------------------------------------------------


class LeakOracle:
    """Finds any 12 characters of the secret (or of its hex form, any 16 of its base64
    forms) in an answer, and ``/etc/passwd``."""

    HEX_WINDOW = 12
    B64_WINDOW = 16
    _hex_runs = re.compile(rb"[0-9A-Fa-f]{12,}")
    _b64_runs = re.compile(rb"[A-Za-z0-9+/_-]{16,}")

    def __init__(self, secret: bytes):
        self.secret = secret
        hex_forms = [secret.lower(), secret.upper(), secret.hex().encode()]
        b64_forms = []
        for shift in range(3):
            for enc in (base64.b64encode, base64.urlsafe_b64encode):
                b64_forms.append(enc(secret[shift:]).rstrip(b"=")[:-2])
        self.hex_windows = self._windows(hex_forms, self.HEX_WINDOW)
        self.b64_windows = self._windows(b64_forms, self.B64_WINDOW)

    @staticmethod
    def _windows(forms: list[bytes], w: int) -> set[bytes]:
        return {f[i : i + w] for f in forms for i in range(len(f) - w + 1)}

    def find(self, data: bytes) -> str | None:
        """What of the secret (or of /etc/passwd) ``data`` holds; None when nothing."""
        if PASSWD_MARK in data:
            return "/etc/passwd content"
        for runs, windows, w, what in (
            (self._hex_runs, self.hex_windows, self.HEX_WINDOW, "secret bytes (or hex)"),
            (self._b64_runs, self.b64_windows, self.B64_WINDOW, "secret in base64"),
        ):
            for m in runs.finditer(data):
                run = m.group()
                for i in range(len(run) - w + 1):
                    if run[i : i + w] in windows:
                        return f"{what} at offset {m.start() + i}"
        return None


# -- requests ------------------------------------------------------------------------------


@dataclass
class Req:
    """One generated request: structured (sent with http.client) or raw bytes."""

    index: int
    target: str  # "http" (the API) or "s3"
    label: str  # the endpoint template it was made from
    method: str
    path: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunked: bool = False
    raw: bytes | None = None
    shut: bool = False  # half-close after sending (raw requests with a dangling body)

    def describe(self, limit: int = 1500) -> str:
        def cut(b: bytes | str) -> str:
            r = repr(b)
            return r if len(r) <= limit else f"{r[:limit]}... ({len(b)} in all)"

        if self.raw is not None:
            return (
                f"[{self.index}] {self.label} -> {self.target} raw socket"
                f"{' (then SHUT_WR)' if self.shut else ''}: {cut(self.raw)}"
            )
        hdrs = ", ".join(f"{k}: {cut(v)}" for k, v in self.headers)
        return (
            f"[{self.index}] {self.label} -> {self.target}: {self.method} {cut(self.path)}\n"
            f"    headers: {hdrs or '-'}\n"
            f"    body{' (chunked)' if self.chunked else ''}: {cut(self.body)}"
        )


_UNSAFE_PATH = re.compile(r"[\x00-\x20\x7f]|[^\x00-\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]|[^\x00-\xff]")

NUMBERS = [
    "0", "1", "-1", "2", "63", "100", "4095", "4096", "5000", str(PAGE_SIZE - 1),
    str(PAGE_SIZE), str(PAGE_SIZE + 1), str(3 * PAGE_SIZE), str(3 * PAGE_SIZE + 1234),
    str(2**31 - 1), str(2**31), str(2**32), str(2**53 + 1), str(2**63 - 1), str(2**63),
    str(2**64 - 1), str(2**64), str(10**30), "-0", "+1", " 1", "1 ", "0x10", "1e3", "1.5",
    "NaN", "inf", "-inf", "abc", "", "\u0661\u0662", "\uff11", "00000000000000000001", "9" * 400,
    "-" + "9" * 30, "1,2", "1;2", "%31", "\x00", "1\x00", "\u2212" + "1", "0b1", "1_000",
]  # fmt: skip
SIZES = [
    "", "0", "-1", "100MiB", "1GiB", "8MiB", "2GiB", "1.5GiB", "1e12", "abc", "MiB",
    "99999999999999999999999", "16MB", "64mib", "1 GiB", "-5MiB", str(2**64), "1KiB",
]  # fmt: skip
BOOLS = ["true", "false", "1", "0", "yes", "no", "TRUE", "", "maybe", "\x00", "t" * 1000]
OPTYPES = ["submit", "progress", "stop", "SUBMIT", "", "junk", "submit\x00", "progres"]
FORMATS = ["TEXT", "JSON", "json", "", "XML", "\u0000"]
RANGES = [
    "bytes=0-0", "bytes=0-", "bytes=-1", "bytes=-0", "bytes=5-2", "bytes=0--2", "bytes=--1",
    "bytes=0-1,3-4", "bytes=0-0,-1", "bytes=1-1", "bytes=18446744073709551615-",
    "bytes=0-18446744073709551616", "bytes=99999999999999999999-", "bytes=", "bytes",
    "items=0-1", "bytes=a-b", "bytes= 0 - 1 ", "bytes=0-1," * 300,
    f"bytes={PAGE_SIZE - 1}-{PAGE_SIZE}",
    "bytes=-18446744073709551616", "bytes=0-0, 1-1", "BYTES=0-1", "bytes=1-0", "bytes=-",
    f"bytes={3 * PAGE_SIZE}-", "bytes=100-200", "bytes=0-99999999", "bytes=\u00e9-1",
]  # fmt: skip
AUTHS = [
    "Bearer x", "Bearer ", "Bearer", "Basic Zm9vOmJhcg==", "Basic", "\x7f", "Bearer " + "a" * 9000,
    "AWS4-HMAC-SHA256 Credential=AKIAX/20200101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=00",
    "AWS4-HMAC-SHA256 Credential=", "AWS AKIA:c2ln", "AWS4-HMAC-SHA256", "Negotiate ,,,",
]  # fmt: skip
CONTENT_TYPES = [
    "application/json", "application/octet-stream", "text/plain", "application/xml",
    "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "", "a/b; c=\"d",
    "application/json; charset=utf-16",
]  # fmt: skip
DATES = [
    "Thu, 01 Jan 1970 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "junk", "",
    "Mon, 32 Foo 2020 25:61:61 GMT", "20200101T000000Z", "-1", "Sun, 06 Nov 1994 08:49:37 GMT",
]  # fmt: skip
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]
JUNK_METHODS = ["get", "FOO", "PROPFIND", "G" * 300, "M-SEARCH", "CONNECT", "BREW", "PUT1", "*"]


class Gen:
    """Makes request ``index`` of run ``seed``; the only state it keeps is S3 upload ids
    learnt from earlier answers."""

    def __init__(self, lay: Layout, http_port: int, s3_port: int, raw_share: float = 0.08):
        self.lay = lay
        self.m = lay.mount_url
        self.r = str(lay.root)
        self.http_port = http_port
        self.s3_port = s3_port
        self.raw_share = raw_share
        self.names = sorted(lay.files) + lay.links * 3
        # Learnt from answers (``learn``): S3 uploads (key, id) and their parts.
        self.uploads: list[tuple[str, str]] = []
        self.parts: dict[str, dict[int, str]] = {}
        self.to_root = os.path.relpath(lay.root, lay.cache_dir / ".s3-uploads")

    # -- values --------------------------------------------------------------------

    def junk(self, rng: random.Random, n: int | None = None) -> str:
        n = rng.randrange(0, 40) if n is None else n
        alphabet = rng.choice(
            [
                "abcxyz019",
                "./%\\:?#&=+ ",
                "".join(chr(c) for c in range(32, 127)),
                "\x00\x01\r\n\t\x7f",
                "éü中😀\u202e\ufeff\ud7ff",
            ]
        )
        return "".join(rng.choice(alphabet) for _ in range(n))

    def name(self, rng: random.Random) -> str:
        return rng.choice(self.names)

    def traversal(self, rng: random.Random, mutating: bool) -> str:
        m, r = self.m, self.r
        t = [
            f"{m}/../mnt.secret", f"{m}/nested/../../mnt.secret", f"{m}/%2e%2e/mnt.secret",
            f"{m}/%2E%2E%2Fmnt.secret", f"{m}/%252e%252e/mnt.secret", f"{m}/..%2fmnt.secret",
            f"{m}/..%5cmnt.secret", f"{m}/..\\mnt.secret", f"{m}/./../mnt.secret",
            f"{m}/.../mnt.secret", f"{m}/..;/mnt.secret", f"{m}/%c0%ae%c0%ae/mnt.secret",
            f"{m}/\u2025/mnt.secret", f"{m}/\uff0e\uff0e/mnt.secret", f"{m}/..",
            f"{m}/../", f"{m}/../mnt", f"{m}/../mnt/small.bin", f"{m}/./small.bin",
            f"{m}/nested/dir/../../../mnt-private/key.bin", f"{m}.secret", f"{m}-private/key.bin",
            f"{m}-private", f"{m}/%2e%2e%2fmnt-private%2fkey.bin", f"{m}/..%00/mnt.secret",
            f"{m}/.%2e/mnt.secret", f"{m}/%2e./mnt.secret", f"{m}/nested/%2e%2e/%2e%2e/mnt.secret",
            f"{m}//../mnt.secret", f"{m}/small.bin/../../mnt.secret", f"file://{r}/mnt/../mnt.secret",
            f"{m}/../../root/mnt.secret", f"{m}/dir-link/mnt.secret", f"{m}/link-to-secret",
        ]  # fmt: skip
        if not mutating:
            t += [
                f"{m}/../../../../../../../../etc/passwd", f"{m}/%2e%2e/" * 12 + "etc/passwd",
                f"{m}/..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
            ]  # fmt: skip
        return rng.choice(t)

    def secret_url(self, rng: random.Random) -> str:
        r = self.r
        s = rng.choice(["mnt.secret", "mnt-private/key.bin"])
        return rng.choice(
            [
                f"{r}/{s}", f"file://{r}/{s}", f"file://localhost{r}/{s}", f"file:{r}/{s}",
                f"FILE://{r}/{s}", f"file:////{r}/{s}", f"File://{r}/{s}", f" file://{r}/{s}",
                f"file://{r}/{s}?x=1", f"file://{r}/{s}#frag", f"file://{r}//{s}",
                f"file://{r}/{s}/", f"file://127.0.0.1{r}/{s}", f"file://{r}/./{s}",
                f"file://{quote(r)}/{s}", f"file://{r}/{s}%00",
            ]
        )  # fmt: skip

    def system_url(self, rng: random.Random) -> str:
        return rng.choice(
            [
                "/etc/passwd", "file:///etc/passwd", "file:///proc/self/environ", "/dev/zero",
                "file:///proc/self/cmdline", "file:///", "/", "file://", "file:///etc/",
                "file:///root/.ssh/id_rsa", "file://localhost/etc/passwd", "//etc/passwd",
            ]
        )  # fmt: skip

    def other_scheme(self, rng: random.Random) -> str:
        p = self.http_port
        return rng.choice(
            [
                "s3://alluxiofs-test/x", f"s3://{BUCKET}/small.bin", "s3://", "s3:///x",
                f"http://127.0.0.1:{p}/healthz", f"http://127.0.0.1:{p}/v1/rules",
                "https://169.254.169.254/latest/meta-data/", "gs://b/k", "gcs://b/k", "az://c/k",
                "s3a://b/k", "hdfs://nn/x", "ftp://x/y", "data:text/plain,hi",
                "javascript:alert(1)", "\\\\server\\share\\x", "C:\\Windows\\win.ini",
                "abfs://c@a.dfs.core.windows.net/x", "http://[::1]:1/", "http://user:pw@h/x",
                "unix:///tmp/x.sock", "mem://x", f"file+{self.m}",
            ]
        )  # fmt: skip

    def weird(self, rng: random.Random) -> str:
        m = self.m
        return rng.choice(
            [
                f"{m}/small.bin\x00../../mnt.secret", f"{m}/\x00", f"{m}/small.bin\x00",
                f"{m}/" + "a" * rng.choice([255, 256, 4096, 70000]), f"{m}" + "/a" * 3000,
                f"{m}/small.bin/", f"{m}//small.bin", f"{m}/small.bin/x", f"{m}/nested//dir",
                f"{m}/\r\nX: y", f"{m}/\udcff", f"{m}/\u202egnp.bin", f"{m}/%ff%fe",
                f"{m}/{self.junk(rng)}", "", " ", self.junk(rng), self.junk(rng, 3000),
                m.upper(), m + "/" * 50, m.replace("/", "\\"), f"{m}/empty.bin?offset=1",
                f"{m}/*", f"{m}/nested/*", f"{m}/?", f"{m}/#", f"{m}/%", f"{m}/part#1",
                f"{m}/nested/#0", f"{m}/x#",
            ]
        )  # fmt: skip

    def url(self, rng: random.Random, mutating: bool = False) -> str:
        """A UFS URL value (decoded; encoding comes later)."""
        k = rng.random()
        if k < 0.36:
            u = self.lay.url(self.name(rng))
        elif k < 0.44:
            u = rng.choice([self.m, self.m + "/", *(self.lay.url(d) for d in self.lay.dirs)])
        elif k < 0.48:
            u = self.lay.url(f"missing-{rng.randrange(1000)}.bin")
        elif k < 0.66:
            u = self.traversal(rng, mutating)
        elif k < 0.74:
            u = self.secret_url(rng)
        elif k < 0.78:
            u = self.other_scheme(rng) if mutating else self.system_url(rng)
        elif k < 0.84:
            u = self.other_scheme(rng)
        else:
            u = self.weird(rng)
        if rng.random() < 0.12:
            u = rng.choice(
                [
                    lambda s: s.replace("file://", "FILE://", 1),
                    lambda s: s + "/",
                    lambda s: s.replace("/", "//", 3),
                    lambda s: "\t" + s,
                    lambda s: s + "?a=b",
                    lambda s: s + "%00",
                    lambda s: s.replace("/", "/./", 2),
                ]
            )(u)
        return u

    def write_url(self, rng: random.Random) -> str:
        """A URL for a request that writes: never a system path, traversal at most two
        levels above the mount (still inside this run's directory)."""
        if rng.random() < 0.45:
            return self.lay.url(rng.choice([*self.names, *(f"w{i}.bin" for i in range(20))]))
        return self.url(rng, mutating=True)

    def enc(self, rng: random.Random, s: str) -> str:
        """Percent-encode a query value one of many ways."""
        k = rng.random()
        if k < 0.58:
            return quote(s, safe="")
        if k < 0.73:
            return quote(s, safe="/:")
        if k < 0.80:
            return quote(quote(s, safe=""), safe="")
        if k < 0.85:
            return quote_plus(s)
        if k < 0.90:
            return s
        q = quote(s, safe="")
        if k < 0.95:
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(q) + 1)
                q = (
                    q[:i]
                    + rng.choice(["%", "%g1", "%ff", "%c3", "%e2%80", "%00", "%2", "+"])
                    + q[i:]
                )
            return q
        return "".join(c if rng.random() < 0.5 else quote(c, safe="") for c in s)

    def num(self, rng: random.Random) -> str:
        if rng.random() < 0.3:
            return str(rng.randrange(-5, 4 * PAGE_SIZE))
        return rng.choice(NUMBERS)

    def value(self, rng: random.Random, kind: str) -> str:
        if kind == "url":
            return self.url(rng)
        if kind == "wurl":
            return self.write_url(rng)
        if kind == "num":
            return self.num(rng)
        if kind == "bool":
            return rng.choice(BOOLS)
        if kind == "size":
            return rng.choice(SIZES)
        if kind == "optype":
            return rng.choice(OPTYPES)
        if kind == "fmt":
            return rng.choice(FORMATS)
        if kind == "version":
            return rng.choice(['"x"', "", "1-2", '"' + "0" * 40 + '"', "*", self.junk(rng)])
        return self.junk(rng)

    def good_query(self, rng: random.Random, spec: list[tuple[str, str]], fixed: dict) -> str:
        """A well-formed query string for ``spec``, so that requests get past the argument
        checks too."""
        out = []
        for name, kind in spec:
            if name in fixed:
                v = fixed[name]
            elif kind in ("url", "wurl"):
                v = self.lay.url(self.name(rng))
            elif kind == "version" or rng.random() < 0.3:
                continue
            elif kind == "num":
                top = {"seconds": 100_000, "replicas": 3, "concurrency": 4}.get(name, 3 * PAGE_SIZE)
                v = str(rng.randrange(1 if top < 5 else 0, top))
            else:
                v = rng.choice(
                    {
                        "bool": ["true", "false"],
                        "size": ["100MiB", "1GiB"],
                        "optype": ["submit", "progress", "stop"],
                        "fmt": ["TEXT", "JSON"],
                    }.get(kind, ["x"])
                )
            out.append(f"{name}={quote(v, safe='')}")
        return "&".join(out)

    def query(
        self, rng: random.Random, spec: list[tuple[str, str]], fixed: dict | None = None
    ) -> str:
        """A query string for ``spec`` ((name, kind), ...): some params left out, some
        repeated, junk ones added, sometimes a huge one; ``fixed`` values where given."""
        parts = []
        fixed = fixed or {}
        for name, kind in spec:
            if rng.random() < 0.85:
                parts.append((name, fixed[name] if name in fixed else self.value(rng, kind)))
        if spec and rng.random() < 0.12:
            name, kind = rng.choice(spec)
            parts.append((name, self.value(rng, kind)))
        if rng.random() < 0.08:
            parts.append((rng.choice(["PATH", "path[]", "path%00", "", "=", "ufsfullpath"]), "x"))
        if rng.random() < 0.03:
            parts += [(f"p{i}", "v") for i in range(rng.choice([100, 2000]))]
        if rng.random() < 0.2:
            rng.shuffle(parts)
        out = []
        for k, v in parts:
            ek = quote(k, safe="%[]=") if rng.random() < 0.95 else k
            r = rng.random()
            if r < 0.03:
                out.append(ek)
            elif r < 0.05:
                out.append(f"{ek}={self.enc(rng, v)}={self.enc(rng, v)}")
            else:
                out.append(f"{ek}={self.enc(rng, v)}")
        q = "&".join(out)
        if rng.random() < 0.05:
            q = rng.choice(
                [q + "&", "&" + q, q + "&&&", q + "#frag", q + ";x=1", q.replace("&", ";")]
            )
        return q

    def pid(self, rng: random.Random) -> str:
        k = rng.random()
        if k < 0.45:
            return path_id(self.lay.url(self.name(rng)))
        if k < 0.55:
            return path_id(rng.choice([f"file://{self.r}/mnt.secret", f"{self.m}/../mnt.secret"]))
        real = path_id(self.lay.url(self.name(rng)))
        return rng.choice(
            [
                "0" * 64, "f" * 64, real.upper(), real[:63], real + "0", "g" * 64, "", "..",
                "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "a" * 10000, "é" * 64, "%00",
                secrets.token_hex(rng.randrange(1, 40)), real + "%00", real + "/", " " + real,
                quote(self.lay.url("small.bin"), safe=""),
            ]
        )  # fmt: skip

    def data(self, rng: random.Random) -> bytes:
        k = rng.random()
        if k < 0.12:
            return b""
        if k < 0.45:
            return rng.randbytes(rng.randrange(1, 100))
        if k < 0.78:
            return rng.randbytes(rng.randrange(100, 10_000))
        if k < 0.96:
            return rng.randbytes(rng.randrange(10_000, 200_000))
        return rng.randbytes(rng.randrange(200_000, 1_200_000))

    def batch_body(self, rng: random.Random) -> bytes:
        def files(n: int) -> list:
            out = []
            for _ in range(n):
                f = {"path": self.url(rng)}
                if rng.random() < 0.1:
                    f["version"] = self.value(rng, "version")
                out.append(f)
            return out

        k = rng.random()
        if k < 0.5:
            n = rng.choice([0, 1, 1, 2, 3, 5, 8, 20, 50])
            if rng.random() < 0.01:
                n = rng.choice([4096, 4097])
            doc: object = {"files": files(n)}
            if rng.random() < 0.4:
                doc["limit"] = rng.choice(
                    [0, 1, 10, PAGE_SIZE, 8 << 20, (8 << 20) + 1, -1, 2**64, 1.5, "8MiB", None]
                )
            if rng.random() < 0.05:
                doc["extra"] = {"nested": [1, 2, {"x": None}]}
            return json.dumps(doc).encode()
        if k < 0.8:
            u = self.url(rng)
            return json.dumps(
                rng.choice(
                    [
                        {"files": "x"}, {"files": {"path": u}}, {"files": [u]},
                        {"files": [{"path": 1}]}, {"files": [{"path": None}]}, {"files": [{}]},
                        {"file": [{"path": u}]}, [], {}, None, 1, "s", True,
                        {"files": [{"path": u, "version": 5}]}, {"files": None, "limit": "x"},
                        {"files": [{"path": u, "path2": u}], "limit": 10**400 // 10**399},
                        {"files": [{"path": [u]}]}, {"files": [[u]]},
                    ]
                )
            ).encode()  # fmt: skip
        u = json.dumps(self.url(rng))
        return rng.choice(
            [
                b"", rng.randbytes(rng.randrange(1, 2000)), b'{"files":[{"path":' + u.encode(),
                b'{"files":[{"path":"\xff\xfe"}]}', b"\xef\xbb\xbf" + b'{"files":[]}',
                b'{"files":[],"files":[{"path":' + u.encode() + b"}]}", b'{"limit":1e999999}',
                b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
                b'{"files":[' + b'{"path":"x"},' * 90_000 + b'{"path":"x"}]}',
                b'{"files":[{"path":"' + b"a" * 1_100_000 + b'"}]}', b"null", b"\x00" * 100,
                b'{"files":[{"path":"\\ud800"}]}', b'{"files":[{"path":"\\u0000"}]}',
            ]
        )  # fmt: skip

    def json_body(self, rng: random.Random) -> bytes:
        return rng.choice(
            [b"", b"{}", b'{"pins": 1}', rng.randbytes(100), b"[" * 1000, b'{"ttls": {"x": -1}}']
        )

    def headers(self, rng: random.Random, host: str, data_like: bool) -> list[tuple[str, str]]:
        h: list[tuple[str, str]] = []
        if rng.random() < 0.97:
            h.append(("Host", host))
        else:
            h.append(("Host", rng.choice(["", "evil", f"{BUCKET}.{host}", "a" * 5000, "[::1]"])))
        if rng.random() < (0.3 if data_like else 0.05):
            h.append(("Range", rng.choice(RANGES)))
        if rng.random() < 0.05:
            h.append(("Authorization", rng.choice(AUTHS)))
        if rng.random() < 0.05:
            h.append(("Accept-Encoding", rng.choice(["gzip", "br", "zstd, gzip;q=0", "*", "x"])))
        if rng.random() < 0.05:
            h.append(("Content-Type", rng.choice(CONTENT_TYPES)))
        if rng.random() < 0.03:
            h.append(("Expect", "100-continue"))
        if rng.random() < 0.05:
            h.append(("Connection", rng.choice(["close", "keep-alive", "Upgrade", "x, close"])))
            if rng.random() < 0.3:
                h.append(("Upgrade", rng.choice(["websocket", "h2c", "HTTP/2.0", "x"])))
        if rng.random() < 0.03:
            h.append(("X-Forwarded-For", rng.choice(["127.0.0.1", "1.2.3.4, ::1", "x" * 3000])))
        if rng.random() < 0.02:
            h.append(("X-Junk", "a" * rng.choice([8_000, 64_000, 200_000, 500_000])))
        if rng.random() < 0.02:
            h += [(f"X-H{i}", "v") for i in range(rng.choice([50, 99, 101, 500]))]
        if rng.random() < 0.02:
            h.append(("Cookie", "; ".join(f"c{i}=v" for i in range(rng.choice([10, 2000])))))
        return h

    def s3_headers(self, rng: random.Random) -> list[tuple[str, str]]:
        h: list[tuple[str, str]] = []
        pick = [
            ("If-Match", ['"x"', "*", "", '"' + "0" * 32 + '"', "W/\"x\"", '"a", "b"']),
            ("If-None-Match", ['"x"', "*", "", '"a", *']),
            ("If-Modified-Since", DATES),
            ("If-Unmodified-Since", DATES),
            ("x-amz-content-sha256", ["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
                                      "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "0" * 64, "junk"]),
            ("x-amz-copy-source", [f"{BUCKET}/../mnt.secret", f"/{BUCKET}/small.bin",
                                   f"{BUCKET}/%2e%2e/mnt.secret", "x", ""]),
            ("x-amz-date", ["20200101T000000Z", "junk", ""]),
            ("x-amz-decoded-content-length", ["-1", "0", "18446744073709551616", "x"]),
            ("Content-MD5", ["", "junk", "1B2M2Y8AsgTpgAmY7PhCfg=="]),
            ("x-amz-checksum-crc32", ["AAAAAA==", "junk"]),
            ("Content-Encoding", ["aws-chunked", "gzip", "br", "identity, x"]),
            ("x-amz-meta-a", ["b", "\u00e9", "x" * 3000]),
            ("x-amz-server-side-encryption", ["AES256", "junk"]),
            ("x-amz-expected-bucket-owner", ["1", ""]),
            ("x-amz-request-payer", ["requester"]),
        ]  # fmt: skip
        for name, values in pick:
            if rng.random() < 0.04:
                h.append((name, rng.choice(values)))
        return h

    # -- endpoints -----------------------------------------------------------------

    HTTP = [
        # label, method, path (None: built), query spec, body kind, weight
        ("page", "GET", None, [("ufsFullPath", "url"), ("offset", "num"), ("length", "num"),
                               ("version", "version")], None, 11),
        ("range", "GET", None, [("ufsFullPath", "url"), ("offset", "num"), ("length", "num"),
                                ("version", "version")], None, 13),
        ("batch", "POST", "/v1/batch", [], "batch", 8),
        ("info", "GET", "/v1/info", [("path", "url")], None, 7),
        ("files", "GET", "/v1/files", [("path", "url")], None, 6),
        ("node", "GET", "/v1/node", [("path", "url")], None, 3),
        ("invalidate", "POST", "/v1/invalidate", [("path", "url"), ("recursive", "bool")], None, 3),
        ("write", "PUT", "/v1/write", [("path", "wurl")], "data", 6),
        ("stats", "GET", "/v1/stats", [("since", "num")], None, 2),
        ("pin", "POST", "/v1/pin", [("path", "url")], None, 2),
        ("unpin", "POST", "/v1/unpin", [("path", "url")], None, 2),
        ("ttl", "POST", "/v1/ttl", [("path", "url"), ("seconds", "num")], None, 2),
        ("free", "POST", "/v1/free", [("path", "url"), ("recursive", "bool"), ("force", "bool")],
         None, 2),
        ("rules", "GET", "/v1/rules", [], "json", 1),
        ("load/file", "POST", "/v1/load/file", [("path", "wurl"), ("offset", "num"),
                                                ("length", "num"), ("bandwidth", "size")], None, 3),
        ("load", "GET", "/v1/load", [("path", "wurl"), ("opType", "optype"), ("bandwidth", "size"),
                                     ("replicas", "num"), ("concurrency", "num"),
                                     ("recursive", "bool"), ("progressFormat", "fmt"),
                                     ("verbose", "bool"), ("partialListing", "bool")], None, 3),
        ("healthz", "GET", "/healthz", [], None, 1),
        ("metrics", "GET", "/metrics", [], None, 1),
        ("junk-path", None, None, [("path", "url"), ("ufsFullPath", "url")], "data", 4),
    ]  # fmt: skip

    def http_path(self, rng: random.Random, label: str, pid: str = "") -> str:
        if label == "page":
            idx = self.num(rng) if rng.random() < 0.5 else str(rng.randrange(0, 6))
            return f"/v1/file/{self.penc(rng, pid)}/page/{self.penc(rng, idx)}"
        if label == "range":
            return f"/v1/range/{self.penc(rng, pid)}"
        pid = path_id(self.lay.url("small.bin"))
        return rng.choice(
            [
                "/", "/v1", "/v1/", "/v1/file", f"/v1/file/{pid}", f"/v1/file/{pid}/page",
                f"/v1/file/{pid}/page/", f"/v1/file/{pid}/page/0/x", "/v1/range/",
                f"/v1/range/{pid}/extra", "//v1/info", "/v1/../healthz", "/v1/info/",
                "/%76%31/info", "/v1/%69nfo", "*", "/v2/info", "/V1/INFO", "/v1/load/",
                "/v1/load/file/x", "/v1/write/x", "/v1/batch/", "/healthz/", "/metrics?x",
                f"http://127.0.0.1:{self.http_port}/v1/info", "/v1/info;x", "/v1/\x00info",
                "/" + "a" * rng.choice([100, 8000, 70000]),
                "/v1/range/" + "../" * 10 + "etc/passwd",
                "/.%2e/.%2e/etc/passwd", "/v1/file/../../../../etc/passwd/page/0",
                "/" + self.junk(rng), "/\u00e9", "/v1/stats/..", "/v1/rules?",
            ]
        )  # fmt: skip

    def penc(self, rng: random.Random, s: str) -> str:
        """Encode a path segment (sometimes not at all)."""
        return quote(s, safe="") if rng.random() < 0.85 else s

    def s3_key(self, rng: random.Random, mutating: bool) -> str:
        k = rng.random()
        if k < 0.45:
            return self.name(rng)
        if k < 0.55:
            return rng.choice([*self.lay.dirs, *(d + "/" for d in self.lay.dirs), "", "/"])
        if k < 0.60 and mutating:
            return f"w{rng.randrange(20)}.bin"
        t = [
            "../mnt.secret", "../mnt-private/key.bin", "nested/../../mnt.secret", "./small.bin",
            "..", "../", "%2e%2e/mnt.secret", "..%2fmnt.secret", "nested/dir/../../../mnt.secret",
            "..\\mnt.secret", "\x00", "small.bin\x00", "a" * rng.choice([255, 1025, 5000]),
            "\u00e9\u202e", "small.bin/", "//small.bin", "nested//n.txt", self.junk(rng),
            "../mnt/small.bin", ".../mnt.secret", "link-to-secret", "dir-link/mnt.secret",
            "nested/rel-link", "%00", "*", "?", "#", "part#1", "nested/#0",
        ]  # fmt: skip
        if not mutating:
            t += ["../" * 12 + "etc/passwd", "..%2f" * 12 + "etc/passwd"]
        return rng.choice(t)

    def s3_keyenc(self, rng: random.Random, key: str) -> str:
        k = rng.random()
        if k < 0.6:
            return quote(key, safe="/")
        if k < 0.75:
            return quote(key, safe="")
        if k < 0.85:
            return key
        if k < 0.9:
            return quote(quote(key, safe="/"), safe="/")
        return quote(key, safe="/.%")

    def s3_bucket(self, rng: random.Random) -> str:
        if rng.random() < 0.85:
            return BUCKET
        return rng.choice(["tmp", "mnt", "FUZZ", "..", ".", "fuzz%2F..", "a" * 300, "fuzz.", "é"])

    def delete_xml(self, rng: random.Random) -> bytes:
        keys = [self.s3_key(rng, True) for _ in range(rng.choice([0, 1, 2, 5, 1001]))]

        def esc(s: str) -> str:
            return s.replace("&", "&amp;").replace("<", "&lt;") if rng.random() < 0.9 else s

        objs = "".join(f"<Object><Key>{esc(k)}</Key></Object>" for k in keys)
        secret = f"file://{self.r}/mnt.secret"
        return rng.choice(
            [
                f"<Delete>{objs}</Delete>",
                f'<?xml version="1.0"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Quiet>{rng.choice(['true', 'false', 'x'])}</Quiet>{objs}</Delete>",
                f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY xxe SYSTEM "{secret}">]>'
                f"<Delete><Object><Key>&xxe;</Key></Object></Delete>",
                '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">'
                "]><Delete><Object><Key>&c;</Key></Object></Delete>",
                "<Delete><Object><Key>",
                "",
                "<Delete>" + "<Object>" * 10000 + "</Delete>",
                self.junk(rng, 200),
            ]
        ).encode("utf-8", "surrogatepass")

    def complete_xml(self, rng: random.Random) -> bytes:
        numbers = ["1", "2", "0", "-1", "10001", "x"]
        etags = ['"x"', "", "abc"]
        parts = "".join(
            f"<Part><PartNumber>{rng.choice(numbers)}</PartNumber>"
            f"<ETag>{rng.choice(etags)}</ETag></Part>"
            for _ in range(rng.choice([0, 1, 2, 3]))
        )
        return rng.choice(
            [f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>", "", "<C", parts]
        ).encode()

    def upload(self, rng: random.Random) -> tuple[str | None, str]:
        """An upload (its key, its id) learnt from an answer, or a made-up id (key None)."""
        if self.uploads and rng.random() < 0.7:
            return rng.choice(self.uploads)
        return None, rng.choice(
            [
                "", "x", "a" * 1000, "%00", "..", "../..", f"{self.to_root}",
                f"{self.to_root}/mnt-private", "../../../../../../../../tmp", secrets.token_hex(16),
                "00000000-0000-0000-0000-000000000000", "/abs", "\u00e9",
            ]
        )  # fmt: skip

    S3 = [
        ("s3:ListBuckets", 2), ("s3:ListObjectsV2", 10), ("s3:GetObject", 22),
        ("s3:HeadObject", 6), ("s3:PutObject", 8), ("s3:DeleteObject", 3),
        ("s3:DeleteObjects", 3), ("s3:CreateMultipartUpload", 3), ("s3:UploadPart", 4),
        ("s3:CompleteMultipartUpload", 3), ("s3:AbortMultipartUpload", 2), ("s3:HeadBucket", 2),
        ("s3:GetBucketLocation", 1), ("s3:other", 5), ("s3:junk", 3),
    ]  # fmt: skip

    def s3_request(self, rng: random.Random, index: int) -> Req:
        label = rng.choices([s[0] for s in self.S3], [s[1] for s in self.S3])[0]
        host = f"127.0.0.1:{self.s3_port}"
        b = self.s3_bucket(rng)
        mutating = label in {
            "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjects", "s3:CreateMultipartUpload",
            "s3:UploadPart", "s3:CompleteMultipartUpload", "s3:AbortMultipartUpload", "s3:other",
            "s3:junk",
        }  # fmt: skip
        key = self.s3_keyenc(rng, self.s3_key(rng, mutating))
        body = b""
        q = ""
        extra: list[tuple[str, str]] = []
        if label == "s3:ListBuckets":
            method, path = "GET", "/"
        elif label == "s3:ListObjectsV2":
            method, path = "GET", f"/{b}"
            spec = [("list-type", "lt"), ("prefix", "key"), ("delimiter", "delim"),
                    ("max-keys", "num"), ("continuation-token", "junk"), ("start-after", "key"),
                    ("encoding-type", "et"), ("fetch-owner", "bool")]  # fmt: skip
            parts = []
            for name, kind in spec:
                if rng.random() < (0.9 if name == "list-type" else 0.35):
                    v = {
                        "lt": lambda: rng.choice(["2", "2", "2", "2", "2", "1", "3", "", "x"]),
                        "key": lambda: self.s3_key(rng, False),
                        "delim": lambda: rng.choice(["/", "", "a", "//", "\x00", "é"]),
                        "et": lambda: rng.choice(["url", "", "x"]),
                    }.get(kind, lambda k=kind: self.value(rng, k))()
                    parts.append(f"{name}={self.enc(rng, v)}")
            q = "&".join(parts)
        elif label in ("s3:GetObject", "s3:HeadObject"):
            method = "GET" if label == "s3:GetObject" else "HEAD"
            path = f"/{b}/{key}"
            if rng.random() < 0.1:
                q = rng.choice(
                    ["partNumber=1", "partNumber=0", "versionId=x", "response-content-type=a%2Fb",
                     "alluxiofs-redirected=1", "x-id=GetObject", "partNumber=x"]
                )  # fmt: skip
        elif label == "s3:PutObject":
            method, path, body = "PUT", f"/{b}/{key}", self.data(rng)
        elif label == "s3:DeleteObject":
            method, path = "DELETE", f"/{b}/{key}"
        elif label == "s3:DeleteObjects":
            method, path, q, body = "POST", f"/{b}", "delete", self.delete_xml(rng)
            if rng.random() < 0.6:
                md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
                extra.append(("Content-MD5", md5))
        elif label == "s3:CreateMultipartUpload":
            method, path, q = "POST", f"/{b}/{key}", "uploads"
        elif label in (
            "s3:UploadPart", "s3:CompleteMultipartUpload", "s3:AbortMultipartUpload"
        ):  # fmt: skip
            up_key, uid = self.upload(rng)
            if up_key is not None and rng.random() < 0.85:
                key = quote(up_key, safe="/")
            path = f"/{b}/{key}"
            q = f"uploadId={self.enc(rng, uid) if rng.random() < 0.1 else quote(uid, safe='')}"
            if label == "s3:UploadPart":
                method, body = "PUT", self.data(rng)
                n = rng.choice(["1", "1", "2", "3", "0", "10001", "-1", "x"])
                q = f"partNumber={n}&{q}"
            elif label == "s3:CompleteMultipartUpload":
                method = "POST"
                done = self.parts.get(uid)
                if done and rng.random() < 0.7:
                    body = (
                        "<CompleteMultipartUpload>"
                        + "".join(
                            f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
                            for n, e in sorted(done.items())
                        )
                        + "</CompleteMultipartUpload>"
                    ).encode()
                else:
                    body = self.complete_xml(rng)
            else:
                method = "DELETE"
        elif label == "s3:HeadBucket":
            method, path = "HEAD", f"/{b}"
        elif label == "s3:GetBucketLocation":
            method, path, q = "GET", f"/{b}", "location"
        elif label == "s3:other":
            method = rng.choice(METHODS)
            path = rng.choice([f"/{b}", f"/{b}/{key}"])
            q = rng.choice(
                ["acl", "tagging", "versions", "uploads", "policy", "cors", "lifecycle", "website",
                 "uploadId=x&partNumber=1", "list-type=2&prefix=../", "restore",
                 "select&select-type=2",
                 "attributes", "legal-hold", "retention", "torrent", "logging", "delete", ""]
            )  # fmt: skip
            if method in ("PUT", "POST"):
                body = self.data(rng) if rng.random() < 0.5 else self.delete_xml(rng)
        else:
            method = rng.choice(METHODS + JUNK_METHODS)
            path = rng.choice(
                ["", "//", f"/{b}//{key}", f"/{b}/{key}/..", "/" + self.junk(rng), "*",
                 f"http://{host}/{b}/small.bin", f"/{b}/%2e%2e%2fmnt.secret", "/%2e%2e/",
                 f"/{b}/" + "%2e%2e/" * 10 + "etc/passwd"]
            )  # fmt: skip
            if method in ("PUT", "POST") and rng.random() < 0.5:
                body = self.data(rng)
        target = path + (f"?{q}" if q else "")
        headers = self.headers(rng, host, data_like=label in ("s3:GetObject", "s3:HeadObject"))
        headers += self.s3_headers(rng) + extra
        return Req(index, "s3", label, method, target, headers, body)

    def learn(self, req: Req, out: Outcome) -> None:
        """Keep what later requests can use: S3 upload ids and the ETags of their parts."""
        if req.target != "s3" or out.status != 200:
            return
        body = out.data.split(b"\r\n\r\n", 1)[-1]
        if req.label == "s3:CreateMultipartUpload":
            key = re.search(rb"<Key>([^<]*)</Key>", body)
            uid = re.search(rb"<UploadId>([^<]{1,200})</UploadId>", body)
            if key and uid:
                k = html.unescape(key.group(1).decode("utf-8", "replace"))
                self.uploads = [*self.uploads[-19:], (k, uid.group(1).decode())]
        elif req.label == "s3:UploadPart":
            m = re.search(r"partNumber=(\d+)&uploadId=([^&]*)$", req.path)
            etag = re.search(rb"(?im)^etag: *(.+?)\r?$", out.data)
            if m and etag:
                uid = urllib.parse.unquote(m.group(2))
                self.parts.setdefault(uid, {})[int(m.group(1))] = etag.group(1).decode()

    def http_request(self, rng: random.Random, index: int) -> Req:
        row = rng.choices(self.HTTP, [e[-1] for e in self.HTTP])[0]
        label, method, path, spec, body_kind, _ = row
        # A share of well-formed requests (a real file, good arguments) gets past the
        # argument checks, into the cache, the UFS and the writes.
        good = method is not None and rng.random() < 0.3
        fixed = {}
        if label in ("page", "range"):
            # The path_id of the URL sent (as a client sends it), or any other.
            url = self.lay.url(self.name(rng)) if good else self.url(rng)
            fixed["ufsFullPath"] = url
            pid = path_id(url) if good or rng.random() < 0.6 else self.pid(rng)
            path = self.http_path(rng, label, pid)
            if good and label == "page":
                path = f"/v1/file/{pid}/page/{rng.randrange(0, 4)}"
        elif path is None:
            path = self.http_path(rng, label)
        r = rng.random()
        if not good and (method is None or r < 0.12):
            method = rng.choice(METHODS)
        elif not good and r < 0.14:
            method = rng.choice(JUNK_METHODS)
        if good:
            q = self.good_query(rng, spec, fixed)
        else:
            q = self.query(rng, spec, fixed) if spec else ""
        if not spec and rng.random() < 0.1:
            q = self.query(rng, [("path", "url")])
        target = path + (f"?{q}" if q else "")
        body = b""
        if body_kind == "batch":
            body = self.batch_body(rng)
        elif body_kind == "data" and (method in ("PUT", "POST") or rng.random() < 0.05):
            body = self.data(rng)
        elif body_kind == "json" and rng.random() < 0.3:
            body = self.json_body(rng)
        elif rng.random() < 0.03:
            body = self.data(rng)
        host = f"127.0.0.1:{self.http_port}"
        headers = self.headers(rng, host, data_like=label in ("page", "range"))
        return Req(index, "http", label, method, target, headers, body)

    def request(self, seed: int, index: int) -> Req:
        """Request ``index`` of run ``seed``."""
        rng = random.Random(f"{seed}:{index}")
        req = self.s3_request(rng, index) if rng.random() < 0.25 else self.http_request(rng, index)
        chunked = req.body and rng.random() < 0.08
        if not chunked and (req.body or req.method in ("POST", "PUT", "PATCH")):
            req.headers.append(("Content-Length", str(len(req.body))))
        req.chunked = bool(chunked)
        if chunked:
            req.headers.append(("Transfer-Encoding", "chunked"))
        if rng.random() < self.raw_share or not sendable(req):
            to_raw(rng, req)
        return req


def sendable(req: Req) -> bool:
    """Whether http.client can send ``req`` as it is."""
    if _UNSAFE_PATH.search(req.path) or not _TOKEN.fullmatch(req.method):
        return False
    for k, v in req.headers:
        if not _TOKEN.fullmatch(k) or _BAD_VALUE.search(v):
            return False
    return True


def to_raw(rng: random.Random, req: Req) -> None:
    """Serialize ``req`` into raw bytes, with some of the framing broken on purpose."""
    nl = rng.choices([b"\r\n", b"\n", b"\r", b"\r\n\r"], [90, 6, 2, 2])[0]
    # Without CRLF or LF line ends the header block never ends: half-close then.
    shut = nl not in (b"\r\n", b"\n")
    path = req.path.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        path = path.replace(b"a", b"\xff", 1) + rng.choice([b"\x00", b" ", b"\t", b"\x80"])
    version = rng.choices(
        [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"", b"http/1.1", b"HTTP/11",
         b"HTTP/1.1 x", b"HTTP/0.9"],
        [88, 4, 1, 1, 1, 1, 1, 2, 1],
    )[0]  # fmt: skip
    sep = rng.choices([b" ", b"  ", b"\t"], [94, 3, 3])[0]
    line = req.method.encode("utf-8", "surrogatepass") + sep + path
    if version:
        line += sep + version
    if rng.random() < 0.02:
        line = b"\r\n\r\n" + line
    headers = [
        (k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass"))
        for k, v in req.headers
        if k.lower() not in ("content-length", "transfer-encoding", "connection")
    ]
    body = req.body
    framing: list[tuple[bytes, bytes]] = []
    k = rng.random()
    if k < 0.55:
        if body or req.method in ("POST", "PUT"):
            framing.append((b"Content-Length", str(len(body)).encode()))
    elif k < 0.62:
        framing.append((b"Content-Length", str(max(0, len(body) - rng.randrange(1, 50))).encode()))
        shut = True  # the rest of the body reads as the start of a next request
    elif k < 0.68:
        framing.append((b"Content-Length", str(len(body) + rng.randrange(1, 5000)).encode()))
        shut = True
    elif k < 0.76:
        framing.append(
            (b"Content-Length", rng.choice([b"-1", b"1e3", b"abc", b"18446744073709551616",
                                            b"+5", b"5, 5", b" 5", b"0x10", b"", b"9" * 40]))
        )  # fmt: skip
        shut = True
    elif k < 0.80:
        framing += [(b"Content-Length", b"1"), (b"Content-Length", str(len(body)).encode())]
        shut = True
    elif k < 0.90:
        framing.append((b"Transfer-Encoding", rng.choice([b"chunked", b"Chunked", b"chunked "])))
        body, dangling = chunk(rng, body)
        shut = shut or dangling
        if rng.random() < 0.2:
            framing.append((b"Content-Length", str(len(body)).encode()))
    else:
        framing.append(
            (b"Transfer-Encoding", rng.choice([b"gzip, chunked", b"chunked, gzip", b"xchunked",
                                               b"identity", b"chunked, chunked", b"\x00"]))
        )  # fmt: skip
        body, _ = chunk(rng, body)
        shut = True
    headers += framing
    if not shut:
        headers.append((b"Connection", b"close"))
    r = rng.random()
    if r < 0.03:
        headers = [(k, v) for k, v in headers if k != b"Host"]
    elif r < 0.05:
        headers.append((b"Host", b"other"))
    elif r < 0.07:
        headers.insert(0, (b"X-No-Colon-Here", None))
    elif r < 0.09:
        headers.append((b"X-Fold", b"a" + nl + b" folded"))
    elif r < 0.11:
        headers.append((b"X-Nul", b"a\x00b"))
    elif r < 0.13:
        headers.append((b"Bad Name", b"x"))
    elif r < 0.15:
        headers.append((b"", b"x"))
    elif r < 0.17:
        headers.append((b"X-Latin", b"\xff\xfe\x80"))
    elif r < 0.19:
        headers.append((b"Host ", b"x"))
    lines = [line] + [k if v is None else k + b": " + v for k, v in headers]
    data = nl.join(lines) + nl + nl + body
    if rng.random() < 0.05:
        data += rng.choice(
            [
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                b"GET /",
                b"\x00" * 10,
            ]
        )
        shut = True
    if rng.random() < 0.05:
        data = data[: rng.randrange(len(data) + 1)]
        shut = True
    if rng.random() < 0.005:
        data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(rng.randrange(0, 200))
        shut = True
    req.raw = data
    req.shut = shut
    req.label = f"raw {req.label}"


def chunk(rng: random.Random, body: bytes) -> tuple[bytes, bool]:
    """``body`` in chunked encoding, sometimes broken; True when it is left dangling."""
    out = b""
    rest = body
    while rest:
        n = rng.randrange(1, max(2, len(rest) + 1))
        size = b"%x" % n
        if rng.random() < 0.03:
            size = rng.choice([b"zz", b"-1", b"ffffffffffffffffff", b"1;ext=" + b"x" * 5000, b""])
        out += size + b"\r\n" + rest[:n] + b"\r\n"
        rest = rest[n:]
    k = rng.random()
    if k < 0.85:
        return out + b"0\r\n\r\n", False
    if k < 0.9:
        return out + b"0\r\nX-Trailer: y\r\n\r\n", False
    return out, True


# -- sending -------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int | None  # first status (None: no answer)
    statuses: list[int]
    data: bytes  # headers and body as received
    error: str | None
    elapsed: float
    frames: list[dict] = field(default_factory=list)  # the headers of a /v1/batch answer


BATCH_TYPE = "application/x-alluxiofs-batch"


def batch_frames(body: bytes) -> list[dict]:
    """The frame headers of a /v1/batch answer (docs/http-api.md), as far as they parse."""
    frames = []
    i = 0
    while i + 4 <= len(body):
        n = int.from_bytes(body[i : i + 4], "big")
        i += 4
        try:
            h = json.loads(body[i : i + n])
        except ValueError:
            frames.append({"status": "unparsable frame", "at": i - 4})
            break
        i += n
        frames.append(h)
        if isinstance(h, dict) and h.get("status") == 200:
            i += int(h.get("len", 0))
    return frames


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


class Sender:
    """Sends requests over one kept-alive http.client connection per port, or a raw socket."""

    def __init__(self, host: str, ports: dict[str, int]):
        self.host = host
        self.ports = ports
        self.conns: dict[str, http.client.HTTPConnection] = {}

    def close(self) -> None:
        for c in self.conns.values():
            c.close()
        self.conns.clear()

    def send(self, req: Req) -> Outcome:
        t0 = time.monotonic()
        out = self._raw(req) if req.raw is not None else self._http(req)
        out.elapsed = time.monotonic() - t0
        return out

    def _drop(self, target: str) -> None:
        c = self.conns.pop(target, None)
        if c is not None:
            c.close()

    def _http(self, req: Req) -> Outcome:
        for attempt in (0, 1):
            conn = self.conns.get(req.target)
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection(
                    self.host, self.ports[req.target], timeout=HTTP_TIMEOUT
                )
                self.conns[req.target] = conn
            try:
                try:
                    conn.putrequest(req.method, req.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in req.headers:
                        conn.putheader(k, v)
                    raw = req.body
                    body = None
                    if raw and req.chunked:
                        body = (raw[i : i + 8192] for i in range(0, len(raw), 8192))
                    elif raw:
                        body = raw
                    conn.endheaders(body, encode_chunked=req.chunked)
                except (BrokenPipeError, ConnectionResetError):
                    # The worker answered (and closed) before reading all of the body.
                    pass
                resp = conn.getresponse()
                data = resp.read(BODY_CAP + 1)
                head = f"HTTP/1.1 {resp.status}\r\n" + "".join(
                    f"{k}: {v}\r\n" for k, v in resp.getheaders()
                )
                head += "\r\n"
                if resp.will_close or len(data) > BODY_CAP or resp.status == 101:
                    self._drop(req.target)
                out = Outcome(resp.status, [resp.status], head.encode("latin-1") + data, None, 0)
                if resp.getheader("content-type") == BATCH_TYPE:
                    out.frames = batch_frames(data)
                return out
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self._drop(req.target)
                if reused and attempt == 0:
                    continue  # a kept-alive connection the worker had closed: once more
                return Outcome(None, [], b"", f"{type(e).__name__}: {e}", 0)
            except (TimeoutError, http.client.HTTPException, OSError) as e:
                self._drop(req.target)
                return Outcome(None, [], b"", f"{type(e).__name__}: {e}", 0)
        raise AssertionError("unreachable")

    def _raw(self, req: Req) -> Outcome:
        assert req.raw is not None
        buf = b""
        err = None
        try:
            with socket.create_connection(
                (self.host, self.ports[req.target]), timeout=RAW_TIMEOUT
            ) as s:
                try:
                    s.sendall(req.raw)
                    if req.shut:
                        s.shutdown(socket.SHUT_WR)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                while len(buf) <= BODY_CAP:
                    d = s.recv(1 << 16)
                    if not d:
                        break
                    buf += d
        except TimeoutError:
            err = "timeout (raw)"
        except OSError as e:
            err = f"{type(e).__name__}: {e}"
        statuses = [int(m.group(1)) for m in _STATUS.finditer(buf)]
        return Outcome(statuses[0] if statuses else None, statuses, buf, err, 0)


# -- the run -------------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str  # "5xx", "leak", "crash", "panic", "timeout", "escape"
    detail: str
    req: Req | None
    seed: int
    known: str | None = None  # the id of the known bug it is (KNOWN_BUGS)

    def __str__(self) -> str:
        where = f"seed {self.seed}, " + (self.req.describe() if self.req else "(no single request)")
        tag = f" [known bug {self.known}]" if self.known else ""
        return f"{self.kind}{tag}: {self.detail}\n  {where}"


def brief(data: bytes) -> str:
    """The error message of an answer (JSON ``message`` or S3 ``<Message>``), long runs cut."""
    body = data.split(b"\r\n\r\n", 1)[-1]
    text = body.decode("utf-8", "replace")
    m = re.search(r'"code":"([^"]*)"', text)
    code = m.group(1) if m else None
    m = re.search(r'"message":"((?:[^"\\]|\\.)*)"', text) or re.search(
        r"<Code>([^<]*)</Code><Message>([^<]*)", text
    )
    if m and m.lastindex == 2:
        code, text = m.group(1), m.group(2)
    elif m:
        text = m.group(1)
    text = re.sub(r"(.{1,16}?)\1{4,}", r"\1\1\1...", text)
    if len(text) > 600:  # the cause is at the end: keep both ends
        text = f"{text[:250]} [...] {text[-350:]}"
    return f"{code or '-'}: {text}"


@dataclass(frozen=True)
class KnownBug:
    """A bug this fuzzer found that is not fixed yet: its findings are reported apart
    (``Report.known``), and a strict-xfail reproducer in tests/test_http_fuzz.py fails
    until it is fixed; then the entry goes."""

    id: str
    title: str
    kinds: tuple[str, ...]
    pattern: str  # a regular expression searched in the finding's detail
    when: Callable[[Req], bool] | None = None  # and what the request must be

    def matches(self, f: Finding) -> bool:
        if f.kind not in self.kinds or re.search(self.pattern, f.detail) is None:
            return False
        return self.when is None or (f.req is not None and self.when(f.req))


# Found by this fuzzer, not fixed yet: each gets a reproducer in tests/test_http_fuzz.py
# (strict xfail, so that it fails once the bug is fixed: then the entry goes). The nine
# of the first runs are fixed (docs/reliability.md, "HTTP fuzzing").
KNOWN_BUGS: list[KnownBug] = []


@dataclass
class Report:
    seed: int
    sent: int = 0
    duration: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    by_endpoint: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    allowed_5xx: Counter = field(default_factory=Counter)
    no_answer: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    known: list[Finding] = field(default_factory=list)  # the first few of each known bug
    known_counts: Counter = field(default_factory=Counter)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    final_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings and not self.final_problems

    def summary(self) -> str:
        rate = self.sent / self.duration if self.duration else 0.0
        lines = [
            f"HTTP fuzz: seed {self.seed}, {self.sent} requests in {self.duration:.1f} s "
            f"({rate:.0f}/s)",
            "statuses: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items(), key=str)),
        ]
        if self.allowed_5xx:
            lines.append(
                "documented 5xx answers to input (allowed): "
                + ", ".join(f"{k}: {v}" for k, v in sorted(self.allowed_5xx.items()))
            )
        if self.no_answer:
            lines.append(
                "no HTTP answer (connection closed, raw framing broken on purpose): "
                + ", ".join(f"{k}: {v}" for k, v in self.no_answer.most_common(8))
            )
        lines.append("by endpoint (requests: 2xx/3xx/4xx/5xx/none):")
        for ep, c in sorted(self.by_endpoint.items()):
            total = sum(c.values())
            cls = [c.get(x, 0) for x in ("2xx", "3xx", "4xx", "5xx", "none")]
            lines.append(f"  {ep:32s} {total:7d}: " + "/".join(map(str, cls)))
        if self.slowest:
            lines.append("slowest: " + "; ".join(f"{t:.2f}s {d}" for t, d in self.slowest[:5]))
        for bug, n in sorted(self.known_counts.items()):
            first = next(f for f in self.known if f.known == bug)
            lines.append(f"KNOWN BUG {bug}: {n} requests, the first: {first}")
        for f in self.findings[:20]:
            lines.append(f"FINDING {f}")
        if len(self.findings) > 20:
            lines.append(f"... {len(self.findings) - 20} more findings")
        for p in self.final_problems:
            lines.append(f"AFTER THE RUN: {p}")
        lines.append("result: " + ("ok" if self.ok else "FAILED"))
        return "\n".join(lines)


def allowed_5xx(req: Req, status: int, data: bytes) -> str | None:
    """The documented 5xx answers to input the worker does not serve (docs/s3-api.md:
    an S3 operation it does not implement; docs/http-api.md: a pin over the quota)."""
    if req.target == "s3" and status == 501:
        if b"<Code>NotImplemented</Code>" in data:
            return "501 S3 NotImplemented"
        if req.method == "HEAD":  # the same answer, without its body
            return "501 S3 NotImplemented (HEAD)"
    if req.target == "http" and status == 507 and b'"quota_exceeded"' in data:
        return "507 quota_exceeded"
    return None


_DELETE_ERROR = re.compile(rb"<Error><Code>(\w+)</Code>(?:<Key>[^<]*</Key>)?<Message>([^<]*)")
_S3_5XX = {b"InternalError", b"ServiceUnavailable", b"SlowDown", b"NotImplemented"}
_PANIC = re.compile(r"panicked at|RUST_BACKTRACE|stack backtrace", re.IGNORECASE)


def fuzz(
    gen: Gen,
    sender: Sender,
    seed: int,
    count: int,
    alive: Callable[[], bool],
    log_path: Path | None = None,
    indices: list[int] | None = None,
    max_findings: int = 25,
    progress: Callable[[int, Report], None] | None = None,
    verbose: bool = False,
    known: list[KnownBug] | None = None,
) -> Report:
    """Send ``count`` requests (or just ``indices``) and check every answer. Findings that
    are ``known`` bugs go to ``Report.known`` (all of KNOWN_BUGS by default)."""
    leaks = LeakOracle(gen.lay.secret)
    rep = Report(seed=seed)
    known = KNOWN_BUGS if known is None else known
    outside_before = gen.lay.outside()

    class Findings(list):
        def append(self, f: Finding) -> None:
            bug = next((b for b in known if b.matches(f)), None)
            if bug is None:
                super().append(f)
            else:
                f.known = bug.id
                rep.known_counts[bug.id] += 1
                if rep.known_counts[bug.id] <= 3:
                    rep.known.append(f)

    rep.findings = Findings()
    log_offset = log_path.stat().st_size if log_path and log_path.exists() else 0
    recent: list[Req] = []
    t0 = time.monotonic()
    todo = indices if indices is not None else range(count)

    def scan_log(window: list[Req]) -> bool:
        nonlocal log_offset
        if log_path is None or not log_path.exists():
            return False
        with open(log_path, "rb") as f:
            f.seek(log_offset)
            new = f.read().decode("utf-8", "replace")
            log_offset = f.tell()
        lines = new.splitlines()
        at = next((k for k, ln in enumerate(lines) if _PANIC.search(ln)), None)
        hit = None if at is None else " ".join(lines[at : at + 2])
        if hit:
            rep.findings.append(
                Finding(
                    "panic",
                    f"worker log: {hit.strip()[:500]} (during requests "
                    f"{window[0].index if window else '?'}..{window[-1].index if window else '?'})",
                    window[-1] if window else None,
                    seed,
                )
            )
        return bool(hit)

    for n, i in enumerate(todo):
        req = gen.request(seed, i)
        out = sender.send(req)
        rep.sent += 1
        recent.append(req)
        ep = "raw (any endpoint)" if req.raw is not None else req.label
        if out.status is None:
            # A handler that panics drops the connection: look at the log now, so the
            # panic is pinned on this request.
            scan_log([req])
            rep.statuses["none"] += 1
            rep.by_endpoint[ep]["none"] += 1
            rep.no_answer[(out.error or "closed").split(":")[0]] += 1
        else:
            rep.statuses[out.status] += 1
            rep.by_endpoint[ep][f"{out.status // 100}xx"] += 1
        if verbose:
            print(req.describe(300))
            print(f"  -> {out.statuses or out.error} {out.data[:300]!r}")
        for st in out.statuses:
            if st >= 500:
                why = allowed_5xx(req, st, out.data)
                if why:
                    rep.allowed_5xx[why] += 1
                else:
                    detail = f"status {st} {brief(out.data)}"
                    if req.method == "HEAD":
                        # No body to say why: a plain GET does (of the same object for S3,
                        # whose query names other operations).
                        path = req.path.split("?", 1)[0] if req.target == "s3" else req.path
                        host = f"{sender.host}:{sender.ports[req.target]}"
                        probe = Req(req.index, req.target, req.label, "GET", path, [("Host", host)])
                        if sendable(probe):
                            again = sender.send(probe)
                            detail += f" (a GET of its path: {again.status} {brief(again.data)})"
                    rep.findings.append(Finding("5xx", detail, req, seed))
        for fr in out.frames:
            st = fr.get("status") if isinstance(fr, dict) else None
            if not isinstance(st, int) or st >= 500:
                msg = re.sub(r"(.{1,16}?)\1{4,}", r"\1\1\1...", json.dumps(fr))
                rep.findings.append(Finding("5xx", f"batch frame {msg[:500]}", req, seed))
        if req.target == "s3" and out.status == 200 and b"<DeleteResult" in out.data:
            # DeleteObjects answers 200 with one entry per key: a 5xx code per key.
            for m in _DELETE_ERROR.finditer(out.data):
                if m.group(1) in _S3_5XX:
                    msg = m.group(2).decode("utf-8", "replace")
                    msg = re.sub(r"(.{1,16}?)\1{4,}", r"\1\1\1...", msg)[-600:]
                    detail = f"DeleteObjects entry {m.group(1).decode()}: {msg}"
                    rep.findings.append(Finding("5xx", detail, req, seed))
        what = leaks.find(out.data)
        if what:
            rep.findings.append(Finding("leak", what, req, seed))
        if out.error and out.error.startswith("TimeoutError") and req.raw is None:
            rep.findings.append(Finding("timeout", out.error, req, seed))
        if out.elapsed > 1.0:
            rep.slowest.append((out.elapsed, f"[{i}] {req.label}"))
        gen.learn(req, out)
        refused = out.error is not None and "Refused" in out.error
        if refused or n % 100 == 99:
            if not alive():
                rep.findings.append(Finding("crash", "the worker process exited", req, seed))
                scan_log(recent)
                break
        if n % 100 == 99:
            # Nothing outside the mount may change: check, then put it back (the secret,
            # the links) so that later requests meet the same traps.
            now = gen.lay.outside()
            if now != outside_before:
                rep.findings.append(
                    Finding("escape", f"during requests {i - 99}..{i}: {diff(outside_before, now)}",
                            req, seed)
                )  # fmt: skip
            if now != outside_before or gen.lay.links:
                gen.lay.restore()
        if n % 500 == 499:
            scan_log(recent)
            recent = []
        if len(rep.findings) >= max_findings:
            break
        if progress and n % 1000 == 999:
            rep.duration = time.monotonic() - t0
            progress(n + 1, rep)
    scan_log(recent)
    rep.duration = time.monotonic() - t0
    rep.slowest.sort(reverse=True)
    return rep


def diff(before: dict, after: dict) -> str:
    """What changed between two ``Layout.outside()`` snapshots."""
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"created {new[:10]}, removed {gone[:10]}, changed {changed[:10]}"


def final_checks(lay: Layout, host: str, port: int, s3_port: int, before: dict) -> list[str]:
    """After the run: healthy, right bytes, nothing outside the mount touched."""
    problems: list[str] = []
    leaks = LeakOracle(lay.secret)

    def get(p: int, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        c = http.client.HTTPConnection(host, p, timeout=30)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    try:
        st, body = get(port, "/healthz")
        if st != 200 or json.loads(body).get("status") != "ok":
            problems.append(f"/healthz: {st} {body[:200]!r}")
    except (OSError, http.client.HTTPException, ValueError) as e:
        problems.append(f"/healthz: {e!r}")
        return problems
    want = (lay.mount_dir / lay.pristine).read_bytes()
    url = lay.url(lay.pristine)
    q = quote(url, safe="")
    pid = path_id(url)
    checks = [
        ("range, whole", port, f"/v1/range/{pid}?ufsFullPath={q}", None, want),
        (
            "range across pages",
            port,
            f"/v1/range/{pid}?ufsFullPath={q}&offset={PAGE_SIZE - 10}&length={PAGE_SIZE + 20}",
            None,
            want[PAGE_SIZE - 10 : 2 * PAGE_SIZE + 10],
        ),
        ("page 1", port, f"/v1/file/{pid}/page/1?ufsFullPath={q}", None,
         want[PAGE_SIZE : 2 * PAGE_SIZE]),
        ("page 2 (last)", port, f"/v1/file/{pid}/page/2", None, want[2 * PAGE_SIZE :]),
        ("S3 GetObject", s3_port, f"/{BUCKET}/{lay.pristine}", None, want),
        ("S3 ranged GET", s3_port, f"/{BUCKET}/{lay.pristine}", {"Range": "bytes=5-70000"},
         want[5:70001]),
    ]  # fmt: skip
    for what, p, path, headers, expect in checks:
        try:
            st, body = get(p, path, headers)
        except (OSError, http.client.HTTPException) as e:
            problems.append(f"{what}: {e!r}")
            continue
        if st not in (200, 206) or body != expect:
            problems.append(f"{what}: status {st}, {len(body)} bytes, want {len(expect)} bytes")
    # Files of the mount (some written or deleted by the run) read as they are on disk.
    for name in lay.files:
        p = lay.mount_dir / name
        if p.is_symlink() or not p.is_file():
            continue
        disk = p.read_bytes()
        u = lay.url(name)
        try:
            st, body = get(port, f"/v1/range/{path_id(u)}?ufsFullPath={quote(u, safe='')}")
        except (OSError, http.client.HTTPException) as e:
            problems.append(f"range of {name!r}: {e!r}")
            continue
        if st != 200 or body != disk:
            problems.append(
                f"range of {name!r}: status {st}, {len(body)} bytes; on disk {len(disk)} bytes"
                + (" (different bytes)" if st == 200 else f": {body[:200]!r}")
            )
        what = leaks.find(body)
        if what:
            problems.append(f"range of {name!r} holds {what}")
    after = lay.outside()
    if after != before:
        problems.append(f"outside the mount: {diff(before, after)}")
    for p in lay.secret_files:
        if not p.is_file() or p.is_symlink():
            problems.append(f"the secret {p} was removed")
        elif p.read_bytes() != lay.secret:
            problems.append(f"the secret {p} was overwritten")
    return problems


# -- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--requests", type=int, default=int(os.environ.get("ALLUXIOFS_FUZZ_REQUESTS", 100_000))
    )
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    ap.add_argument("--links", action="store_true", help="symlinks in the mount point outside it")
    ap.add_argument("--replay", default=None, help="comma-separated request indices to send again")
    ap.add_argument("--max-findings", type=int, default=25)
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every request and answer")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from harness import Worker  # the tests' process harness

    base = Path(tempfile.mkdtemp(prefix="alluxiofs-fuzz-"))
    lay = make_layout(base, links=args.links)
    before = lay.outside()
    env = {**os.environ, "RUST_BACKTRACE": "1", "ALLUXIOFS_HOME": str(base / "home")}
    run_dir = base / "run"
    run_dir.mkdir()
    w = Worker(lay.worker_args(), env, run_dir, "fuzz")
    print(f"worker {w.url}, S3 {w.s3_url}, mount {lay.mount_url}, log {w.log_path}", flush=True)
    try:
        gen = Gen(lay, w.port, w.s3_port)
        sender = Sender(w.host, {"http": w.port, "s3": w.s3_port})
        indices = [int(x) for x in args.replay.split(",")] if args.replay else None

        def progress(n: int, rep: Report) -> None:
            if n % 10_000 == 0:
                print(
                    f"  {n} requests, {rep.duration:.0f} s, {len(rep.findings)} findings",
                    flush=True,
                )

        rep = fuzz(
            gen, sender, seed, args.requests, lambda: w.alive, w.log_path, indices,
            args.max_findings, progress, args.verbose,
        )  # fmt: skip
        sender.close()
        if w.alive:
            rep.final_problems = final_checks(lay, w.host, w.port, w.s3_port, before)
        else:
            rep.final_problems = ["the worker is not running"]
        print(rep.summary())
        if not rep.ok:
            print(f"worker log tail:\n{w.log_tail(3000)}")
        return 0 if rep.ok else 1
    finally:
        w.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
