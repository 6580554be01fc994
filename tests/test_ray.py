"""Ray Data through alluxiofs on a local Ray cluster (``ray.init(num_cpus=2)``).

``read_parquet``, ``read_images``, ``read_binary_files`` and ``read_csv``
with ``filesystem=<AlluxioFileSystem>``: the filesystem is pickled to Ray's
worker processes, each builds its own native client, and the rows equal what
the same call returns reading the S3 server directly through s3fs.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this module, shut down at its end."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        object_store_memory=200 * 1024 * 1024,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_data(s3_server):
    """Images, binary files and CSV files in the bucket: their directories (no scheme)."""
    from PIL import Image

    s3 = s3_server.s3fs()
    base = f"{s3_server.bucket}/ray"
    rng = np.random.default_rng(3)
    files = {}
    for i in range(12):
        arr = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        b = io.BytesIO()
        Image.fromarray(arr).save(b, format="PNG")
        files[f"{base}/images/img-{i:02d}.png"] = b.getvalue()
    for i in range(6):
        files[f"{base}/bin/blob-{i}.bin"] = rng.bytes(1000 + 70_000 * i)
    for i in range(3):
        lines = ["a,b,name"] + [f"{i * 100 + j},{j * 0.5},n{j % 7}" for j in range(100)]
        files[f"{base}/csv/part-{i}.csv"] = ("\n".join(lines) + "\n").encode()
    s3.pipe(files)
    return {"images": f"{base}/images", "bin": f"{base}/bin", "csv": f"{base}/csv"}


@pytest.fixture
def fs(make_fs, start_worker, bucket_mount):
    """alluxiofs over one fresh worker."""
    return make_fs([start_worker(bucket_mount)])


def _rows(ds, key: str) -> list[dict]:
    return sorted(ds.take_all(), key=lambda r: r[key])


def test_read_parquet(ray_cluster, fs, s3_server, dataset):
    """read_parquet (with a projection) equals the same read through s3fs."""
    direct = ray.data.read_parquet(dataset.parquet_dir, filesystem=s3_server.s3fs())
    ours = ray.data.read_parquet(dataset.parquet_dir, filesystem=fs)
    assert (
        ours.count() == direct.count() == sum(t.num_rows for t in dataset.parquet_tables.values())
    )
    want = direct.to_pandas().sort_values("id").reset_index(drop=True)
    got = ours.to_pandas().sort_values("id").reset_index(drop=True)
    assert got.equals(want)
    proj = ray.data.read_parquet(dataset.parquet_dir, filesystem=fs, columns=["id", "y"])
    got = proj.to_pandas().sort_values("id").reset_index(drop=True)
    assert got.equals(want[["id", "y"]])


def test_read_images(ray_cluster, fs, s3_server, ray_data):
    """read_images decodes the same pixels as through s3fs."""
    direct = _rows(
        ray.data.read_images(ray_data["images"], filesystem=s3_server.s3fs(), include_paths=True),
        "path",
    )
    ours = _rows(
        ray.data.read_images(ray_data["images"], filesystem=fs, include_paths=True), "path"
    )
    assert len(ours) == len(direct) == 12
    for a, b in zip(ours, direct, strict=True):
        assert a["path"] == b["path"]
        assert a["image"].shape == (24, 32, 3)
        assert np.array_equal(a["image"], b["image"])


def test_read_binary_files(ray_cluster, fs, s3_server, ray_data):
    """read_binary_files returns the same bytes as through s3fs."""
    direct = _rows(
        ray.data.read_binary_files(
            ray_data["bin"], filesystem=s3_server.s3fs(), include_paths=True
        ),
        "path",
    )
    ours = _rows(
        ray.data.read_binary_files(ray_data["bin"], filesystem=fs, include_paths=True), "path"
    )
    assert [r["path"] for r in ours] == [r["path"] for r in direct]
    assert len(ours) == 6
    for a, b in zip(ours, direct, strict=True):
        assert a["bytes"] == b["bytes"]


def test_read_csv(ray_cluster, fs, s3_server, ray_data):
    """read_csv equals the same read through s3fs."""
    direct = ray.data.read_csv(ray_data["csv"], filesystem=s3_server.s3fs()).to_pandas()
    ours = ray.data.read_csv(ray_data["csv"], filesystem=fs).to_pandas()
    direct = direct.sort_values("a").reset_index(drop=True)
    ours = ours.sort_values("a").reset_index(drop=True)
    assert len(ours) == 300
    assert ours.equals(direct)


def test_filesystem_pickles_into_ray_tasks(ray_cluster, fs, dataset):
    """A Ray task gets the pickled filesystem and reads with a client of its own process."""
    path = sorted(dataset.small)[9]

    @ray.remote
    def read_in_task(f, p):
        return os.getpid(), f.cat_file(p)

    pid, data = ray.get(read_in_task.remote(fs, path))
    assert pid != os.getpid()
    assert data == dataset.small[path]


def test_alluxio_client_readme_ray_example(
    ray_cluster, start_worker, bucket_mount, etcd_server, s3_server, ray_data
):
    """The Ray example of Alluxio's own client's README runs unchanged: etcd_hosts (host
    name only) + etcd_port, protocol "alluxiofs", read_csv of one file and of a directory."""
    import fsspec
    from alluxiofs import AlluxioFileSystem

    start_worker(bucket_mount, extra_args=["--etcd", etcd_server.endpoint]).wait_registered()
    host, port = etcd_server.endpoint.split("://", 1)[-1].rsplit(":", 1)
    fsspec.register_implementation("alluxiofs", AlluxioFileSystem, clobber=True)
    alluxio_fs = fsspec.filesystem(
        "alluxiofs", etcd_hosts=host, etcd_port=int(port), target_protocol="s3",
        target_options=s3_server.target_options(), skip_instance_cache=True,
    )  # fmt: skip
    assert len(alluxio_fs.workers()) == 1
    ds = ray.data.read_csv(f"s3://{ray_data['csv']}/part-0.csv", filesystem=alluxio_fs)
    assert ds.count() == 100
    assert ds.schema().names == ["a", "b", "name"]
    assert ds.take(1)[0]["a"] == 0
    ds2 = ray.data.read_csv(f"s3://{ray_data['csv']}/", filesystem=alluxio_fs)
    assert ds2.count() == 300


def test_full_s3_urls_go_through_the_cache(ray_cluster, make_fs, two_workers, s3_server, dataset):
    """``read_parquet("s3://...", filesystem=fs)``: Ray keeps a filesystem for a URL only if
    its protocols name the URL's scheme; the rows must come from the workers, not from a
    native S3 filesystem Ray would make instead."""
    from harness import metric_total

    fs = make_fs(two_workers)
    assert "s3" in fs.protocol
    before = metric_total(two_workers, "alluxiofs_requests_total")
    ours = ray.data.read_parquet(f"s3://{dataset.parquet_dir}/", filesystem=fs)
    direct = ray.data.read_parquet(dataset.parquet_dir, filesystem=s3_server.s3fs())
    assert ours.count() == direct.count()
    assert metric_total(two_workers, "alluxiofs_requests_total") > before
