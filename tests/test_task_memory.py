"""Each task's peak RSS lands in its stats, measured from the task's own start even when one process runs
several tasks one after another."""

import json
import os

import numpy as np
from datatrove.pipeline.base import PipelineStep

from pipeline.core.config import ExecutorConfig
from pipeline.core.executors import run_steps
from pipeline.core.task_memory import STEP_NAME, largest_task_rss


class HoldsMemory(PipelineStep):
    """Task 0 touches 256 MiB and frees it; task 1 allocates nothing."""

    name = "holds memory"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if rank == 0:
            block = np.ones(256 * 2**20, np.uint8)  # written, so resident
            assert block.sum() == block.size
            del block
        return
        yield


_kept_alive: list = []


class FragmentsTheHeap(PipelineStep):
    """Task 0 frees 192 MiB of 1 MiB arrays that sat between small live ones (after freeing a 30 MiB array,
    which raises glibc's mmap threshold, so the 1 MiB ones come from the heap): freed, but not at the heap's
    top, so glibc keeps it; task 1 allocates nothing."""

    name = "fragments the heap"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if rank == 0:
            block = np.ones(30 * 2**20, np.uint8)
            del block
            big = []
            for _ in range(192):
                big.append(np.ones(2**20, np.uint8))
                _kept_alive.append(np.ones(64, np.uint8))  # a small live object after each block
            del big
        return
        yield


def _task_stats(logging_dir: str, rank: int) -> dict:
    with open(os.path.join(logging_dir, "stats", f"{rank:05d}.json")) as f:
        step = next(s for s in json.load(f) if s["name"].endswith(STEP_NAME))
    return {k: v["total"] if isinstance(v, dict) else v for k, v in step["stats"].items()}  # datatrove's two forms


def _peak(logging_dir: str, rank: int) -> float:
    total = _task_stats(logging_dir, rank)
    assert total["peak_rss_reset"] == 1
    return total["peak_rss_mib"]


def test_each_task_reports_its_own_peak_rss(tmp_path):
    logs = str(tmp_path / "logs")
    # one worker: both tasks run one after the other in this process, so task 1 sees task 0's high-water mark
    # unless it is reset at the task's start
    run_steps(ExecutorConfig(kind="local", workers=1), [HoldsMemory()], logs, 2, "memory")
    first, second = _peak(logs, 0), _peak(logs, 1)
    assert first - second >= 200
    assert largest_task_rss(str(tmp_path)) == first
    # the same process ran both: the second task says one task ran in it before
    assert _task_stats(logs, 1)["process_tasks_before"] == _task_stats(logs, 0)["process_tasks_before"] + 1


def test_a_task_does_not_carry_the_memory_an_earlier_task_freed(tmp_path):
    logs = str(tmp_path / "logs")
    run_steps(ExecutorConfig(kind="local", workers=1), [FragmentsTheHeap()], logs, 2, "memory")
    # the 192 MiB task 0 freed are handed back before task 1 starts (malloc_trim): task 1's peak is not task 0's
    assert _peak(logs, 0) - _peak(logs, 1) >= 150
