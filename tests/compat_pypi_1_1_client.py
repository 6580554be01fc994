"""Read files through alluxiofs workers with the PyPI ``alluxiofs`` client 1.1.17.

Run by tests/test_compat_pypi_s3.py with the Python of the separate virtual
environment holding that client (``make compat-venv-1.1``), inside the
network namespace of the workers. Prints one JSON line: the SHA-256 of every
read, the ``ls`` and ``info`` answers, and every request the client sent.

What 1.1.17 does (alluxiofs/client/core.py of that release):

- every operation first asks ``GET /v1/node?path=<url>`` of the worker its
  list picks (``hash(url) % len(workers)``) and goes to the worker the
  answer names (``{"Host", "HttpServerPort"}``; it keeps its own pick when
  the answer is an HTTP error);
- ``info`` is ``GET /v1/info?path=<url>``, ``ls`` is ``GET /v1/files?path=<url>``;
- every data read is ``GET http://<worker host>:29998<name from /v1/info>``
  with ``Range: bytes=<first>-<last>`` (pycurl, port 29998 hard-coded): the
  worker's S3 endpoint, the mount's first path segment being the bucket.

The client is built without a target filesystem, so it cannot fall back to
the UFS: every byte it returns came from the workers. The two request
functions are wrapped (arguments and results passed through unchanged) only
to record what was sent.
"""

import hashlib
import importlib.metadata
import json
import sys

import alluxiofs.client.core as client_core
import requests
from alluxiofs import AlluxioFileSystem

SENT = []


def _record_s3_get():
    send = client_core._c_send_get_request_write_bytes

    def recorded(url, headers, *args, **kwargs):
        entry = {"via": "pycurl", "method": "GET", "url": url, "headers": dict(headers)}
        SENT.append(entry)
        try:
            data = send(url, headers, *args, **kwargs)
        except Exception as e:
            entry["error"] = str(e)
            raise
        entry["bytes"] = len(data)
        return data

    client_core._c_send_get_request_write_bytes = recorded


def _record_requests():
    send = requests.Session.send

    def recorded(self, request, **kwargs):
        response = send(self, request, **kwargs)
        entry = {"via": "requests", "method": request.method, "url": request.url,
                 "status": response.status_code}  # fmt: skip
        if "/v1/node" in request.url and response.ok:
            entry["answer"] = response.json()
        SENT.append(entry)
        return response

    requests.Session.send = recorded


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def main() -> None:
    cfg = json.loads(sys.argv[1])
    _record_s3_get()
    _record_requests()
    # "host:port" entries: 1.1.17's load balancer parses the port of such an
    # entry itself (a bare host takes worker_http_port, which its config
    # check wants as an int and its load balancer as a string).
    fs = AlluxioFileSystem(worker_hosts=",".join(cfg["workers"]))
    out = {
        "client_version": importlib.metadata.version("alluxiofs"),
        "ufs_fallback_possible": fs.fs is not None,
    }
    if cfg.get("bare_cat"):
        # cat_file(url) with no end: the client sends Range: bytes=0--2.
        out["bare_cat"] = {}
        for url in cfg["bare_cat"]:
            try:
                out["bare_cat"][url] = _sha(fs.cat_file(url))
            except Exception as e:
                out["bare_cat"][url] = _error(e)
    else:
        out["info"] = {}
        for url in cfg["info"]:
            i = fs.info(url)
            out["info"][url] = {"name": i["name"], "type": i["type"], "size": i["size"]}
        # ls(detail=False) fails in 1.1.17 itself (it returns a `path`
        # attribute its AlluxioPathStatus lacks), so its users list with details.
        out["ls"] = {
            url: sorted([e["name"], e["type"], e["size"]] for e in fs.ls(url, detail=True))
            for url in cfg["ls"]
        }
        out["passes"] = []
        for _ in range(cfg["passes"]):
            p = {"open_read": {}, "cat_whole": {}, "ranges": [], "seeks": []}
            for url in cfg["whole"]:
                with fs.open(url, "rb") as f:
                    p["open_read"][url] = _sha(f.read())
                size = out["info"][url]["size"]
                if size:  # an empty range is bytes=0--1, which no server serves
                    p["cat_whole"][url] = _sha(fs.cat_file(url, 0, size))
            for url, start, end in cfg["ranges"]:
                p["ranges"].append([url, start, end, _sha(fs.cat_file(url, start, end))])
            for url, reads in cfg["seeks"]:
                with fs.open(url, "rb") as f:
                    for offset, length in reads:
                        f.seek(offset)
                        p["seeks"].append([url, offset, length, _sha(f.read(length))])
            out["passes"].append(p)
    out["client_errors"] = fs.get_error_metrics()["error_counts"]
    out["sent"] = SENT
    print(json.dumps(out))


if __name__ == "__main__":
    main()
