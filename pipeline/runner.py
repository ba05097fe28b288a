"""Runs stages of a recipe in order, with a manifest, per-stage summaries and the final report."""

from __future__ import annotations

import contextlib
import os
import time

from loguru import logger

from pipeline.core.errors import storage_named
from pipeline.core.layout import RunDirError, RunLayout, check_run_dir, claim_run_dir
from pipeline.core.run_lock import run_lock
from pipeline.core.stage import StageContext
from pipeline.manifest import write_manifest
from pipeline.recipe import Recipe, RecipeError, dump_recipe, resume_problems
from pipeline.registry import STAGE_NAMES, stage
from pipeline.report import build_report, print_report, print_stage


def check_runnable(recipe: Recipe, stages: list[str]) -> None:
    """Before any work: every requested stage exists and has the recipe sections it needs."""
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGE_NAMES)}")
    problems = []
    for name in stages:
        section = stage(name).section
        if section and getattr(recipe, section) is None:
            problems.append(f"stage {name!r} needs the recipe's {section!r} section, which is missing "
                            f"(a run that stops before {name!r} needs none: `ruyi2 run RECIPE --to <stage>`)")
        else:
            problems += [f"stage {name!r}: {p}" for p in stage(name).preflight(recipe)]
    if problems:
        raise RecipeError("\n".join(problems))


def check_start(recipe: Recipe, stages: list[str], layout: RunLayout, resume: bool, restart: bool) -> None:
    """Before any work, in the run directory: no stage would delete kept work (checkpoints) unasked, and a
    resumed run's recipe is the one its finished tasks were made with."""
    if resume and restart:
        raise RunDirError("--resume and --restart: choose one (continue the work, or delete it and start over)")
    problems = [p for name in stages for p in stage(name).start_problems(recipe, layout, resume, restart)]
    if resume:
        problems += resume_problems(recipe, os.path.join(layout.root, "recipe.yaml"))
    if problems:
        raise RunDirError("\n".join(problems))


def run_stages(recipe: Recipe, stages: list[str], resume: bool = False, quiet: bool = False, retune: bool = False,
               options: dict | None = None, restart: bool = False) -> dict[str, dict]:
    """``options`` go to every stage's context (an increment's ``layers``). ``restart`` lets a stage empty a
    folder holding kept work (checkpoints), which is refused otherwise unless the run resumes it."""
    if not recipe.train.enabled:
        stages = [s for s in stages if s != "train"]
    check_runnable(recipe, stages)
    layout = RunLayout(recipe.run_dir)
    # under torchrun every rank runs this; only rank 0 writes the run's files and prints
    rank0 = int(os.environ.get("RANK", "0")) == 0
    quiet = quiet or not rank0
    with contextlib.ExitStack() as held:
        # the job's rank 0 holds the run directory (under torchrun the other ranks are the same run)
        if rank0:
            with storage_named("run_dir", layout.root):
                check_run_dir(layout.root)  # a folder that is not ruyi2's is refused before anything is written there
                held.enter_context(run_lock(layout.root))
                claim_run_dir(layout.root)
        check_start(recipe, stages, layout, resume, restart)
        return _run(recipe, stages, layout, rank0, resume, quiet, retune, options or {})


def _run(recipe: Recipe, stages: list[str], layout: RunLayout, rank0: bool, resume: bool, quiet: bool, retune: bool,
         shared: dict) -> dict:
    if rank0:
        with storage_named("run_dir", layout.root):
            dump_recipe(recipe, os.path.join(layout.root, "recipe.yaml"))
            write_manifest(recipe, os.path.join(layout.root, "manifest.json"), stages)
    results = {}
    for name in stages:
        t0 = time.perf_counter()
        logger.info(f"=== stage {name} ===")
        options = shared | ({"retune": retune} if name == "filter" and retune else {})
        with storage_named(f"stage {name}", layout.root):
            results[name] = stage(name).run(StageContext(recipe, layout, resume, options))
        logger.info(f"=== stage {name} done in {time.perf_counter() - t0:.1f}s ===")
        if not quiet:
            print_stage(name, results[name])
    if rank0:
        report = build_report(layout)
        if not quiet and len(stages) > 1:
            print_report(report)
    return results
