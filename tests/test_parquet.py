"""The columnar fast path: Parquet through PyArrow over alluxiofs.

- Over-read: a file of 20 columns read with 2 projected asks the workers for
  at most 1.1x the bytes of the needed column chunks (client counter
  ``fs.stats()["bytes_read"]``), with the Parquet prefetch on; the footer is
  kept per process, so a second read asks for exactly the chunks.
- Zero copy: the Arrow buffer PyArrow gets from a read is the ``bytes``
  object the native call built, not a copy of it.
- Results equal the table written, with ``pre_buffer`` on and off, through
  ``pq.ParquetFile(fs.open(...))`` and ``iter_batches``.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

COLUMNS = [f"c{i:02d}" for i in range(20)]
PROJECTED = ["c03", "c14"]
ROWS = 100_000
ROW_GROUP = 20_000


@pytest.fixture(scope="module")
def wide(s3_server):
    """A 20-column Parquet file (5 row groups) in the bucket: (path, table, needed bytes)."""
    rng = np.random.default_rng(20)
    table = pa.table({c: rng.standard_normal(ROWS) for c in COLUMNS})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=ROW_GROUP)
    path = f"{s3_server.bucket}/columnar/wide.parquet"
    s3_server.s3fs().pipe_file(path, buf.getvalue())
    md = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata
    needed = 0
    for rg in range(md.num_row_groups):
        for c in PROJECTED:
            needed += md.row_group(rg).column(COLUMNS.index(c)).total_compressed_size
    return path, table, needed


@pytest.fixture
def worker(start_worker, bucket_mount):
    """One fresh worker."""
    return start_worker(bucket_mount)


def _bytes_read(fs) -> int:
    return fs.stats()["bytes_read"]


@pytest.mark.parametrize("pre_buffer", [True, False])
def test_projection_over_read_at_most_1_1(make_fs, worker, wide, pre_buffer):
    """2 of 20 columns: bytes asked of the workers / bytes of the needed chunks <= 1.1."""
    path, table, needed = wide
    # The footer cache is per process: the first parameter reads the footer,
    # the second may find it kept already (ratio 1.0).
    fs = make_fs([worker])
    before = _bytes_read(fs)
    got = pq.read_table(path, filesystem=fs, columns=PROJECTED, pre_buffer=pre_buffer)
    assert got.equals(table.select(PROJECTED))
    first = _bytes_read(fs) - before
    ratio = first / needed
    print(f"\nover-read pre_buffer={pre_buffer}: {first} / {needed} = {ratio:.3f}")
    assert needed <= first and ratio <= 1.1
    # Again in this process: the footer comes from the process cache, so
    # exactly the chunks are asked for.
    before = _bytes_read(fs)
    got = pq.read_table(path, filesystem=fs, columns=PROJECTED, pre_buffer=pre_buffer)
    assert got.equals(table.select(PROJECTED))
    assert _bytes_read(fs) - before == needed


def test_prefetch_never_reads_more_than_without(make_fs, worker, wide):
    """Depth 0 (off) against depth 2: the prefetch adds no bytes.

    It saves some: with it off, the first chunk read of a re-opened file
    (pyarrow's dataset opens the file twice) starts a sequential readahead
    window of ``readahead_initial`` bytes; with it on, the layout is known
    and that read is a column read.
    """
    path, table, needed = wide
    counts = {}
    for depth in (0, 2):
        fs = make_fs([worker], parquet_prefetch_depth=depth)
        before = _bytes_read(fs)
        got = pq.read_table(path, filesystem=fs, columns=PROJECTED)
        assert got.equals(table.select(PROJECTED))
        counts[depth] = _bytes_read(fs) - before
    print(f"\nbytes read: off {counts[0] / needed:.3f}x, depth 2 {counts[2] / needed:.3f}x")
    assert needed <= counts[2] <= counts[0]


def test_parquet_file_and_iter_batches(make_fs, worker, wide):
    """pq.ParquetFile over fs.open(): row group reads and batches equal the source."""
    path, table, _ = wide
    fs = make_fs([worker])
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        assert pf.metadata.num_row_groups == ROWS // ROW_GROUP
        for rg in (0, 2, 3, 4, 1):
            got = pf.read_row_group(rg, columns=PROJECTED)
            want = table.slice(rg * ROW_GROUP, ROW_GROUP).select(PROJECTED)
            assert got.equals(want), rg
    with fs.open(path, "rb") as f:
        batches = list(pq.ParquetFile(f).iter_batches(batch_size=7_000, columns=["c00", "c19"]))
    assert pa.Table.from_batches(batches).equals(table.select(["c00", "c19"]))


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython bytes layout")
def test_arrow_buffer_is_the_native_bytes(make_fs, worker, wide):
    """PyArrow wraps the bytes object a read returns: no copy between our call and Arrow."""
    from alluxiofs.file import AlluxioFile

    path, _, _ = wide
    fs = make_fs([worker])
    seen: list[bytes] = []
    with fs.open(path, "rb") as f:
        assert isinstance(f, AlluxioFile)
        orig = f.cache.fetcher  # fsspec's "none" cache calls _fetch_range directly

        def spy(start: int, end: int) -> bytes:
            data = orig(start, end)
            seen.append(data)
            return data

        f.cache.fetcher = spy
        arrow_file = pa.PythonFile(f, mode="r")
        # What Arrow's ReadAt does on a Python file: seek, then read a buffer.
        arrow_file.seek(5000)
        buf = arrow_file.read_buffer(123_456)
        assert len(seen) == 1 and len(buf) == 123_456
        data = seen[0]
        # The data of a CPython bytes object starts sys.getsizeof(b"") - 1 bytes in.
        assert buf.address == id(data) + sys.getsizeof(b"") - 1
        assert buf.to_pybytes() == fs.cat_file(path, 5000, 5000 + 123_456)
