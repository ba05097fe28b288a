"""The arms of a pipeline ablation (``ablation.kind: pipeline``): each is the recipe with one patch merged in
(the way ``--patch`` merges one), run through the data stages in a run directory of its own.

- ``raw``: the reader and the sanity rule only (every other filter family off for every source), no
  deduplication, no decontamination: what the pipeline starts from.
- ``recipe``: the recipe as written; its data stages are the run's own (RUN_DIR), not run again.
- ``no-<family>``: one filter family off for every source (``ablation.leave_one_out``).
- the user's ``ablation.variants``: their patches (filter, dedup and decontam sections only).

A family is switched off in ``filter.per_source`` of every source, the layer that wins over the recipe's
per-domain and per-language settings and the built-in ones, so "off" means off whatever else enables it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from filters.config import RULE_ORDER
from pipeline.recipe import Recipe, apply_patch, parse_recipe

KEEP_IN_RAW = ("sanity",)  # bounds, binary and empty documents: what a reader alone would still refuse to train on


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str  # raw | recipe | leave_one_out | variant
    patch: dict


def families_off(recipe: Recipe, families) -> dict:
    return {"filter": {"per_source": {s.name: {f: {"enabled": False} for f in families} for s in recipe.sources}}}


def leave_one_out_problems(families: list[str]) -> list[str]:
    return [f"ablation.leave_one_out: {f!r} is not a filter family ({', '.join(RULE_ORDER)})"
            for f in families if f not in RULE_ORDER]


def ablation_arms(recipe: Recipe) -> list[Arm]:
    from mixtures.ablation.config import LEAVE_ONE_OUT_PREFIX

    cfg = recipe.ablation
    raw = families_off(recipe, [f for f in RULE_ORDER if f not in KEEP_IN_RAW])
    arms = [Arm("raw", "raw", raw | {"dedup": {"enabled": False}, "decontam": {"enabled": False}}), Arm("recipe", "recipe", {})]
    arms += [Arm(LEAVE_ONE_OUT_PREFIX + f, "leave_one_out", families_off(recipe, [f])) for f in cfg.leave_one_out]
    arms += [Arm(v.name, "variant", v.patch) for v in cfg.variants]
    return arms


def arm_recipe(recipe: Recipe, arm: Arm, run_dir: str) -> Recipe:
    """The arm's own recipe (no ablation section), its outputs under ``run_dir``; a patch that makes an invalid
    recipe fails naming the arm."""
    data = recipe.model_dump(mode="json")
    data.pop("ablation", None)
    data = apply_patch(data, arm.patch, f"ablation arm {arm.name!r}")
    data["run_dir"] = run_dir
    base = os.path.dirname(recipe._source) if recipe._source else None  # a patch's relative paths: from the recipe's folder
    return parse_recipe(data, f"ablation arm {arm.name!r} (the recipe with its patch)", base_dir=base, check_inputs=False)
