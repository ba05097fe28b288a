"""Proxy runs: one mixture at one seed, trained by the project's own familial trainer on the run's own
token prefixes, in a worker process (a local process pool) or as a Ray task. The trainer is handed in by
the composition above (``pipeline/ablate.py``: ``train(spec) -> result``), so this package stays a stage
package that knows runs, results and scheduling, not the model.

A run is described by a JSON-able spec and writes ``result.json`` (atomically) when it ends; a finished run
whose spec is unchanged is not trained again, so an interrupted ablation resumes with what is missing, and
Ray resubmits a run whose worker or node was lost. Worker processes are reused across runs: torch and
megatron-core are imported once per worker, not once per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

# datatrove resets loguru's handlers when its logging module is first imported; a worker imports it here,
# before run_proxy adds the run's own log file, or that handler would vanish mid-run
import datatrove.utils.logging  # noqa: F401
from loguru import logger

from pipeline.core.atomic import write_json, write_text
from pipeline.core.progress import duration, time_left

RESULT = "result.json"


def proxy_spec(run_id: str, out_dir: str, train_blend: list[dict], valid_blend: list[dict], train: dict, seed: int,
               **fields) -> dict:
    """The spec of one proxy run, with its blends written beside it (Megatron data-args files): the run's
    training prefixes and weights (the planner's rows), and the held-out prefixes its validation loss reads.
    Shared by every kind of ablation; ``fields`` are the kind's own (mixture, weights, arm, eval sets, ...)."""
    from mixtures.plan import data_args

    os.makedirs(out_dir, exist_ok=True)
    train_path = os.path.join(out_dir, "data_args.txt")
    write_text(train_path, data_args(train_blend) + "\n")
    valid_path = os.path.join(out_dir, "valid_data_args.txt")
    write_text(valid_path, data_args(valid_blend) + "\n")
    return {"run_id": run_id, "seed": seed, "out_dir": out_dir, "stage": "proxy", "data_args": train_path,
            "valid_data_args": valid_path, "train": train | {"seed": seed, "tensorboard": False, "save_interval": 0},
            **fields}


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def finished(spec: dict) -> dict | None:
    """The result of a run that ended with this very spec, or None."""
    path = os.path.join(spec["out_dir"], RESULT)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
    return result if result.get("spec_hash") == spec_hash(spec) else None


def run_proxy(spec: dict, train) -> dict:
    """One proxy (``train(spec)`` returns its measurements); writes result.json. Runs in a worker process or
    a Ray worker."""
    done = finished(spec)
    if done is not None:
        return done
    out = spec["out_dir"]
    train_dir = os.path.join(out, "train")
    shutil.rmtree(train_dir, ignore_errors=True)  # a run cut off earlier starts again from its beginning
    os.makedirs(train_dir)
    sink = logger.add(os.path.join(out, "train.log"), level="INFO")  # the trainer's lines, per run
    t0 = time.perf_counter()
    try:
        measured = train(spec | {"train_dir": train_dir})
    except Exception:
        logger.exception(f"proxy run {spec['run_id']} failed")  # the stack, into this run's train.log
        raise
    finally:
        logger.remove(sink)
    result = {"run_id": spec["run_id"], "spec_hash": spec_hash(spec), **measured,
              "seconds": round(time.perf_counter() - t0, 3)}
    if not spec.get("keep_checkpoint"):
        shutil.rmtree(os.path.join(train_dir, "checkpoint"), ignore_errors=True)
    shutil.rmtree(os.path.join(train_dir, "dataset_cache"), ignore_errors=True)
    write_json(os.path.join(out, RESULT), result, indent=1)  # a result file is whole or absent
    return result


def _quiet_worker() -> None:
    import sys

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def run_all(specs: list[dict], train, executor_cfg, workers: int, what: str) -> dict[str, dict]:
    """Every spec's result (finished ones read back, the others trained), by run id; progress is logged
    with an estimate of the time left."""
    results = {s["run_id"]: r for s in specs if (r := finished(s)) is not None}
    todo = [s for s in specs if s["run_id"] not in results]
    if results:
        logger.info(f"ablate: {what}: {len(results)} of {len(specs)} run(s) finished earlier, kept")
    if not todo:
        return results
    logger.info(f"ablate: {what}: {len(todo)} proxy run(s) on the {executor_cfg.kind} executor")
    t0 = time.perf_counter()

    def progress(result: dict, n: int) -> None:
        elapsed = time.perf_counter() - t0
        logger.info(f"ablate: {what}: {n}/{len(todo)} done ({result['run_id']}, {result['seconds']:.1f} s); "
                    f"{duration(elapsed)} so far, about {time_left(elapsed, n, len(todo))} left")

    if executor_cfg.kind == "ray":
        results |= _on_ray(todo, train, executor_cfg.ray, progress)
        return results
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=get_context("spawn"),
                             initializer=_quiet_worker) as pool:
        futures = {pool.submit(run_proxy, s, train): s for s in todo}
        for n, fut in enumerate(as_completed(futures), 1):
            result = fut.result()  # a failed run fails the ablation, naming the run's log
            results[result["run_id"]] = result
            progress(result, n)
    return results


def _on_ray(todo: list[dict], train, ray_cfg, progress) -> dict[str, dict]:
    import ray

    from pipeline.core.executors import ensure_ray

    ensure_ray(ray_cfg)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    remote = ray.remote(run_proxy).options(num_cpus=ray_cfg.cpus_per_task, num_gpus=gpus, max_retries=ray_cfg.max_retries,
                                           retry_exceptions=False)
    pending = {remote.remote(s, train): s for s in todo}
    out = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        spec = pending.pop(ready[0])
        result = ray.get(ready[0])
        out[spec["run_id"]] = result
        progress(result, len(out))
    return out
