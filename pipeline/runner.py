"""Runs stages of a recipe in order, with a manifest, per-stage summaries and the final report."""

from __future__ import annotations

import os
import time

from loguru import logger

from pipeline.layout import STAGES, RunLayout
from pipeline.manifest import write_manifest
from pipeline.recipe import Recipe, dump_recipe
from pipeline.report import build_report, print_report, print_stage
from pipeline.stages import STAGE_FUNCS


def run_stages(recipe: Recipe, stages: list[str], resume: bool = False, quiet: bool = False, retune: bool = False) -> dict[str, dict]:
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    if not recipe.train.enabled and "train" in stages:
        stages = [s for s in stages if s != "train"]
    layout = RunLayout(recipe.run_dir)
    # under torchrun every rank runs this; only rank 0 writes the run's files and prints
    rank0 = int(os.environ.get("RANK", "0")) == 0
    quiet = quiet or not rank0
    os.makedirs(layout.root, exist_ok=True)
    if rank0:
        dump_recipe(recipe, os.path.join(layout.root, "recipe.yaml"))
        write_manifest(recipe, os.path.join(layout.root, "manifest.json"), stages)
    results = {}
    for stage in stages:
        t0 = time.perf_counter()
        logger.info(f"=== stage {stage} ===")
        extra = {"retune": retune} if stage == "filter" and retune else {}
        results[stage] = STAGE_FUNCS[stage](recipe, layout, resume=resume, **extra)
        logger.info(f"=== stage {stage} done in {time.perf_counter() - t0:.1f}s ===")
        if not quiet:
            print_stage(stage, results[stage])
    if rank0:
        report = build_report(layout)
        if not quiet and len(stages) > 1:
            print_report(report)
    return results
