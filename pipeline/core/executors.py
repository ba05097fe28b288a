"""Running a list of datatrove steps with the executor the recipe chose (local processes or a Ray cluster).

Steps never know which executor runs them; the same pipeline gives the same shards either way, because
files are dealt to ranks by rank number and every stage's task count is fixed by the recipe.
"""

from __future__ import annotations

import json
import os

from loguru import logger

from pipeline.core.config import ExecutorConfig, RayConfig
from pipeline.core.errors import StageError
from pipeline.core.progress import StageProgress
from pipeline.core.ray_executor import RankFailed
from pipeline.core.task_memory import TaskMemory
from pipeline.core.task_memory_requests import task_memory_mib


class StageFailed(StageError):
    """A task of a stage did not complete; its log is named."""


def _preload_forkserver(steps: list) -> None:
    """datatrove's local workers come from a forkserver: each pool's workers would otherwise import the steps'
    modules (datatrove, numpy, pyarrow, the stage package) afresh, seconds per pool, which made a stage of
    several small pools slower on two workers than on one. The forkserver imports them once (stdlib
    ``set_forkserver_preload``; it takes effect when the forkserver starts, i.e. at the first pool of the
    process, so the first call's modules are the ones preloaded)."""
    import multiprocess

    modules = sorted({type(s).__module__ for s in steps} | {"datatrove.executor.local", "numpy", "pyarrow.parquet"})
    multiprocess.get_context("forkserver").set_forkserver_preload(modules)


def token_auth_enabled() -> bool:
    """Whether this process talks to Ray with token authentication (Ray >= 2.59; ``RAY_AUTH_MODE``)."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    return is_token_auth_enabled()


UNAUTHENTICATED = ("the Ray cluster {where} runs WITHOUT token authentication: anyone who can reach its ports can run "
                   "code on it and read the corpus. Start it with token auth (`ray get-auth-token --generate`, "
                   "RAY_AUTH_MODE=token on every node and client; README 'Executors')")


def ensure_ray(cfg: RayConfig) -> None:
    """Connect to the configured cluster, or start a local one, once per process; warn loudly when the
    connection is not authenticated."""
    import ray

    if ray.is_initialized():
        return
    if cfg.address:
        logger.info(f"connecting to Ray cluster at {cfg.address}")
        ray.init(address=cfg.address, log_to_driver=False)
    else:
        logger.info("starting a local Ray cluster")
        # "local": a new cluster of this process's, never one that happens to run on the machine already
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=False)
    if not token_auth_enabled():
        logger.warning(UNAUTHENTICATED.format(where=f"at {cfg.address}" if cfg.address else "started here"))


def run_steps(
    cfg: ExecutorConfig,
    steps: list,
    logging_dir: str,
    tasks: int,
    name: str,
    workers: int | None = None,
) -> dict:
    """Run ``steps`` as ``tasks`` ranks; raise if any rank did not complete. Returns datatrove's merged stats."""
    workers = max(1, min(workers or cfg.workers, tasks))
    steps = [*steps, TaskMemory()]  # each task's peak RSS into its stats
    if cfg.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        if workers > 1:
            _preload_forkserver(steps)

        executor = LocalPipelineExecutor(pipeline=steps, tasks=tasks, workers=workers, logging_dir=logging_dir)
    else:
        from pipeline.core.ray_executor import RayRankTasks

        ensure_ray(cfg.ray)
        executor = RayRankTasks(
            pipeline=steps,
            tasks=tasks,
            workers=workers,
            logging_dir=logging_dir,
            cpus_per_task=cfg.ray.cpus_per_task,
            pool=name,
            memory_mib=task_memory_mib(name, cfg.ray.task_memory_gb, cfg.ray.mem_per_cpu_gb, cfg.ray.cpus_per_task),
            max_retries=cfg.ray.max_retries,
            time_limit_s=cfg.ray.task_time_limit_s,
        )
    logger.info(f"{name}: {tasks} task(s) on the {cfg.kind} executor, {workers} at a time")
    try:
        with StageProgress(name, logging_dir, tasks, cfg.progress_interval_s):
            executor.run()
    except RankFailed as e:  # only the cluster's rank failures; a step's own errors pass through as they are
        raise StageFailed(f"{name}: {e}") from e
    incomplete = executor.get_incomplete_ranks(range(tasks), skip_completed=True)
    if incomplete:
        raise StageFailed(f"{name}: task(s) {incomplete} did not complete; their logs are in {logging_dir}/logs")
    return read_step_stats(logging_dir)


STEP_SECONDS = "step_seconds"


def step_stats(stats: dict[str, dict[str, float]], step_name: str) -> dict[str, float]:
    """The stats of the step called ``step_name`` (datatrove keys blocks as "<type>: <name>")."""
    for key, values in stats.items():
        if key == step_name or key.endswith(f": {step_name}"):
            return values
    return {}


def read_step_stats(logging_dir: str) -> dict[str, dict[str, float]]:
    """datatrove's per-rank ``stats/<rank>.json`` summed as {step name: {stat: total}}.

    The per-rank files are read rather than ``stats.json``, which holds only the ranks run by the last
    launch (a resumed stage skips completed ranks).
    """
    stats_dir = os.path.join(logging_dir, "stats")
    out: dict[str, dict[str, float]] = {}
    for rank_file in sorted(os.listdir(stats_dir)):
        with open(os.path.join(stats_dir, rank_file)) as f:
            for step in json.load(f):
                agg = out.setdefault(step["name"], {})
                for key, val in step["stats"].items():
                    agg[key] = agg.get(key, 0) + (val["total"] if isinstance(val, dict) else val)
                # the step's own time (datatrove's track_time), summed over ranks
                agg[STEP_SECONDS] = agg.get(STEP_SECONDS, 0) + (step.get("time_stats") or {}).get("total", 0)
    return out
