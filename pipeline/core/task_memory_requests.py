"""The memory a stage's Ray tasks ask for: what its tasks were measured to need, per pool.

Ray packs tasks onto a node by their ``memory`` request; a request below what a task holds lets Ray start more
tasks than the node can hold, and Ray's memory monitor (or the kernel) then kills workers. One flat request for
every stage is wrong both ways: the filter's tasks hold ~1.5 GiB (models, memos), decontam's ~0.4. So each
pool (a stage, or one pass of it: ``dedup/minhash_signatures``) asks for its largest task's peak RSS measured
by ``bench/scale_run.py`` on the 800B recipe (``task_peaks.json`` beside this module, which the bench's
``--refresh-memory-table`` rewrites), plus ``HEADROOM``. A recipe overrides per pool or stage
(``executor.ray.task_memory_gb``) or for every task (``executor.ray.mem_per_cpu_gb``).
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache

TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "task_peaks.json")
HEADROOM = 1.2  # a task's peak varies with its shard (its largest document); the table is one corpus's
UNMEASURED_MIB = 1024  # a pool the table does not name asks for Ray's usual 1 GiB
GRANULE_MIB = 64


@lru_cache(maxsize=1)
def measured_peaks() -> dict[str, float]:
    """{pool: largest task peak RSS in MiB} as last measured."""
    with open(TABLE) as f:
        return json.load(f)["peak_mib"]


def known_pools() -> set[str]:
    """The names ``task_memory_gb`` takes: every measured pool and its stage."""
    pools = set(measured_peaks())
    return pools | {p.split("/", 1)[0] for p in pools}


def task_memory_mib(pool: str, task_memory_gb: dict[str, float], mem_per_cpu_gb: float | None, cpus_per_task: int) -> int:
    """MiB of Ray ``memory`` one task of ``pool`` requests: the recipe's figure for the pool or its stage, else
    ``mem_per_cpu_gb`` x CPUs when the recipe sets it, else the measured peak plus headroom."""
    keys = pool_and_parents(pool)
    for key in keys:
        if key in task_memory_gb:
            return int(task_memory_gb[key] * 1024)
    if mem_per_cpu_gb is not None:
        return int(mem_per_cpu_gb * cpus_per_task * 1024)
    peaks = measured_peaks()
    peak = next((peaks[k] for k in keys if k in peaks), None)
    if peak is None:
        return UNMEASURED_MIB
    return int(math.ceil(peak * HEADROOM / GRANULE_MIB) * GRANULE_MIB)


def pool_and_parents(pool: str) -> list[str]:
    """``dedup/minhash_components/3`` -> itself, ``dedup/minhash_components``, ``dedup``: a round of a pass is
    asked for as its pass, a pass its stage's figure where the table has no other."""
    parts = pool.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def table_name(stage: str, logs_pool: str) -> str:
    """The table's name for a pool whose logs are ``<stage>/logs/<logs_pool>`` ("." the stage's own; a
    numbered round, ``minhash_components/003``, counts as its pass)."""
    if logs_pool == ".":
        return stage
    parts = logs_pool.split("/")
    return "/".join([stage, *(parts[:-1] if parts[-1].isdigit() else parts)])
