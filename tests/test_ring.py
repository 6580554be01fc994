"""The consistent hash ring reproduces Alluxio's golden vectors bit for bit.

Fixtures in ``fixtures/hash_res`` (see its README) come from the Alluxio Java
implementation: worker identities, the 250 ring points of 50 workers with 5
virtual nodes each, and the ordered 5 workers chosen for 21 URLs.
"""

from __future__ import annotations

import json
from pathlib import Path

import alluxiofs
import pytest

HASH_RES = Path(__file__).parent / "fixtures" / "hash_res"


def _load(name: str):
    return json.loads((HASH_RES / name).read_text())


@pytest.fixture(scope="module")
def hostnames() -> list[str]:
    """The 50 worker host names of the golden vectors."""
    return _load("workerHostnames.json")


@pytest.fixture(scope="module")
def ring(hostnames):
    """The legacy ring over the 50 golden workers, 5 virtual nodes each."""
    return alluxiofs.HashRing(hostnames=hostnames, vnodes=5)


def test_worker_identities(hostnames):
    """worker_identity(hostname) is UUID v3 of the name: the golden identity list."""
    expected = {w["identifier"] for w in _load("workerList.json")}
    got = [alluxiofs.worker_identity(h) for h in hostnames]
    assert all(len(g) == 32 and int(g, 16) >= 0 for g in got)
    assert len(set(got)) == len(hostnames)
    assert set(got) == expected


def test_ring_points(ring):
    """All 250 ring points and their owners match activeNodesMap.json."""
    expected = sorted((int(k), v["identifier"]) for k, v in _load("activeNodesMap.json").items())
    got = sorted((int(p), str(w)) for p, w in ring.points())
    assert len(got) == 250
    assert got == expected


def test_file_url_workers_in_order(ring):
    """Each of the 21 URLs maps to the same 5 workers, in the same order."""
    vectors = _load("fileUrlWorkers.json")
    assert len(vectors) == 21
    for url, workers in vectors.items():
        expected = [w["identifier"] for w in workers]
        assert ring.get_multiple(url, 5) == expected, url


def test_get_multiple_prefix_and_bounds(ring):
    """Asking for fewer workers gives a prefix of the longer answer; never duplicates."""
    url = next(iter(_load("fileUrlWorkers.json")))
    five = ring.get_multiple(url, 5)
    assert ring.get_multiple(url, 1) == five[:1]
    assert ring.get_multiple(url, 3) == five[:3]
    many = ring.get_multiple(url, 50)
    assert len(many) == len(set(many))
    assert many[:5] == five


def test_ring_is_deterministic_across_instances(hostnames):
    """Two rings over the same workers, listed in another order, agree."""
    a = alluxiofs.HashRing(hostnames=hostnames, vnodes=5)
    b = alluxiofs.HashRing(hostnames=list(reversed(hostnames)), vnodes=5)
    for i in range(50):
        url = f"s3://bucket/some/deep/path/file-{i:05d}.parquet"
        assert a.get_multiple(url, 4) == b.get_multiple(url, 4)
