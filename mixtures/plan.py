"""Mixture planning: per curriculum stage, a weight and an epoch count per token prefix, and blend files.

Weights in the recipe name sources or domains; a domain's weight is shared by its sources in proportion
to their tokens, and a source named directly takes its own weight. Megatron samples sequences from prefix
i with probability w_i, so w_i is the fraction of the stage's tokens drawn from prefix i, and
``epochs_i = w_i * stage_tokens / tokens_i``. A plan that would repeat a prefix more than ``max_epochs``
times fails before anything is written.

Outputs per stage: ``<stage>.data_args.txt`` (the ``--data-path``/``--data-args-path`` argument of
Megatron-LM: ``w1 prefix1 w2 prefix2 ...``), ``<stage>.valid_data_args.txt`` (the held-out prefixes with
the same weights: ``--valid-data-path``) and ``<stage>.blend.json`` (both blends), read by ``train_entry``
through megatron-core's ``get_blend_from_list``.
"""

from __future__ import annotations

import json
import os

from pipeline.recipe import MixtureConfig, SourceConfig


class MixtureError(ValueError):
    pass


def source_weights(weights: dict[str, float], sources: list[SourceConfig], tokens: dict[str, int]) -> dict[str, float]:
    names = {s.name for s in sources}
    out: dict[str, float] = {}
    for s in sources:
        if s.name in weights:
            out[s.name] = weights[s.name]
    for key, w in weights.items():
        if key in names:
            continue
        members = [s.name for s in sources if s.domain == key and s.name not in weights]
        total = sum(tokens.get(m, 0) for m in members)
        for m in members:
            out[m] = out.get(m, 0.0) + (w * tokens.get(m, 0) / total if total else 0.0)
    return out


def plan_mixture(
    mixture: MixtureConfig,
    sources: list[SourceConfig],
    tokens: dict[str, int],
    prefixes: dict[str, str],
    heldout_prefixes: dict[str, str] | None = None,
) -> dict:
    """The plan of every curriculum stage; held-out prefixes get the same weights (renormalised) for eval."""
    heldout_prefixes = heldout_prefixes or {}
    stages, notes = [], []
    for st in mixture.stages:
        raw = source_weights(st.weights, sources, tokens)
        empty = sorted(n for n, w in raw.items() if w > 0 and tokens.get(n, 0) == 0)
        if empty:
            notes.append(f"stage {st.name!r}: source(s) {empty} have no tokens left and are left out")
        usable = {n: w for n, w in raw.items() if w > 0 and tokens.get(n, 0) > 0}
        if not usable:
            raise MixtureError(f"mixture stage {st.name!r}: no weighted source has any tokens (weights {st.weights})")
        total_w = sum(usable.values())
        rows = []
        for s in sources:  # recipe order: deterministic blend files
            if s.name not in usable:
                continue
            w = usable[s.name] / total_w
            epochs = w * st.tokens / tokens[s.name]
            if epochs > mixture.max_epochs:
                raise MixtureError(
                    f"mixture stage {st.name!r}: source {s.name!r} would be repeated {epochs:.2f} times "
                    f"(weight {w:.4f} of {st.tokens:,} tokens, {tokens[s.name]:,} available) > max_epochs "
                    f"{mixture.max_epochs}; lower the stage's tokens or this weight, or add data"
                )
            rows.append({"source": s.name, "prefix": prefixes[s.name], "weight": round(w, 10),
                         "tokens_available": tokens[s.name], "tokens_planned": round(w * st.tokens), "epochs": round(epochs, 6)})
        valid = [(heldout_prefixes[r["source"]], r["weight"]) for r in rows if r["source"] in heldout_prefixes]
        norm = sum(w for _, w in valid)
        stages.append({
            "name": st.name,
            "tokens": st.tokens,
            "prefixes": rows,
            "valid": [{"prefix": p, "weight": round(w / norm, 10)} for p, w in valid],
        })
    return {"stages": stages, "max_epochs": mixture.max_epochs, "notes": notes}


def data_args(rows: list[dict]) -> str:
    return " ".join(f"{r['weight']!r} {r['prefix']}" for r in rows)


def write_plan(plan: dict, folder: str) -> dict[str, dict[str, str | None]]:
    """Write plan.json plus the blend files of every stage; returns {stage: {train, valid: data-args path}}."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for st in plan["stages"]:
        train_path = os.path.join(folder, f"{st['name']}.data_args.txt")
        with open(train_path, "w") as f:
            f.write(data_args(st["prefixes"]) + "\n")
        valid_path = None
        if st["valid"]:
            valid_path = os.path.join(folder, f"{st['name']}.valid_data_args.txt")
            with open(valid_path, "w") as f:
                f.write(data_args(st["valid"]) + "\n")
        blend = {
            "name": st["name"],
            "tokens": st["tokens"],
            "train": {"data_args_path": train_path, "prefixes": [r["prefix"] for r in st["prefixes"]],
                      "weights": [r["weight"] for r in st["prefixes"]]},
            "valid": {"data_args_path": valid_path, "prefixes": [r["prefix"] for r in st["valid"]],
                      "weights": [r["weight"] for r in st["valid"]]},
        }
        with open(os.path.join(folder, f"{st['name']}.blend.json"), "w") as f:
            json.dump(blend, f, indent=2)
        paths[st["name"]] = {"train": train_path, "valid": valid_path}
    with open(os.path.join(folder, "plan.json"), "w") as f:
        json.dump(plan, f, indent=2)
    return paths


def read_blend(data_args_path: str) -> tuple[list[str], list[float]]:
    """A data-args file as (prefixes, weights), parsed by megatron-core itself."""
    from megatron.core.datasets.utils import get_blend_from_list

    with open(data_args_path) as f:
        prefixes, weights = get_blend_from_list(f.read().split())
    return prefixes, weights
