"""Read files through alluxiofs workers with the PyPI ``alluxiofs`` client (1.0.x).

Run by tests/test_compat_pypi.py with the Python of a separate virtual
environment holding that client (its ``etcd3`` dependency pins protobuf 3.20,
which cannot live beside our test dependencies). Prints, as JSON, the SHA-256
of every whole-file read and every range read, for the test to compare.
The client is built without a target filesystem, so it cannot fall back to
the UFS: every byte it returns came from our workers.
"""

import hashlib
import json
import sys

from alluxiofs import AlluxioFileSystem


def main() -> None:
    cfg = json.loads(sys.argv[1])
    if cfg.get("etcd_host"):
        fs = AlluxioFileSystem(etcd_hosts=cfg["etcd_host"], etcd_port=cfg["etcd_port"])
    else:
        fs = AlluxioFileSystem(worker_hosts=",".join(cfg["hosts"]), worker_http_port=cfg["port"])
    out = {"whole": {}, "ranges": []}
    for url in cfg["urls"]:
        # Its cat_file(url) without offsets fails ("Offset must be a
        # non-negative integer"); whole files are read as its users do.
        with fs.open(url, "rb") as f:
            out["whole"][url] = hashlib.sha256(f.read()).hexdigest()
    for url, start, end in cfg["ranges"]:
        data = fs.cat_file(url, start, end)
        out["ranges"].append([url, start, end, hashlib.sha256(data).hexdigest()])
    out["info"] = {url: fs.info(url)["size"] for url in cfg["urls"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
