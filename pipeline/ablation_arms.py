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
from filters.tagger import produced_metadata
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
    recipe fails naming the arm. See ``fit_to_arm`` for what an arm without a score changes."""
    return fit_to_arm(recipe, arm, run_dir)[0]


def fit_to_arm(recipe: Recipe, arm: Arm, run_dir: str) -> tuple[Recipe, list[str]]:
    """The arm's recipe, and what was changed beyond its patch. An arm that switches off the family writing a
    score the recipe reads by name (the classifier's quality_score: quality buckets, the dedup keeper) cannot
    have those: its quality buckets are dropped (a curriculum weight on a bucket goes to the bucket's source)
    and the dedup keeper loses its quality criterion. The ablation draws every arm's tokens by source, so this
    changes how the arm's corpus is split, not what it is compared on."""
    data = recipe.model_dump(mode="json")
    data.pop("ablation", None)
    data = apply_patch(data, arm.patch, f"ablation arm {arm.name!r}")
    data["run_dir"] = run_dir
    base = os.path.dirname(recipe._source) if recipe._source else None  # a patch's relative paths: from the recipe's folder
    where = f"ablation arm {arm.name!r} (the recipe with its patch)"
    mixture, quality_key = data.pop("mixture", None), data["dedup"].get("quality_key")
    data["dedup"]["quality_key"] = None
    bare = parse_recipe(data, where, base_dir=base, check_inputs=False)  # the filter as the arm runs it
    written = {s.name: produced_metadata(bare.filter.rules_for(s)) | set(s.metadata_fields) for s in bare.sources}
    notes = []
    if quality_key and any(quality_key in keys for keys in written.values()):
        data["dedup"]["quality_key"] = quality_key
    elif quality_key:
        notes.append(f"dedup.quality_key {quality_key!r} unset: no source writes it")
    if mixture:
        for key, spec in list(mixture.get("buckets", {}).items()):
            users = [s for s in bare.sources if s.name == key or (s.domain == key and s.name not in mixture["buckets"])]
            if any(spec["score"] not in written[s.name] for s in users):
                del mixture["buckets"][key]
                notes.append(f"mixture.buckets.{key} dropped: {spec['score']!r} is not written")
                units = {f"{s.name}.{b}": s.name for s in users for b in spec["names"]}
                for st in mixture["stages"]:
                    moved: dict[str, float] = {}
                    for unit, w in st["weights"].items():
                        target = units.get(unit, unit)
                        moved[target] = moved.get(target, 0.0) + w
                    st["weights"] = moved
        data["mixture"] = mixture
    return parse_recipe(data, where, base_dir=base, check_inputs=False), notes
