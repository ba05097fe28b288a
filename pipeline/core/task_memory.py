"""Each task's peak resident memory, in its datatrove stats: what the Ray memory requests are measured from
(``task_memory_requests.py``), and what shows which step of a stage holds the most.

``TaskMemory`` ends every pipeline that ``run_steps`` runs; at the task's start it also returns to the OS
the memory earlier tasks of the same worker freed (``release_freed_memory``), so a worker's footprint is
its current task's, not its largest task's. Being the last generator, its code before the
loop runs when the task starts and its code after the loop when every step above it has finished (writers
closed), so the peak it reads covers the whole task. Worker processes are reused for many tasks (the local
pool, Ray's workers), so the kernel's high-water mark is reset at the task's start (``/proc/self/clear_refs``,
Linux >= 4.0); where that is not permitted the figure is the process's peak so far, at least the task's own
(``peak_rss_reset`` says which). ``process_tasks_before`` counts the tasks the same process ran before this one,
so a peak that climbs with it is memory the process keeps between tasks, not the task's own. The memory a task's process mapped from files it shares with others (a model
loaded once in the forkserver) counts in full, as the kernel's RSS does.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

STEP_NAME = "📏 Task memory"
_tasks_run_here = 0  # tasks this process has run (worker processes are reused)


def release_freed_memory() -> bool:
    """Hand the memory earlier tasks freed back to the OS: glibc's ``malloc_trim(0)`` (free heap pages returned,
    not only the heap's top; ~3 ms). No ``gc.collect()``: in a process that imported torch it costs 0.1-0.5 s,
    paid by every task of every pool, for cycles the collector frees anyway. Without it a reused worker keeps
    the heap of its largest task: freeing a large numpy array raises glibc's dynamic mmap threshold, so later
    arrays come from the heap, which is not returned (measured: dedup final-pass workers stayed at ~620-670 MiB
    on tasks that need ~230 after a code shard's suffix array). False where the C library has no malloc_trim."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM) in MiB; 0 where /proc is not there."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class TaskMemory(PipelineStep):
    name = STEP_NAME
    type = "📏 - METER"

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        global _tasks_run_here
        release_freed_memory()
        reset, before = reset_peak_rss(), _tasks_run_here
        _tasks_run_here += 1
        if data:
            yield from data
        self.stat_update("peak_rss_mib", value=round(peak_rss_mib(), 1))
        self.stat_update("peak_rss_reset", value=int(reset))
        self.stat_update("process_tasks_before", value=before)


def largest_task_rss(logging_dir: str, recursive: bool = True) -> float | None:
    """The largest peak RSS (MiB) of the tasks whose per-rank stats lie under ``logging_dir`` (at any depth
    unless ``recursive`` is False: a stage's pools each have their own logs folder); None if no task recorded one."""
    peaks = []
    pattern = os.path.join(logging_dir, "**", "stats", "*.json") if recursive else os.path.join(logging_dir, "stats", "*.json")
    for path in glob.glob(pattern, recursive=recursive):
        with open(path) as f:
            for step in json.load(f):
                if step.get("name", "").endswith(STEP_NAME) and "peak_rss_mib" in step.get("stats", {}):
                    value = step["stats"]["peak_rss_mib"]
                    peaks.append(value["total"] if isinstance(value, dict) else value)
    return max(peaks) if peaks else None
