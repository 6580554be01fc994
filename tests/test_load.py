"""Preloading (`fs.load`, `alluxiofs load`, Alluxio's `/v1/load` jobs) against real
workers and a real S3 server: what a load fetches, what it skips, where it puts pages."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from harness import ufs_requests

MiB = 1 << 20


@pytest.fixture
def tree(s3_server):
    """A fresh prefix of 12 files in nested directories, ~17 MiB: (prefix URL, {url: bytes})."""
    rnd = random.Random(7)
    fs = s3_server.s3fs()
    base = f"{s3_server.bucket}/load-{uuid.uuid4().hex[:8]}"
    sizes = [0, 1, 4096, MiB - 1, MiB, MiB + 1, 3 * MiB + 5, 2 * MiB, 700_000, 5 * MiB, 123]
    sizes.append(3 * MiB)
    files = {}
    for i, size in enumerate(sizes):
        sub = ["", "a/", "a/b/", "c/"][i % 4]
        files[f"{base}/{sub}f{i:02d}.bin"] = rnd.randbytes(size)
    fs.pipe(files)
    return f"s3://{base}", {f"s3://{k}": v for k, v in files.items()}


def _get(worker, endpoint: str, **query) -> tuple[int, dict]:
    url = f"http://{worker.addr}{endpoint}?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _cached_percent(worker, url: str) -> int:
    status, body = _get(worker, "/v1/info", path=url)
    assert status == 200, body
    return body[0]["mInAlluxioPercentage"]


def test_load_then_read_makes_no_ufs_gets(make_fs, start_worker, bucket_mount, tree):
    prefix, files = tree
    workers = [start_worker(bucket_mount) for _ in range(3)]
    fs = make_fs(workers)
    seen = []
    summary = fs.load(prefix, progress=seen.append)
    total = sum(len(v) for v in files.values())
    assert summary["files_total"] == len(files)
    assert summary["files_failed"] == 0 and summary["failures"] == []
    assert summary["bytes_total"] == total
    assert summary["bytes_loaded"] == total and summary["bytes_skipped"] == 0
    # Every non-empty file was fetched; the empty one has nothing to fetch.
    assert summary["files_loaded"] == len(files) - 1
    # The final progress call reports everything done.
    assert seen and seen[-1]["files_done"] == len(files) and seen[-1]["bytes_done"] == total
    # The load went to the owners: exactly the workers that own a non-empty file
    # hold pages (which ones depends on the ring of the random ports).
    holders = {w.addr for w in workers if w.metric("alluxiofs_cache_misses_total") > 0}
    owners = {fs.workers_for(p)[0] for p, data in files.items() if data}
    assert holders == owners
    gets = ufs_requests(workers, "get")
    for url, data in files.items():
        assert fs.cat_file(url) == data
    assert ufs_requests(workers, "get") == gets


def test_second_load_skips_everything(make_fs, start_worker, bucket_mount, tree):
    prefix, files = tree
    workers = [start_worker(bucket_mount) for _ in range(2)]
    fs = make_fs(workers)
    fs.load(prefix)
    gets = ufs_requests(workers, "get")
    again = fs.load(prefix)
    assert again["bytes_loaded"] == 0
    assert again["bytes_skipped"] == sum(len(v) for v in files.values())
    assert again["files_skipped"] == len(files) and again["files_loaded"] == 0
    assert ufs_requests(workers, "get") == gets


def test_interrupted_load_resumes(make_fs, start_worker, bucket_mount, tree):
    prefix, files = tree
    workers = [start_worker(bucket_mount) for _ in range(2)]
    fs = make_fs(workers)
    urls = sorted(files)
    first_half = urls[::2]
    for url in first_half:
        fs.load(url)
    gets = ufs_requests(workers, "get")
    rest = [u for u in urls if u not in first_half]
    summary = fs.load(prefix)
    assert summary["bytes_skipped"] == sum(len(files[u]) for u in first_half)
    assert summary["bytes_loaded"] == sum(len(files[u]) for u in rest)
    # Only the rest was fetched: at least one GET per non-empty file, no more
    # than one per page of it.
    fetched = ufs_requests(workers, "get") - gets
    nonempty = [u for u in rest if files[u]]
    assert len(nonempty) <= fetched <= sum(-(-len(files[u]) // MiB) for u in nonempty)
    gets = ufs_requests(workers, "get")
    for url, data in files.items():
        assert fs.cat_file(url) == data
    assert ufs_requests(workers, "get") == gets


def test_replicas_two_puts_each_file_on_two_workers(make_fs, start_worker, bucket_mount, tree):
    prefix, files = tree
    workers = [start_worker(bucket_mount) for _ in range(3)]
    fs = make_fs(workers)
    summary = fs.load(prefix, replicas=2)
    total = sum(len(v) for v in files.values())
    assert summary["bytes_total"] == 2 * total and summary["bytes_loaded"] == 2 * total
    fs2 = make_fs(workers, replicas=2)
    for url, data in files.items():
        if not data:
            continue
        owners = fs2.workers_for(url)
        assert len(owners) == 2
        full = [w for w in workers if _cached_percent(w, url) == 100]
        assert sorted(w.addr for w in full) == sorted(owners), url


def test_missing_path_is_a_clear_error(make_fs, start_worker, bucket_mount, s3_server):
    fs = make_fs([start_worker(bucket_mount)])
    with pytest.raises(FileNotFoundError, match="no/such/prefix"):
        fs.load(f"s3://{s3_server.bucket}/no/such/prefix")


def test_outside_the_mounts_is_refused(make_fs, start_worker, s3_server, tree):
    prefix, _ = tree
    w = start_worker(f"s3://{s3_server.bucket}/somewhere-else")
    fs = make_fs([w])
    with pytest.raises(PermissionError):
        fs.load(prefix)
    status, body = _get(w, "/v1/load", path=prefix, opType="submit")
    assert status == 403, body


def test_bandwidth_limit_paces_the_load(make_fs, start_worker, bucket_mount, tree):
    prefix, files = tree
    fs = make_fs([start_worker(bucket_mount)])
    total = sum(len(v) for v in files.values())
    limit = 8 * MiB
    t = time.monotonic()
    summary = fs.load(prefix, bandwidth="8MiB/s")
    elapsed = time.monotonic() - t
    assert summary["bytes_loaded"] == total
    assert elapsed >= 0.7 * total / limit, elapsed


def _wait_state(worker, path: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = _get(worker, "/v1/load", path=path, opType="progress")
        assert status == 200, body
        if body["jobState"] != "RUNNING" or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_alluxio_load_job_submit_progress(make_fs, start_worker, bucket_mount, tree):
    prefix, files = tree
    w = start_worker(bucket_mount)
    status, body = _get(w, "/v1/load", path=prefix, opType="submit")
    assert status == 200 and body["success"] is True and body["jobId"], body
    assert body["path"] == prefix
    done = _wait_state(w, prefix)
    assert done["jobState"] == "SUCCEEDED", done
    props = done["respProperties"]
    total = sum(len(v) for v in files.values())
    assert props["jobId"] == body["jobId"]
    assert props["filesTotal"] == str(len(files))
    assert props["filesProcessed"] == str(len(files))
    assert props["bytesLoaded"] == str(total) and props["filesFailed"] == "0"
    assert "Job State: SUCCEEDED" in done["message"]
    as_json = _get(w, "/v1/load", path=prefix, opType="progress", progressFormat="JSON")[1]
    assert json.loads(as_json["message"])["bytesLoaded"] == str(total)
    # The job filled this worker's cache: reads make no UFS GET.
    fs = make_fs([w])
    gets = ufs_requests([w], "get")
    for url, data in files.items():
        assert fs.cat_file(url) == data
    assert ufs_requests([w], "get") == gets
    # Progress of a path without a job is a 404 with a message.
    status, body = _get(w, "/v1/load", path=prefix + "/a", opType="progress")
    assert status == 404 and "no load job" in body["message"]


def test_alluxio_load_job_stop(start_worker, bucket_mount, tree):
    prefix, files = tree
    w = start_worker(bucket_mount)
    # 1 MiB/s over ~17 MiB: still running when stopped.
    status, body = _get(w, "/v1/load", path=prefix, opType="submit", bandwidth="1MiB")
    assert status == 200 and body["success"] is True
    again = _get(w, "/v1/load", path=prefix, opType="submit")[1]
    assert again["success"] is False and "already running" in again["message"]
    time.sleep(0.5)
    status, stopped = _get(w, "/v1/load", path=prefix, opType="stop")
    assert status == 200 and stopped["success"] is True, stopped
    state = _get(w, "/v1/load", path=prefix, opType="progress")[1]
    assert state["jobState"] == "STOPPED"
    loaded = int(state["respProperties"]["bytesLoaded"])
    assert loaded < sum(len(v) for v in files.values())
    assert _get(w, "/v1/load", path=prefix, opType="stop")[1]["success"] is False
    bad = _get(w, "/v1/load", path=prefix, opType="explode")
    assert bad[0] == 400 and "opType" in bad[1]["message"]


def test_a_load_job_survives_a_worker_kill(make_fs, start_worker, bucket_mount, tree, tmp_path):
    """SIGKILL mid-job: the restarted worker resumes the job under its id, fetches only what
    was not cached, and after another restart still reports how it ended."""
    prefix, files = tree
    total = sum(len(v) for v in files.values())
    cache = tmp_path / "cache"
    w = start_worker(bucket_mount, cache_dir=cache)
    status, body = _get(w, "/v1/load", path=prefix, opType="submit", bandwidth="4MiB")
    assert status == 200 and body["success"] is True, body
    job = body["jobId"]
    deadline = time.monotonic() + 30
    while int(_get(w, "/v1/load", path=prefix, opType="progress")[1]["respProperties"][
        "bytesLoaded"]) < 2 * MiB:  # fmt: skip
        assert time.monotonic() < deadline, "the job loaded nothing"
        time.sleep(0.1)
    w.kill()
    saved = json.loads((cache / "load-jobs.json").read_text())
    assert saved[prefix]["state"] == "RUNNING" and saved[prefix]["id"] == job, saved
    w.restart(same_port=True)
    status, now = _get(w, "/v1/load", path=prefix, opType="progress")
    assert status == 200 and now["respProperties"]["jobId"] == job, now
    done = _wait_state(w, prefix)
    assert done["jobState"] == "SUCCEEDED", done
    props = done["respProperties"]
    assert props["jobId"] == job and props["filesTotal"] == str(len(files))
    assert int(props["bytesSkipped"]) >= MiB, props  # cached before the kill: not fetched again
    assert int(props["bytesLoaded"]) + int(props["bytesSkipped"]) == total, props
    assert "resuming the load job after a restart" in w.log_path.read_text()
    fs = make_fs([w])
    gets = ufs_requests([w], "get")
    for url, data in files.items():
        assert fs.cat_file(url) == data
    assert ufs_requests([w], "get") == gets
    # Ended jobs answer progress after a restart too.
    w.restart()
    after = _get(w, "/v1/load", path=prefix, opType="progress")[1]
    assert after["jobState"] == "SUCCEEDED" and after["respProperties"]["jobId"] == job
    assert after["respProperties"]["filesProcessed"] == str(len(files)), after
    # A job file that cannot be read is set aside; the worker starts.
    w.stop()
    (cache / "load-jobs.json").write_text("{not json")
    w.restart()
    assert w.healthz()["status"] == "ok"
    assert (cache / "load-jobs.json.bad").exists()
    assert _get(w, "/v1/load", path=prefix, opType="progress")[0] == 404


@pytest.fixture
def cli_env(s3_server):
    env = dict(os.environ)
    env["AWS_ACCESS_KEY_ID"] = s3_server.access_key
    env["AWS_SECRET_ACCESS_KEY"] = s3_server.secret_key
    env["AWS_ENDPOINT_URL"] = s3_server.endpoint_url
    return env


def _cli(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alluxiofs", *args],
        capture_output=True,
        env=env,
        timeout=120,
        text=True,
    )


def test_cli_load_progress_summary_and_exit_code(start_worker, bucket_mount, tree, cli_env):
    prefix, files = tree
    workers = [start_worker(bucket_mount) for _ in range(2)]
    cli_env["ALLUXIOFS_WORKER_HOSTS"] = ",".join(w.addr for w in workers)
    proc = _cli(cli_env, "load", prefix + "/", "--concurrency", "2")
    assert proc.returncode == 0, proc.stderr
    # stderr is not a terminal: progress comes as lines, the last one complete.
    last = proc.stderr.strip().splitlines()[-1]
    assert f"files {len(files)}/{len(files)}" in last and "100.0%" in last and "ETA" in last
    assert f"{len(files)} total, {len(files) - 1} loaded" in proc.stdout
    assert "0 failed" in proc.stdout
    again = _cli(cli_env, "load", prefix, "--json", "--no-progress")
    assert again.returncode == 0 and again.stderr == ""
    assert json.loads(again.stdout)["files_skipped"] == len(files)


def test_cli_load_failed_file_is_exit_1(start_worker, bucket_mount, tree, cli_env, s3_server):
    prefix, files = tree
    w = start_worker(bucket_mount)
    cli_env["ALLUXIOFS_WORKER_HOSTS"] = w.addr
    # The worker lists the prefix (and keeps the listing); then one file goes away.
    listed = _cli(cli_env, "ls", prefix)
    assert listed.returncode == 0, listed.stderr
    gone = sorted(u for u in files if u.count("/") == prefix.count("/") + 1 and files[u])[0]
    s3_server.s3fs().rm(gone[len("s3://") :])
    proc = _cli(cli_env, "load", prefix, "--no-recursive", "--no-progress")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"failed:  {gone}: " in proc.stdout
    assert "1 failed" in proc.stdout


def test_worker_load_bandwidth_caps_loads(make_fs, start_worker, bucket_mount, tree):
    """`--load-bandwidth` on the worker paces loads even when the client sets no limit."""
    prefix, files = tree
    w = start_worker(bucket_mount, extra_args=["--load-bandwidth", "8MiB"])
    fs = make_fs([w])
    total = sum(len(v) for v in files.values())
    t = time.monotonic()
    assert fs.load(prefix)["bytes_loaded"] == total
    assert time.monotonic() - t >= 0.7 * total / (8 * MiB)
    # Reads are not limited: reading it all back (cached) is quick.
    t = time.monotonic()
    for url, data in files.items():
        assert fs.cat_file(url) == data
    assert time.monotonic() - t < 0.5 * total / (8 * MiB)


def test_alluxio_load_job_in_an_etcd_cluster_uses_placement(
    make_fs, start_worker, bucket_mount, etcd_server, tree
):
    """A job submitted to one worker of an etcd cluster puts each file on its owner."""
    prefix, files = tree
    args = ["--etcd", etcd_server.endpoint, "--etcd-lease-ttl", "2s"]
    workers = [start_worker(bucket_mount, extra_args=args) for _ in range(3)]
    fs = make_fs([], worker_hosts=None, etcd_hosts=etcd_server.endpoint)
    deadline = time.monotonic() + 10
    while len(fs.workers()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fs.workers()) == 3
    status, body = _get(workers[0], "/v1/load", path=prefix, opType="submit")
    assert status == 200 and body["success"] is True, body
    done = _wait_state(workers[0], prefix)
    assert done["jobState"] == "SUCCEEDED", done
    by_addr = {w.addr: w for w in workers}
    for url, data in files.items():
        if data:
            owner = by_addr[fs.workers_for(url)[0]]
            assert _cached_percent(owner, url) == 100, url
    holders = [w for w in workers if w.metric("alluxiofs_cache_misses_total") > 0]
    assert len(holders) >= 2
    gets = ufs_requests(workers, "get")
    for url, data in files.items():
        assert fs.cat_file(url) == data
    assert ufs_requests(workers, "get") == gets


def test_cli_ctrl_c_stops_and_a_rerun_resumes(start_worker, bucket_mount, tree, cli_env):
    prefix, files = tree
    w = start_worker(bucket_mount)
    cli_env["ALLUXIOFS_WORKER_HOSTS"] = w.addr
    proc = subprocess.Popen(
        [sys.executable, "-m", "alluxiofs", "load", prefix, "--bandwidth", "2MiB/s"],
        env=cli_env,
        # A test run started in the background (`make test &`) inherits
        # SIGINT ignored, and Python then installs no KeyboardInterrupt
        # handler: give the child the default disposition, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Interrupt once the load is under way.
    deadline = time.monotonic() + 30
    while w.metric("alluxiofs_cache_misses_total") == 0:
        assert proc.poll() is None and time.monotonic() < deadline, "the load did not start"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "interrupted; run it again to resume" in err
    rerun = _cli(cli_env, "load", prefix, "--json", "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    total = sum(len(v) for v in files.values())
    assert 0 < summary["bytes_skipped"] < total
    assert summary["bytes_loaded"] + summary["bytes_skipped"] == total


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_on_a_terminal_and_prints_lines_otherwise():
    from alluxiofs.load import ProgressBar

    snap = {
        "files_total": 10, "files_done": 5, "files_failed": 0, "bytes_total": 10 * MiB,
        "bytes_done": 5 * MiB, "bytes_loaded": 5 * MiB, "bytes_skipped": 0, "listed": True,
    }  # fmt: skip
    tty = _Tty()
    bar = ProgressBar(tty)
    bar(snap)
    bar(dict(snap, files_done=10, bytes_done=10 * MiB))
    bar.close(dict(snap, files_done=10, bytes_done=10 * MiB))
    text = tty.getvalue()
    assert text.startswith("\r[##########----------]  50.0% files 5/10 bytes 5.0 MiB/10.0 MiB")
    assert "ETA" in text and text.count("\r") == 3 and text.endswith("\n")
    plain = io.StringIO()
    bar = ProgressBar(plain, interval=60)
    bar(dict(snap, listed=False))
    bar(snap)  # within the interval: not printed
    bar.close(snap)
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("listing...") and len(lines) == 2 and "files 5/10" in lines[1]


def test_pypi_client_drives_a_load_job(start_worker, bucket_mount, etcd_server, tree):
    """The PyPI alluxiofs client's submit_load / load_progress / stop_load work against
    our workers, and its reads after the job are all cache hits."""
    from test_compat_pypi import COMPAT_PYTHON

    if not COMPAT_PYTHON.exists():
        pytest.skip(f"no PyPI alluxiofs client at {COMPAT_PYTHON} (run `make compat-venv`)")
    prefix, files = tree
    args = ["--etcd", etcd_server.endpoint, "--etcd-lease-ttl", "5s"]
    workers = [start_worker(bucket_mount, extra_args=args) for _ in range(3)]
    base = {"etcd_host": "127.0.0.1", "etcd_port": etcd_server.client_port}

    def run(cfg: dict) -> dict:
        proc = subprocess.run(
            [str(COMPAT_PYTHON), os.path.join(os.path.dirname(__file__), "compat_pypi_load.py"),
             json.dumps({**base, **cfg})],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    loaded = run({"mode": "load", "path": prefix})
    assert loaded["submitted"] is True
    assert loaded["states"][-1] == "SUCCEEDED", loaded
    assert loaded["content"]["respProperties"]["filesTotal"] == str(len(files))
    assert loaded["stopped"] is False  # nothing left running
    gets = ufs_requests(workers, "get")
    urls = sorted(u for u, d in files.items() if d)
    read = run({"mode": "read", "urls": urls})
    for url in urls:
        assert read["whole"][url] == hashlib.sha256(files[url]).hexdigest(), url
    assert ufs_requests(workers, "get") == gets


def test_progress_true_draws_a_bar_on_stderr(make_fs, start_worker, bucket_mount, tree, capsys):
    prefix, files = tree
    fs = make_fs([start_worker(bucket_mount)])
    summary = fs.load(prefix, progress=True)
    assert summary["files_total"] == len(files)
    err = capsys.readouterr().err
    assert err.endswith("\n") and f"files {len(files)}/{len(files)}" in err.splitlines()[-1]
