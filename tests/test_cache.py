"""Feature caches are reused, bounded ($SPARSE_VP_CACHE_MB, least recently used go first) and
recomputed when damaged; every record reports the peak memory of its process (Linux /proc)."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest
import torch

from lib.study.experiment import CACHE_ENV, cache_limit_bytes, evict_cache, run_experiments


@pytest.fixture
def make_cfg(tiny_config):
    """This file's runs: the shared tiny config (conftest.TINY) with its own defaults."""
    return functools.partial(tiny_config, study="c", method="lp")


def _cache(outputs: Path) -> dict[str, os.stat_result]:
    return {p.name: p.stat() for p in (outputs / "cache" / "features").glob("*.pt")}


def _age(outputs: Path, names, seconds: float) -> None:
    then = time.time() - seconds
    for name in names:
        os.utime(outputs / "cache" / "features" / name, (then, then))


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise AssertionError(f"no {field} in /proc/self/status")


def test_eviction_removes_least_recently_used_first(tmp_path):
    now = time.time()
    for age, name in enumerate(("new", "mid", "old")):  # 1 KiB each, mtimes now, -1 h, -2 h
        path = tmp_path / f"{name}.pt"
        path.write_bytes(bytes(1024))
        os.utime(path, (now - 3600 * age, now - 3600 * age))
    (tmp_path / "notes.txt").write_bytes(bytes(4096))  # not a cache file: never counted
    assert evict_cache(tmp_path, 3 * 1024) == []
    assert evict_cache(tmp_path, 2 * 1024 + 10) == [tmp_path / "old.pt"]
    # the file just written stays even when it alone exceeds the cap
    assert evict_cache(tmp_path, 10, keep=tmp_path / "mid.pt") == [tmp_path / "new.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid.pt", "notes.txt"]


def test_cache_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_limit_bytes() == 2048 * 2**20
    monkeypatch.setenv(CACHE_ENV, "1.5")
    assert cache_limit_bytes() == int(1.5 * 2**20)
    monkeypatch.setenv(CACHE_ENV, "lots")
    with pytest.raises(ValueError, match=r"\$SPARSE_VP_CACHE_MB='lots': expected a number"):
        cache_limit_bytes()


def test_features_are_reused_touched_and_evicted_lru(outputs, make_cfg, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    rss = _status_mb("VmRSS")
    (record,) = run_experiments([make_cfg(network="dense")])
    # the record reports the peak memory of its process, in MB (not kB or bytes)
    assert rss <= record["peak_rss_mb"] <= _status_mb("VmHWM") + 1
    dense = _cache(outputs)
    assert len(dense) == 2  # train and test features
    run_experiments([make_cfg(network="ticket", sparsity=1)])
    ticket1 = {k: v for k, v in _cache(outputs).items() if k not in dense}
    assert len(ticket1) == 2
    _age(outputs, ticket1, 7200)
    _age(outputs, dense, 3600)

    # another seed of the dense network: a cache hit, read (not rewritten) and touched
    run_experiments([make_cfg(network="dense", seed=2)])
    hit = _cache(outputs)
    for name, before in dense.items():
        assert hit[name].st_ino == before.st_ino  # same file, not recomputed
        assert hit[name].st_mtime > time.time() - 600  # now recently used

    # a cap that holds two networks' features: the least recently used (ticket 1) goes
    pair = sum(s.st_size for s in dense.values())
    monkeypatch.setenv(CACHE_ENV, str((2 * pair + 512) / 2**20))
    run_experiments([make_cfg(network="ticket", sparsity=2)])
    after = _cache(outputs)
    assert set(dense) <= set(after) and not set(ticket1) & set(after)
    assert len(after) == 4 and sum(s.st_size for s in after.values()) <= cache_limit_bytes()


def test_a_damaged_cache_file_is_recomputed(outputs, make_cfg):
    run_experiments([make_cfg()])
    for path in (outputs / "cache" / "features").glob("*.pt"):
        path.write_bytes(path.read_bytes()[:100])  # e.g. a disk that filled up
    with pytest.warns(UserWarning, match="unusable feature cache"):
        (record,) = run_experiments([make_cfg(seed=2)])
    assert record["sizes"]["train"] == 50
    for path in (outputs / "cache" / "features").glob("*.pt"):
        assert torch.load(path, weights_only=True)["features"].ndim == 2  # whole again


def test_a_smaller_pool_never_reads_the_features_of_a_larger_one(
    outputs, make_cfg, tmp_path, monkeypatch
):
    (big,) = run_experiments([make_cfg(train_pool=200, max_test=60)])
    (small,) = run_experiments([make_cfg()])  # same network and dataset, smaller pool
    assert (small["sizes"]["test"], big["sizes"]["test"]) == (30, 60)
    monkeypatch.setenv("SPARSE_VP_OUTPUTS", str(tmp_path / "fresh"))  # nothing cached
    (fresh,) = run_experiments([make_cfg()])
    assert fresh["metrics"] == small["metrics"]
