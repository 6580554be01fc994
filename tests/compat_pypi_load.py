"""Drive a load job and read files with the PyPI ``alluxiofs`` client (1.0.x).

Run by tests/test_load.py with the Python of the compat virtual environment
(see tests/test_compat_pypi.py). ``mode`` ``load``: submit a load job of
``path`` with the client's ``submit_load``, poll ``load_progress`` until the
job ends, then ``stop_load`` (nothing left to stop); ``read``: read every URL
whole. Prints the outcome as JSON on the last line.
"""

import hashlib
import json
import sys
import time

from alluxiofs import AlluxioFileSystem


def main() -> None:
    cfg = json.loads(sys.argv[1])
    fs = AlluxioFileSystem(etcd_hosts=cfg["etcd_host"], etcd_port=cfg["etcd_port"])
    client = fs.alluxio
    out = {}
    if cfg["mode"] == "load":
        out["submitted"] = client.submit_load(cfg["path"])
        states = []
        deadline = time.time() + 120
        while time.time() < deadline:
            state, content = client.load_progress(cfg["path"])
            states.append(state.name)
            if state.name != "RUNNING":
                out["content"] = content
                break
            time.sleep(0.1)
        out["states"] = states
        out["stopped"] = client.stop_load(cfg["path"])
    else:
        out["whole"] = {}
        for url in cfg["urls"]:
            with fs.open(url, "rb") as f:
                out["whole"][url] = hashlib.sha256(f.read()).hexdigest()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
