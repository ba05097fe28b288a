"""Ranks of a datatrove pipeline as plain Ray tasks, one per rank, retried when a worker or node is lost.

Written by hand rather than taking datatrove 0.10.1's ``RayPipelineExecutor.run`` as it is, because of how
that one fails: each rank runs in a ``multiprocess`` pool forked inside a Ray actor, and a pool whose child
is killed (the kernel's OOM killer, a lost node) never returns, so the stage waits forever; an exception
while its thread places a task leaves a future that is never resolved (another endless wait); and its
per-task time limit kills the task, then looks the killed task up again and raises KeyError. Here each rank
is a Ray task that runs the pipeline in the Ray worker itself (no fork): Ray retries it on a lost worker or
node (``max_retries``), a rank over ``time_limit_s`` is cancelled and resubmitted, and an error raised by the
pipeline fails the stage after the running ranks end. Everything else (completion markers, per-rank
stats and logs, skipping completed ranks) is datatrove's own, so a resumed stage runs only what is missing.
"""

from __future__ import annotations

import json
import time
from collections import deque

from datatrove.executor import RayPipelineExecutor
from loguru import logger

from pipeline.core.errors import StageError


class RankFailed(StageError):
    """A rank of a stage failed on the cluster; the message names the rank, the cause and the logs."""


def _run_rank(executor: RayPipelineExecutor, rank: int):
    import ray

    # local_rank 1: datatrove prints a rank's log to the console only for local rank 0; the log file is kept
    executor._run_for_rank(rank, local_rank=1)
    return rank, ray.get_runtime_context().get_node_id()


class RayRankTasks(RayPipelineExecutor):
    """datatrove's Ray executor with its scheduling loop replaced (see the module's docstring)."""

    def __init__(self, *args, pool: str = "tasks", memory_mib: int = 1024, max_retries: int = 3,
                 time_limit_s: float | None = None, poll_s: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.pool = pool  # the stage or pass these ranks are, as named in the recipe's task_memory_gb
        self.memory_mib = memory_mib  # per task, whatever its CPUs (pipeline/core/task_memory_requests.py)
        self.max_retries = max_retries
        self.time_limit_s = time_limit_s
        self.poll_s = poll_s

    def _check_memory_fits(self, nodes: list[dict]) -> None:
        """Ray leaves a task no node can hold pending for ever (an "infeasible" warning in its logs): fail now,
        naming the request, the largest node and the setting that changes the request."""
        largest = max((n["Resources"].get("memory", 0) for n in nodes if n.get("Alive")), default=0)
        if self.memory_mib * 2**20 > largest:
            raise RankFailed(
                f"{self.pool}: each task asks Ray for {self.memory_mib:,} MiB of memory, more than any node of the "
                f"cluster has ({largest / 2**20:,.0f} MiB on the largest); give the nodes more memory, or set "
                f"executor.ray.task_memory_gb.{self.pool} (or mem_per_cpu_gb) in the recipe")

    def run(self):
        import ray
        from ray.exceptions import RayTaskError, TaskCancelledError

        self._launched = True
        pending = deque(self.get_incomplete_ranks(range(self.world_size)))
        if not pending:
            logger.info(f"all {self.world_size} ranks were completed earlier; nothing to run")
            return
        self._check_memory_fits(ray.nodes())
        self.save_executor_as_json()
        executor_ref = ray.put(self)
        remote = ray.remote(_run_rank).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
            memory=self.memory_mib * 2**20,
            # Ray itself resubmits a rank whose worker process or node died
            max_retries=self.max_retries, retry_exceptions=False,
        )
        running: dict = {}  # object ref -> (rank, start time)
        cancelled: set = set()
        resubmits: dict[int, int] = {}
        failures: list[str] = []
        nodes: dict[int, str] = {}  # rank -> the node that completed it, written beside the ranks' logs
        while running or (pending and not failures):
            while pending and not failures and len(running) < self.workers:
                rank = pending.popleft()
                running[remote.remote(executor_ref, rank)] = (rank, time.monotonic())
            done, _ = ray.wait(list(running), num_returns=1, timeout=self.poll_s)
            for ref in done:
                rank, _ = running.pop(ref)
                try:
                    nodes[rank] = ray.get(ref)[1]
                except TaskCancelledError:
                    if ref not in cancelled:
                        failures.append(f"rank {rank} was cancelled from outside this run")
                        continue
                    cancelled.discard(ref)
                    if resubmits.get(rank, 0) >= self.max_retries:
                        failures.append(f"rank {rank} ran past its {self.time_limit_s} s limit {self.max_retries + 1} times")
                    else:
                        resubmits[rank] = resubmits.get(rank, 0) + 1
                        logger.warning(f"rank {rank} ran past {self.time_limit_s} s; resubmitted ({resubmits[rank]})")
                        pending.append(rank)
                except RayTaskError as e:  # the pipeline raised: not retried, the stage fails
                    failures.append(f"rank {rank}: {e.cause!r}")
                except Exception as e:  # a Ray-side loss that outlived max_retries
                    failures.append(f"rank {rank}: {type(e).__name__}: {e}")
            if self.time_limit_s is not None:
                now = time.monotonic()
                for ref, (rank, start) in running.items():
                    if ref not in cancelled and now - start > self.time_limit_s:
                        cancelled.add(ref)
                        ray.cancel(ref, force=True)  # kills the worker process; ray.get then raises TaskCancelledError
        with self.logging_dir.open("ray_nodes.json", "w") as f:  # where each rank ran (a resumed stage: this launch's)
            json.dump({str(r): n for r, n in sorted(nodes.items())}, f, indent=1)
        if failures:
            raise RankFailed("; ".join(failures) + f"; the ranks' logs are in {self.logging_dir.path}/logs")
