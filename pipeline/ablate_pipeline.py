"""``ruyi2 ablate`` with ``ablation.kind: pipeline``: recipe variants judged by the proxies their corpora train
(DCLM's fixed-recipe comparison; FineWeb chose its filters this way).

1. Arms (``pipeline/ablation_arms.py``): raw, recipe, leave-one-family-out, the user's variants. Each arm's data
   stages (filter through tokenize) run once, in ``RUN_DIR/ablate/arms/<arm>/`` (the recipe arm is the run's
   own directory), and are reused by all its seeds; a resumed ablation resumes them.
2. Equal tokens: every arm trains the same proxy (``train`` + ``ablation.proxy``) for the same number of tokens,
   drawn from its own tokenized corpus by the ablated curriculum stage's weights (summed per source on the
   recipe's units: how a source splits into quality buckets is each arm's own) through the planner, repeats
   allowed up to ``mixture.max_epochs``; an arm whose corpus cannot supply them within that cap is reported as
   infeasible (a strict filter costs unique tokens: that is part of the answer). The epochs it needed are kept.
3. Every arm is scored on the same text: the recipe arm's held-out prefixes (held-out documents are chosen by a
   hash of their id, so a document held out of the recipe's corpus is held out of every arm that keeps it).
4. Per exit: mean ± 95% CI of the target over seeds, and each arm's paired difference (same seed) from
   ``recipe`` and from ``raw``, with a verdict.
5. Outputs under ``RUN_DIR/ablate/``: summary.json, results.csv (one row per run and exit), best.patch.yaml (the
   best arm's patch, for ``--patch``), report.html (``ablate_pipeline_report.py``), timing.json (the arms' data stages and the proxies, wall seconds).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import polars as pl
import yaml
from loguru import logger

from mixtures.ablation.ablate import FOLDER, AblationError, mean_ci, paired_difference, target_weights
from mixtures.ablation.proxy_runs import proxy_spec, run_all
from mixtures.config import MixtureStage
from mixtures.plan import MixtureError, plan_mixture, unit_weights, units_from_tokenize
from pipeline.ablation_arms import Arm, ablation_arms, fit_to_arm
from pipeline.core.accounting import read_stats
from pipeline.core.atomic import write_json, write_text
from pipeline.core.layout import RunLayout, claim_run_dir

ARMS = "arms"
DATA_STAGES = ["filter", "dedup", "decontam", "tokenize"]
COST = "cost.json"


def run_arm_stages(arm_cfg, arm: Arm, root: str, recipe_layout: RunLayout) -> tuple[RunLayout, bool]:
    """The arm's data stages (resumed where an earlier ablation left them, run again if the arm's recipe changed
    since), and whether its filter re-applied thresholds to the recipe's stored signals: an arm whose filter
    differs from the recipe's only in thresholds and in families whose switch is not a tag-time setting tags
    nothing again (Dolma's tag once, filter many),
    the recipe's ``filter/attributes`` linked into the arm's filter folder and read by the retune path, which
    gives what tagging again would. Their wall time is recorded beside them when they complete (their CPU time
    is not: the local executor's workers are children of a fork server, whose usage never reaches this process,
    and Ray's run elsewhere)."""
    from filters.stage import retune_problem
    from pipeline.runner import run_stages

    run_dir = os.path.join(root, ARMS, arm.name)
    cost_path = os.path.join(run_dir, COST)
    attributes = os.path.join(recipe_layout.stage("filter"), "attributes")
    if os.path.exists(cost_path):
        done = read_stats(cost_path)
        if done.get("recipe") == _data_fingerprint(arm_cfg):
            return RunLayout(run_dir), done["signals_reused"]
        # the arm's patch (or the recipe under it) changed since its stages ran: they are stale, and the folder is
        # the ablation's own (RUN_DIR/ablate/arms/<arm>)
        logger.info(f"ablate: arm {arm.name}: its recipe changed since its data stages ran; running them again")
        shutil.rmtree(run_dir)
    reuse = retune_problem(attributes, arm_cfg) is None
    claim_run_dir(run_dir)  # a run directory of ruyi2's, before anything is written there
    t0 = time.perf_counter()
    resume = os.path.exists(os.path.join(run_dir, "recipe.yaml"))
    logger.info(f"ablate: arm {arm.name}: data stages in {run_dir}"
                + (" (filter thresholds re-applied to the recipe's stored signals)" if reuse else ""))
    if reuse:
        link = os.path.join(run_dir, "filter", "attributes")
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.islink(link):
            os.symlink(attributes, link)
        run_stages(arm_cfg, DATA_STAGES[:1], retune=True, quiet=True)
        run_stages(arm_cfg, DATA_STAGES[1:], resume=resume, quiet=True)
    else:
        run_stages(arm_cfg, DATA_STAGES, resume=resume, quiet=True)
    # written last: the arm's stages are complete
    write_json(cost_path, {"data_stages_wall_s": round(time.perf_counter() - t0, 3), "signals_reused": reuse,
                           "recipe": _data_fingerprint(arm_cfg)}, indent=1)
    return RunLayout(run_dir), reuse


def _data_fingerprint(arm_cfg) -> str:
    """What the arm's data depends on: its recipe but the executor (local and Ray write the same outputs)."""
    from pipeline.core.config import ExecutorConfig

    return arm_cfg.model_copy(update={"executor": ExecutorConfig()}).fingerprint()


def _funnel(layout: RunLayout) -> dict:
    """Documents and tokens each data stage kept, and the tokens tokenize wrote (training part), in all and per
    source."""
    out, per_source = {}, {}
    for stage in DATA_STAGES[:-1]:
        stats = read_stats(layout.stats(stage))
        out[stage] = {"docs": stats["totals"]["kept"]["docs"], "tokens": stats["totals"]["kept"]["tokens"]}
        for src, c in stats["sources"].items():
            per_source.setdefault(src, {})[stage] = {"docs": c["kept"]["docs"], "tokens": c["kept"]["tokens"]}
    tok = read_stats(layout.stats("tokenize"))["sources"]
    out["tokenize"] = {"tokens": sum(c["tokens"] for c in tok.values())}
    for src, c in tok.items():
        per_source.setdefault(src, {})["tokenize"] = {"tokens": c["tokens"]}
    return out | {"sources": per_source}


def _stats_digest(layout: RunLayout) -> str:
    return file_digest(layout.stats("tokenize"))


def file_digest(path: str) -> str:
    """A file's bytes in short: a proxy whose data or evaluation text changed has another spec, so it retrains."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def scoring_sets(recipe, layout: RunLayout, root: str) -> tuple[dict[str, float], list[str], dict[str, str], str]:
    """(label -> weight in the target, sources the target cannot score, label -> token prefix, what the prefixes
    hold): the user's evaluation sets ("eval/<name>", weighed by name in target.weights), or by default the
    recipe's held-out prefixes ("<domain>/<source>")."""
    from pipeline.ablation_eval_sets import FOLDER as EVAL_SETS
    from pipeline.ablation_eval_sets import eval_set_prefixes

    cfg = recipe.ablation
    if cfg.eval_sets:
        prefixes = eval_set_prefixes(recipe, root)
        given = cfg.target.weights or dict.fromkeys(prefixes, 1.0)
        total = sum(given.values())
        return ({f"eval/{n}": given.get(n, 0.0) / total for n in prefixes}, [],
                {f"eval/{n}": p for n, p in prefixes.items()}, file_digest(os.path.join(root, EVAL_SETS, "stats.json")))
    tok = read_stats(layout.stats("tokenize"))["sources"]
    heldout = {s.name: tok[s.name]["heldout_prefix"] for s in recipe.sources if tok[s.name]["heldout_prefix"]}
    weights, unscored = target_weights(recipe.sources, heldout, cfg.target.weights)
    return (weights, unscored, {f"{s.domain}/{s.name}": heldout[s.name] for s in recipe.sources if s.name in heldout},
            _stats_digest(layout))


def run_pipeline_ablation(recipe, layout: RunLayout, proxy_train: dict, train, resume: bool = False,
                          restart: bool = False) -> dict:
    cfg = recipe.ablation
    if resume and restart:
        raise AblationError("--resume and --restart: choose one (keep the finished arms and proxy runs, or delete them)")
    if not os.path.exists(layout.stats("tokenize")):
        raise AblationError(f"the recipe arm is the run's own data: {layout.stats('tokenize')} is missing; run "
                            f"`ruyi2 run RECIPE --to tokenize` first")
    keeps = {"runs": "proxy runs of an earlier ablation", ARMS: "data stages of an earlier ablation's arms"}
    if not (resume or restart) and (held := layout.kept_work(FOLDER, keeps)):
        raise AblationError(f"ablate starts from an empty folder, which would delete {held[0]}: rerun with --resume to keep "
                            "the finished work, or with --restart to delete it all")
    root = layout.fresh_stage(FOLDER, resume)
    names = [st.name for st in recipe.mixture.stages]
    stage = recipe.mixture.stages[names.index(cfg.stage) if cfg.stage else 0]
    gbs = proxy_train["global_batch_size"] or proxy_train["micro_batch_size"]
    proxy_tokens = proxy_train["steps"] * gbs * proxy_train["seq_length"]
    weights, unscored, eval_sets, scored_on = scoring_sets(recipe, layout, root)
    valid = [{"prefix": eval_sets[label], "weight": w} for label, w in weights.items() if w > 0]
    seeds = [recipe.train.seed + i for i in range(cfg.validation.seeds)]

    # the stage's weights resolved on the recipe's own units and summed per source: every arm draws each source's
    # share of the proxy's tokens; how a source splits into quality buckets is the arm's (an arm without the
    # classifier has no quality buckets to draw from)
    recipe_units = units_from_tokenize(recipe.mixture, recipe.sources, read_stats(layout.stats("tokenize"))["sources"])
    per_source: dict[str, float] = {}
    by_unit = {u.name: u for u in recipe_units}
    for unit, w in unit_weights(stage.weights, recipe_units).items():
        per_source[by_unit[unit].source] = per_source.get(by_unit[unit].source, 0.0) + w
    per_source = {src: round(w / sum(per_source.values()), 12) for src, w in per_source.items() if w > 0}
    arms, specs, timing = {}, [], {}
    for arm in ablation_arms(recipe):
        arm_cfg, notes = (recipe, []) if arm.kind == "recipe" else fit_to_arm(recipe, arm, os.path.join(root, ARMS, arm.name))
        arm_layout, reused = (layout, False) if arm.kind == "recipe" else run_arm_stages(arm_cfg, arm, root, layout)
        units = units_from_tokenize(arm_cfg.mixture, arm_cfg.sources, read_stats(arm_layout.stats("tokenize"))["sources"])
        info = {"kind": arm.kind, "patch": arm.patch, "funnel": _funnel(arm_layout), "run_dir": arm_layout.root,
                "signals": "the recipe's, thresholds re-applied" if reused else "tagged", "adjusted": notes}
        if arm.kind != "recipe":
            timing[arm.name] = read_stats(os.path.join(arm_layout.root, COST))["data_stages_wall_s"]
        plan_cfg = recipe.mixture.model_copy(update={"over_cap": "fail", "stages": [
            MixtureStage(name="proxy", tokens=proxy_tokens, weights=per_source)]})
        try:
            rows = plan_mixture(plan_cfg, units)["stages"][0]["prefixes"]
        except MixtureError as e:
            arms[arm.name] = info | {"feasible": False, "reason": str(e)}
            logger.warning(f"ablate: arm {arm.name} cannot supply the proxy's {proxy_tokens:,} tokens: {e}")
            continue
        planned = sum(r["tokens_planned"] for r in rows)
        arms[arm.name] = info | {"feasible": True, "epochs_max": max(r["epochs"] for r in rows),
                                 "epochs_mean": round(sum(r["epochs"] * r["tokens_planned"] for r in rows) / planned, 6)}
        for seed in seeds:
            run_id = f"{arm.name}-s{seed}"
            specs.append(proxy_spec(
                run_id, os.path.join(root, "runs", run_id), rows, valid, proxy_train, seed,
                arm=arm.name, data=_stats_digest(arm_layout), tokens=proxy_tokens, eval_sets=eval_sets, scored_on=scored_on,
                eval_seed=recipe.train.seed, tokenizer=recipe.tokenizer.model_dump(mode="json"),
                keep_checkpoint=cfg.keep_checkpoints,
                benchmark=cfg.target.benchmark.model_dump() if cfg.target.benchmark else None))
    results = run_all(specs, train, recipe.executor, cfg.workers, "arms")
    # wall times apart: every other output is byte-identical when the ablation is rerun
    write_json(os.path.join(root, "timing.json"), {"arms": timing, "proxy_runs_s": {
        s["run_id"]: results[s["run_id"]]["seconds"] for s in specs}}, indent=1, sort_keys=True)
    return write_pipeline_outputs(root, cfg, arms, specs, results, weights, seeds, unscored, proxy_tokens, layout,
                                  eval_sets, per_source)


def outcome(cfg, result: dict, weights: dict[str, float], exit_name: str) -> float:
    if cfg.target.benchmark:
        return 1.0 - float(result["benchmark"][exit_name])
    return float(sum(w * result["eval"][label][exit_name] for label, w in weights.items()))


def write_pipeline_outputs(root: str, cfg, arms: dict, specs: list[dict], results: dict, weights: dict, seeds: list[int],
                           unscored: list[str], proxy_tokens: int, recipe_layout: RunLayout, eval_sets: dict,
                           source_weights: dict[str, float]) -> dict:
    from pipeline.ablate_pipeline_report import write_pipeline_report

    trained = [a for a, info in arms.items() if info["feasible"]]
    exits = list(results[specs[0]["run_id"]]["eval"][next(iter(weights))]) if specs else []
    target_exit = (exits[-1] if cfg.target.exit is None else f"exit{cfg.target.exit}") if exits else None
    if exits and target_exit not in exits:
        raise AblationError(f"ablation.target.exit: {cfg.target.exit} is not an exit of the proxy model ({exits})")
    per_exit, per_set, versus, rows = {}, {}, {}, []
    for e in exits:
        values = {a: [outcome(cfg, results[f"{a}-s{s}"], weights, e) for s in seeds] for a in trained}
        per_exit[e] = {a: mean_ci(v) | {"values": v} for a, v in values.items()}
        per_set[e] = {a: {label: mean_ci([results[f"{a}-s{s}"]["eval"][label][e] for s in seeds]) for label in weights}
                      for a in trained}
        versus[e] = {a: {ref: paired_difference(values[a], values[ref]) for ref in ("recipe", "raw")
                         if ref in values and ref != a} for a in trained}
        for a in trained:
            for s, v in zip(seeds, values[a]):
                r = results[f"{a}-s{s}"]
                rows.append({"arm": a, "seed": s, "exit": e, "target": v,
                             **{f"loss {label}": r["eval"][label][e] for label in r["eval"]}})
    best = min(trained, key=lambda a: per_exit[target_exit][a]["mean"]) if target_exit else None
    summary = {"kind": "pipeline", "seeds": seeds, "proxy_tokens": proxy_tokens, "exits": exits,
               "source_weights": source_weights,
               "target_exit": target_exit, "target_weights": weights, "eval_sets": eval_sets,
               "unscored_sources": unscored, "arms": arms,
               "arm_order": list(arms),
               "outcomes": per_exit, "per_set": per_set, "versus": versus, "best": best,
               "verdicts": _verdicts(versus.get(target_exit, {}), len(seeds))}
    write_json(os.path.join(root, "summary.json"), summary, indent=1, sort_keys=True)
    if rows:
        pl.DataFrame(rows).write_csv(os.path.join(root, "results.csv"))
    if best is not None:
        write_text(os.path.join(root, "best.patch.yaml"),
                   f"# the best arm of the pipeline ablation: {best} (use with --patch)\n"
                   + yaml.safe_dump(arms[best]["patch"] or {}, sort_keys=True))
        write_pipeline_report(summary, recipe_layout, os.path.join(root, "report.html"))
    return summary


def _verdicts(versus: dict, n_seeds: int) -> dict[str, str]:
    """Per arm, one plain sentence against recipe and raw at the target exit."""
    said = {"better": "better than", "worse": "worse than", "no significant difference": "not distinguishable from"}
    out = {}
    for arm, refs in versus.items():
        out[arm] = "; ".join(f"{said[d['verdict']]} {ref} ({d['mean']:+.4f} ± {d['ci95'] or 0:.4f})"
                             + (f" at {n_seeds} seeds" if d["verdict"] == "no significant difference" else "")
                             for ref, d in refs.items())
    return out


def print_summary(summary: dict, folder: str) -> None:
    """What ``ruyi2 ablate`` prints of a pipeline ablation."""
    e = summary["target_exit"]
    print(f"pipeline ablation: {len(summary['arms'])} arms, {len(summary['seeds'])} seeds, "
          f"{summary['proxy_tokens']:,} tokens per proxy; target {e}")
    for arm in summary["arm_order"]:
        info = summary["arms"][arm]
        kept = info["funnel"]["tokenize"]["tokens"]
        if not info["feasible"]:
            print(f"  {arm:<20} infeasible: {info['reason']}")
            continue
        stat = summary["outcomes"][e][arm]
        ci = f" ± {stat['ci95']:.4f}" if stat["ci95"] is not None else ""
        print(f"  {arm:<20} {stat['mean']:.4f}{ci}  {kept:,} tokens kept, {info['epochs_max']:.2f} epochs at most; "
              f"{summary['verdicts'].get(arm) or 'the reference'}")
    print(f"best: {summary['best']}; its patch: {os.path.join(folder, 'best.patch.yaml')}; all figures: "
          f"{os.path.join(folder, 'summary.json')}")
