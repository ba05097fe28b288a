"""What an ablation leaves under ``RUN_DIR/ablate/``: the results table of every run (Parquet and CSV),
the fits (JSON), the proposal as a recipe patch and as a whole recipe, a summary, and the HTML report.
Wall-clock times go to ``timing.json`` only, so every other file is identical when the ablation is rerun."""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import yaml

from mixtures.ablation.candidates import Mixture
from pipeline.core.atomic import atomic_open, write_json, write_yaml


def results_table(ab, specs: list[dict], results: dict, exits: list[str], fit_ids: set[str]) -> pl.DataFrame:
    rows, seen = [], set()
    for s in specs:
        if s["run_id"] in seen:
            continue
        seen.add(s["run_id"])
        r = results[s["run_id"]]
        row = {"run_id": s["run_id"], "mixture": s["mixture"], "kind": s["kind"], "seed": s["seed"],
               "in_fit": s["run_id"] in fit_ids}
        row |= {f"w_{c}": s["weights"][c] for c in ab.names}
        row |= {f"target_{e}": ab.outcome(r, e) for e in exits}
        row |= {f"loss_{label}_{e}": r["eval"][label][e] for label in sorted(r["eval"]) for e in exits}
        if r.get("benchmark"):
            row |= {f"benchmark_{e}": r["benchmark"][e] for e in exits}
        row |= {"tokens": r["tokens"], "flops": r["flops"]}
        rows.append(row)
    return pl.DataFrame(rows)


def _patch(ab, plan: dict) -> dict:
    """The proposal as the ablated stage's weights, per token prefix (exactly what the planner reproduces)."""
    return {"mixture": {"stages": [{"name": ab.stage.name, "weights": {r["unit"]: r["weight"] for r in plan["prefixes"]}}]}}


def write_outputs(ab, fit_set: list[Mixture], specs: list[dict], results: dict, fits: dict, summary: dict,
                  exits: list[str], target_flops: float) -> dict:
    from mixtures.ablation.report_html import write_report

    root = ab.root
    fit_ids = {f"{m.name}-s{ab.recipe.train.seed}" for m in fit_set}
    table = results_table(ab, specs, results, exits, fit_ids)
    with atomic_open(os.path.join(root, "results.parquet"), "wb") as f:
        table.write_parquet(f)
    with atomic_open(os.path.join(root, "results.csv")) as f:
        table.write_csv(f)
    fits_json = {e: {k: v for k, v in f.items() if k != "model"} for e, f in fits.items()}
    write_json(os.path.join(root, "fits.json"), {"categories": ab.names, "exits": fits_json}, indent=1)
    patch = _patch(ab, summary["plan"])
    with atomic_open(os.path.join(root, "proposal.patch.yaml")) as f:
        f.write(f"# ruyi2 ablate: proposed weights of stage {ab.stage.name!r}; use with `ruyi2 mix RECIPE --patch THIS_FILE`\n")
        yaml.safe_dump(patch, f, sort_keys=False)
    recipe = ab.recipe.model_dump(mode="json")
    for st in recipe["mixture"]["stages"]:
        if st["name"] == ab.stage.name:
            st["weights"] = patch["mixture"]["stages"][0]["weights"]
    write_yaml(os.path.join(root, "proposal.recipe.yaml"), recipe, sort_keys=False, allow_unicode=True)
    flops = sum(results[r]["flops"] for r in table["run_id"])
    target_tokens = sum(st.tokens for st in ab.recipe.mixture.stages)
    summary["compute"] = {"runs": table.height, "proxy_tokens": int(table["tokens"].sum()), "proxy_flops": flops,
                          "target_tokens": target_tokens, "target_flops": target_flops, "fraction_of_target": flops / target_flops,
                          "proxy_parameters": results[table["run_id"][0]]["parameters"]}
    summary["fit_quality"] = {e: {m: {"spearman": v["cv"]["spearman"], "r2": v["cv"]["r2"]} for m, v in f["joint"].items()}
                              | {"chosen": f["chosen"]} for e, f in fits_json.items()}
    summary["categories"] = ab.names
    summary["stage"] = ab.stage.name
    summary["target_weights"] = ab.target_weights
    summary["target"] = ab.target_name
    write_json(os.path.join(root, "summary.json"), summary, indent=1)
    write_json(os.path.join(root, "timing.json"), {r: results[r]["seconds"] for r in table["run_id"]}, indent=1)
    write_report(ab, table, fits_json, summary, results, exits, os.path.join(root, "report.html"))
    return summary | {"folder": root}


def interval(stat: dict) -> str:
    return f"{stat['mean']:.4f} ± {stat['ci95']:.4f}" if stat.get("ci95") is not None else f"{stat['mean']:.4f}"


def fmt(v, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"
