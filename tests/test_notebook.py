"""examples/quickstart.ipynb, executed headless in a real Jupyter kernel (nbclient).

The notebook runs against the embedded worker (a real cache worker process)
over a local dataset, and over the session's S3 server. Any cell error fails
the test. Its ``fs.load(..., progress=True)`` cell must show the progress as
one display updated in place, not as a stream of ``\\r`` redraws.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"
TIMEOUT = 120  # seconds per cell


class _Recording(nbclient.NotebookClient):
    """Keeps every output message of every cell: the saved notebook holds only the
    last state of a display that was updated in place."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages: dict[int, list[dict]] = {}

    def process_message(self, msg, cell, cell_index):
        self.messages.setdefault(cell_index, []).append(msg)
        return super().process_message(msg, cell, cell_index)


def _execute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, options: dict):
    """Run the notebook in ``tmp_path`` with its own ALLUXIOFS_HOME; the executed
    notebook and the kernel's messages per cell."""
    import alluxiofs.embedded

    home = tmp_path / "home"
    # The kernel inherits this environment: the parameter cell reads the dataset's
    # location from it, the embedded worker its state directory.
    monkeypatch.setenv("ALLUXIOFS_HOME", str(home))
    monkeypatch.setenv("ALLUXIOFS_QUICKSTART_URL", url)
    monkeypatch.setenv("ALLUXIOFS_QUICKSTART_OPTIONS", json.dumps(options))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = _Recording(
        nb,
        timeout=TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:
        # The notebook's last cell stops its worker; this covers a failed cell.
        stopped = alluxiofs.embedded.stop_all()
    assert stopped == 0, "the notebook left its embedded worker running"
    return nb, client.messages


def _tagged(nb, tag: str) -> int:
    (index,) = [i for i, c in enumerate(nb.cells) if tag in c.metadata.get("tags", [])]
    return index


def _text(cell) -> str:
    out = []
    for o in cell.outputs:
        if o.output_type == "stream":
            out.append(o.text)
        elif "data" in o:
            out.append(o.data.get("text/plain", ""))
    return "\n".join(out)


def _check(nb, messages) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert not errors, cell.source

    # The load's progress: one display, then updates of it in place (at least the
    # final one, with the summary); no stream output at all, so neither a line per
    # redraw nor carriage returns.
    index = _tagged(nb, "load")
    kinds = [m["msg_type"] for m in messages[index]]
    outputs = [k for k in kinds if k in ("stream", "display_data", "update_display_data")]
    assert outputs[0] == "display_data" and set(outputs[1:]) == {"update_display_data"}, kinds
    assert all("\r" not in json.dumps(m["content"]) for m in messages[index])
    load = nb.cells[index]
    assert [o.output_type for o in load.outputs] == ["display_data"], load.outputs
    data = load.outputs[0].data
    n_files = 256 + 4  # images + Parquet files (the parameter cell's defaults)
    assert "<progress" in data["text/html"] and 'value="100.0"' in data["text/html"]
    assert f"files {n_files}/{n_files}" in data["text/plain"]
    assert f"files:   {n_files} total, {n_files} loaded, 0 skipped" in data["text/plain"]

    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    assert "256 images and 4 Parquet files" in text
    assert "256 rows, columns ['image', 'label', 'weight']" in text
    assert "epoch 1: 256 images" in text and "accuracy 100%" in text
    # The stats cell: every read was served by the worker, none fell back.
    assert "'fallbacks': {}" in text
    assert "stopped 1 worker(s)" in text


def test_quickstart_notebook_local(tmp_path, monkeypatch):
    data = tmp_path / "quickstart-data"
    _check(*_execute(tmp_path, monkeypatch, str(data), {}))
    assert (data / "tables" / "part-3.parquet").is_file()


def test_quickstart_notebook_s3(tmp_path, monkeypatch, s3_server):
    url = f"s3://{s3_server.bucket}/quickstart-{tmp_path.name}"
    _check(*_execute(tmp_path, monkeypatch, url, s3_server.target_options()))
    assert s3_server.s3fs().isfile(f"{url}/tables/part-3.parquet")
