"""What a pool's Ray tasks ask for: the recipe's figure, else mem_per_cpu_gb, else the measured peak plus
headroom (pipeline/core/task_peaks.json); a task no node could hold fails the stage before it starts."""

from __future__ import annotations

import pytest

from pipeline.core.config import RayConfig
from pipeline.core.ray_executor import RankFailed, RayRankTasks
from pipeline.core.task_memory_requests import HEADROOM, measured_peaks, task_memory_mib


def test_the_shipped_table_names_every_data_stage_and_dedup_pass():
    peaks = measured_peaks()
    assert {"filter", "decontam", "tokenize"} <= set(peaks)
    assert any(p.startswith("dedup/minhash") for p in peaks) and any(p.startswith("dedup/substring") for p in peaks)
    assert all(100 < mib < 8192 for mib in peaks.values())
    assert peaks["filter"] > 2 * peaks["decontam"]  # the point of asking per stage


def test_requests_follow_the_table_unless_the_recipe_says_otherwise():
    peaks = measured_peaks()
    measured = task_memory_mib("filter", {}, None, 1)
    assert measured % 64 == 0 and peaks["filter"] * HEADROOM <= measured < peaks["filter"] * HEADROOM + 64
    assert task_memory_mib("decontam", {}, None, 1) < measured
    assert task_memory_mib("filter", {}, 2.0, 2) == 4096  # mem_per_cpu_gb x CPUs, every pool alike
    assert task_memory_mib("filter", {"filter": 3.5}, 2.0, 1) == 3584  # the stage's own figure wins
    pool = next(p for p in peaks if p.startswith("dedup/"))
    assert task_memory_mib(pool, {"dedup": 1.0, pool: 0.5}, None, 1) == 512  # the pool's over its stage's
    assert task_memory_mib(pool, {"dedup": 1.0}, None, 1) == 1024
    assert task_memory_mib("some_new_pool", {}, None, 1) == 1024  # never measured: Ray's usual 1 GiB


def test_an_unknown_pool_in_the_recipe_fails_validation():
    with pytest.raises(ValueError, match="no stage or pool is called 'filtre'"):
        RayConfig(task_memory_gb={"filtre": 3.0})
    with pytest.raises(ValueError, match="must be more than 0"):
        RayConfig(task_memory_gb={"filter": 0})
    assert RayConfig(task_memory_gb={"filter": 3.0, "dedup": 1.0}).task_memory_gb["filter"] == 3.0


def test_a_task_larger_than_every_node_fails_naming_the_setting(tmp_path):
    executor = RayRankTasks(pipeline=[], tasks=1, workers=1, logging_dir=str(tmp_path), pool="filter", memory_mib=3200)
    nodes = [{"Alive": True, "Resources": {"memory": 3 * 2**30}}, {"Alive": False, "Resources": {"memory": 64 * 2**30}}]
    with pytest.raises(RankFailed, match=r"filter: each task asks Ray for 3,200 MiB .*\(3,072 MiB on the largest.*"
                                          r"task_memory_gb.filter"):
        executor._check_memory_fits(nodes)
    executor._check_memory_fits([{"Alive": True, "Resources": {"memory": 4 * 2**30}}])


def test_a_round_asks_as_its_pass_and_logs_folders_map_to_table_names():
    from pipeline.core.task_memory_requests import pool_and_parents, table_name

    assert pool_and_parents("dedup/minhash_components/3") == ["dedup/minhash_components/3", "dedup/minhash_components", "dedup"]
    assert table_name("dedup", "minhash_components/003") == "dedup/minhash_components"
    assert table_name("filter", ".") == "filter" and table_name("decontam", "corpus_ngrams") == "decontam/corpus_ngrams"
    assert task_memory_mib("dedup/minhash_components/7", {"dedup/minhash_components": 0.75}, None, 1) == 768
