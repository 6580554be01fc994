"""The wheel as a user gets it: installed into a fresh virtual environment that
has no Rust, no maturin and no protoc, then the quick start run from there (the
``alluxiofs`` command, the embedded worker, reads through fsspec).

The wheel is ``$ALLUXIOFS_TEST_WHEEL`` when set (e.g. ``dist/`` from ``make
wheel``), else built here with the dev profile, which reuses what ``make
develop`` compiled in ``$CARGO_TARGET_DIR`` (default ``target/``), with the
manylinux tag of ``make wheel`` so that maturin's audit of the linked glibc
symbols runs on every ``make test``.
"""

from __future__ import annotations

import configparser
import json
import os
import platform
import re
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_TOOLS = ("cargo", "rustc", "protoc", "maturin")


def _compatibility() -> str:
    """The manylinux tag ``make wheel`` builds for (one place: the Makefile)."""
    m = re.search(r"^WHEEL_COMPATIBILITY\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert m, "no WHEEL_COMPATIBILITY in the Makefile"
    return m.group(1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("ALLUXIOFS_TEST_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ)
    env.setdefault("CARGO_TARGET_DIR", str(ROOT / "target"))
    env["PATH"] = os.pathsep.join([str(Path.home() / ".cargo" / "bin"), env.get("PATH", "")])
    maturin = Path(sys.executable).with_name("maturin")
    # The interpreter and features of `make develop`, so cargo finds its build fresh.
    cmd = [str(maturin), "build", "--quiet", "--interpreter", sys.executable]
    cmd += ["--compatibility", _compatibility(), "--out", str(out)]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"dev wheel built in {time.monotonic() - started:.1f}s")
    (whl,) = out.glob("alluxiofs-*.whl")
    return whl


def _bare_env(venv: Path, home: Path) -> dict[str, str]:
    """The environment of a machine with Python only: PATH without any directory
    holding a build tool, no Rust/Cargo/maturin/Python variables of this one."""
    keep = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not any(os.path.exists(os.path.join(d, t)) for t in BUILD_TOOLS)
    ]
    drop = ("CARGO", "RUST", "MATURIN", "PROTOC", "PYTHON", "VIRTUAL_ENV", "ALLUXIOFS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *keep])
    env["ALLUXIOFS_HOME"] = str(home)
    return env


def _run(cmd, env, cwd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=300, **kw)
    out = proc.stdout if isinstance(proc.stdout, str) else proc.stdout.decode(errors="replace")
    err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{out}\n{err}"
    return proc


READ = textwrap.dedent(
    """
    import json, os, random, shutil, sys
    import fsspec
    import alluxiofs, alluxiofs._alluxiofs, alluxiofs.embedded

    data = sys.argv[1]
    os.makedirs(os.path.join(data, "sub"))
    rnd = random.Random(7)
    files = {}
    for i, size in enumerate([0, 1, 4096, 1 << 20, 3 * (1 << 20) + 7]):
        path = os.path.join(data, "sub" if i % 2 else "", f"f{i}.bin")
        files[path] = rnd.randbytes(size)
        with open(path, "wb") as f:
            f.write(files[path])

    fs = fsspec.filesystem("alluxiofs", target_protocol="file")  # starts the embedded worker
    for path, content in files.items():
        assert fs.cat_file(path) == content, path
    big = max(files, key=lambda p: len(files[p]))
    with fs.open(big, "rb") as f:
        f.seek(1_000_000)
        assert f.read(100_000) == files[big][1_000_000:1_100_000]
    (worker,) = alluxiofs.embedded.running()
    before = fs.worker_metrics()[worker.addr]
    for path, content in files.items():
        assert fs.cat_file(path) == content, path
    after = fs.worker_metrics()[worker.addr]
    print(json.dumps({
        "which": {t: shutil.which(t) for t in sys.argv[2:]},
        "package": alluxiofs.__file__,
        "native": alluxiofs._alluxiofs.__file__,
        "version": alluxiofs.__version__,
        "worker_pid": worker.pid,
        "worker_cmdline": open(f"/proc/{worker.pid}/cmdline").read().split("\\0"),
        "ufs_requests_second_pass": after["alluxiofs_ufs_requests_total"]
        - before["alluxiofs_ufs_requests_total"],
        "hits_second_pass": after["alluxiofs_cache_hits_total"]
        - before["alluxiofs_cache_hits_total"],
        "fallbacks": fs.stats()["fallbacks"],
        "big": big,
    }))
    """
)

STOP = textwrap.dedent(
    """
    import json
    import alluxiofs.embedded
    running = len(alluxiofs.embedded.running())
    print(json.dumps({"running": running, "stopped": alluxiofs.embedded.stop_all()}))
    """
)


def test_wheel_contents(wheel: Path):
    """A manylinux wheel for this platform, with the native module, the command and
    the fsspec entry points, depending on fsspec only."""
    tag = f"{_compatibility()}_{platform.machine()}"
    assert re.fullmatch(rf"alluxiofs-[\w.]+-cp311-abi3-(\w+\.)?{tag}\.whl", wheel.name), wheel
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = z.read(meta).decode()
        (ep_file,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = z.read(ep_file).decode()
    assert "alluxiofs/_alluxiofs.abi3.so" in names
    assert {"alluxiofs/__init__.py", "alluxiofs/cli.py", "alluxiofs/embedded.py"} <= set(names)
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [r for r in requires if "extra ==" not in r] == ["Requires-Dist: fsspec>=2024.6"]
    eps = configparser.ConfigParser()
    eps.read_string(entry_points)
    assert eps["console_scripts"]["alluxiofs"] == "alluxiofs.cli:main"
    assert eps["fsspec.specs"]["alluxiofs"] == "alluxiofs.core:AlluxioFileSystem"


def test_wheel_in_a_fresh_venv_without_rust(wheel: Path, tmp_path: Path, monkeypatch):
    import alluxiofs.embedded

    venv, home, data = tmp_path / "venv", tmp_path / "home", tmp_path / "data"
    _run([sys.executable, "-m", "venv", str(venv)], env=None, cwd=tmp_path)
    env = _bare_env(venv, home)
    py = str(venv / "bin" / "python")
    _run(
        [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        env=env,
        cwd=tmp_path,
    )
    # Nothing but the package and its one dependency.
    listed = _run([py, "-m", "pip", "list", "--format=json"], env=env, cwd=tmp_path, text=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert names - {"pip", "setuptools"} == {"alluxiofs", "fsspec"}, names

    version = wheel.name.split("-")[1]
    cli = str(venv / "bin" / "alluxiofs")
    help_text = _run([cli, "--help"], env=env, cwd=tmp_path, text=True).stdout
    assert "worker" in help_text and "load" in help_text
    assert _run([cli, "version"], env=env, cwd=tmp_path, text=True).stdout == (
        f"alluxiofs {version}\n"
    )
    worker_help = _run([cli, "worker", "--help"], env=env, cwd=tmp_path, text=True).stdout
    assert "--mount" in worker_help and "--cache-dir" in worker_help

    monkeypatch.setenv("ALLUXIOFS_HOME", str(home))  # for the cleanup below
    try:
        proc = _run([py, "-c", READ, str(data), *BUILD_TOOLS], env=env, cwd=tmp_path, text=True)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["which"] == dict.fromkeys(BUILD_TOOLS)
        site = str(venv / "lib")
        assert got["package"].startswith(site) and got["native"].startswith(site), got
        assert got["version"] == version
        # The embedded worker is the wheel's: `python -m alluxiofs worker` of the venv.
        assert got["worker_cmdline"][:4] == [py, "-m", "alluxiofs", "worker"], got
        assert got["ufs_requests_second_pass"] == 0 and got["hits_second_pass"] > 0, got
        assert got["fallbacks"] == {}

        # The command finds the same embedded worker.
        cat = _run([cli, "cat", f"file://{got['big']}", "--length", "64"], env=env, cwd=tmp_path)
        with open(got["big"], "rb") as f:
            assert cat.stdout == f.read(64)

        stop = json.loads(_run([py, "-c", STOP], env=env, cwd=tmp_path, text=True).stdout)
        assert stop == {"running": 1, "stopped": 1}
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{got['worker_pid']}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{got['worker_pid']}"), "the worker is still running"
    finally:
        alluxiofs.embedded.stop_all()
