"""``ruyi2 ablate``: choose the ablated curriculum stage's mixture with proxy runs and fitted curves.

1. Categories (domains, sources or token prefixes) and the prior (the stage's weights, resolved by the
   planner); candidates = Dirichlet samples around the prior + the baselines. Every candidate goes through
   the planner at the stage's real token count: over ``max_epochs`` it is repaired (``over_cap:
   redistribute``) or rejected (``fail``), before anything trains. The weights fitted are the planned ones.
2. One proxy run per candidate (``proxy_runs.py``), each on a blend of the run's own prefixes.
3. Outcome per run and exit: the held-out loss on every source's held-out prefix (the same sequences for
   every run), and the target (a fixed weighting of those sets, or with ``target.benchmark`` the error of a
   ``ruyi2 eval`` task that the trainer scores each proxy on).
4. Fits per exit (``fits.py``), cross-validated; the proposal (``proposer.py``) from the chosen fit of the
   target exit, through the planner.
5. Validation: the proposal and every baseline at ``validation.seeds`` seeds; mean ± 95% CI and paired
   differences per baseline; the verdict says plainly when the proposal does not win.
6. Outputs under ``RUN_DIR/ablate/`` (results.parquet/.csv, fits.json, proposal.patch.yaml,
   proposal.recipe.yaml, summary.json, report.html).
"""

from __future__ import annotations

import os
import traceback

import numpy as np
from loguru import logger
from scipy import stats as scipy_stats

from mixtures.ablation import candidates as cands
from mixtures.ablation.candidates import Category, Mixture
from mixtures.ablation.fits import fit_outcome
from mixtures.ablation.proposer import caps, propose
from mixtures.ablation.proxy_runs import proxy_spec, run_all
from mixtures.config import MixtureConfig, MixtureStage
from mixtures.plan import MixtureError, Unit, plan_mixture, units_from_tokenize
from pipeline.core.accounting import read_stats
from pipeline.core.errors import StageError

FOLDER = "ablate"


class AblationError(StageError):
    """An ablation that cannot run as configured; the message names the key or the missing input."""


# ------------------------------------------------------------------------------------------ categories
def category_of(unit: Unit, kind: str) -> str:
    return {"domains": unit.domain, "sources": unit.source, "units": unit.name}[kind]


def categories(units: list[Unit], kind: str) -> list[Category]:
    order = list(dict.fromkeys(category_of(u, kind) for u in units if u.unique_tokens > 0))
    return [Category(c, sum(u.unique_tokens for u in units if category_of(u, kind) == c)) for c in order]


def unit_weights_of(weights: dict[str, float], units: list[Unit], kind: str) -> dict[str, float]:
    """Category weights -> weights per unit, each category's share split by tokens (as the planner splits
    a source's or a domain's weight), keyed so the planner reads them as units (a bucket by its own name,
    a source without buckets by the source's)."""
    out = {}
    for cat, w in weights.items():
        members = [u for u in units if category_of(u, kind) == cat and u.tokens > 0]
        total = sum(u.tokens for u in members)
        for u in members:
            out[u.name] = out.get(u.name, 0.0) + w * u.tokens / total
    return out


def plan_one(weights: dict[str, float], units: list[Unit], kind: str, stage: str, tokens: int, mixture: MixtureConfig,
             over_cap: str) -> dict:
    cfg = MixtureConfig(stages=[MixtureStage(name=stage, tokens=tokens, weights=unit_weights_of(weights, units, kind))],
                        max_epochs=mixture.max_epochs, over_cap=over_cap)
    return plan_mixture(cfg, units)


def planned_weights(plan: dict, units: list[Unit], kind: str, names: list[str]) -> dict[str, float]:
    by_unit = {u.name: u for u in units}
    out = dict.fromkeys(names, 0.0)
    for row in plan["stages"][0]["prefixes"]:
        out[category_of(by_unit[row["unit"]], kind)] += row["weight"]
    return {k: round(v, 10) for k, v in out.items()}


def target_weights(sources, heldout: dict[str, str], given: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """Held-out set ("domain/source") -> weight in the target loss (``given``: source or domain -> weight; empty:
    every source with a held-out prefix equally), and the sources without one (which the target cannot score)."""
    scored = [s for s in sources if s.name in heldout]
    if not scored:
        raise AblationError("no source has a held-out prefix (tokenizer.heldout_fraction is 0): nothing to score runs on")
    unscored = [s.name for s in sources if s.name not in heldout]
    if unscored:
        logger.warning(f"ablate: source(s) {unscored} have no held-out prefix (too few documents for "
                       f"tokenizer.heldout_fraction): the target cannot score them")
    out = {}
    for key, w in (given or {s.name: 1.0 for s in scored}).items():
        members = [s for s in scored if key in (s.name, s.domain)]
        if not members:
            raise AblationError(f"ablation.target.weights.{key}: no source or domain with a held-out prefix "
                                f"(have: {[s.name for s in scored]})")
        for s in members:
            out[f"{s.domain}/{s.name}"] = out.get(f"{s.domain}/{s.name}", 0.0) + w / len(members)
    total = sum(out.values())
    return {k: v / total for k, v in sorted(out.items())}, unscored


# ---------------------------------------------------------------------------------------------- setup
class Ablation:
    def __init__(self, recipe, layout, proxy_train: dict, train):
        self.recipe, self.layout, self.cfg = recipe, layout, recipe.ablation
        if self.cfg is None:
            raise AblationError("the recipe has no ablation section (see README, 'Mixture ablation')")
        if recipe.mixture is None:
            raise AblationError("ablation needs the recipe's mixture section (the stage whose weights are ablated)")
        stats_path = layout.stats("tokenize")
        if not os.path.exists(stats_path):
            raise AblationError(f"ablate reads the tokenize stage's prefixes: {stats_path} is missing; run "
                                f"`ruyi2 run RECIPE --to tokenize` first")
        tok = read_stats(stats_path)["sources"]
        self.units = units_from_tokenize(recipe.mixture, recipe.sources, tok)
        self.heldout = {s.name: tok[s.name]["heldout_prefix"] for s in recipe.sources if tok[s.name]["heldout_prefix"]}
        names = [st.name for st in recipe.mixture.stages]
        self.stage = recipe.mixture.stages[names.index(self.cfg.stage) if self.cfg.stage else 0]
        self.kind = self.cfg.categories
        self.categories = categories(self.units, self.kind)
        self.names = [c.name for c in self.categories]
        if len(self.names) < 2:
            raise AblationError(f"ablation.categories: {self.kind} gives {self.names}: a mixture needs two or more")
        self.train, self.train_fn = proxy_train, train  # the proxies' train section (data) and the trainer
        self.gbs = proxy_train["global_batch_size"] or proxy_train["micro_batch_size"]
        self.proxy_tokens = proxy_train["steps"] * self.gbs * proxy_train["seq_length"]
        self.target_weights = self._target_weights()
        self.root = layout.stage(FOLDER)

    def _target_weights(self) -> dict[str, float]:
        weights, self.unscored = target_weights(self.recipe.sources, self.heldout, self.cfg.target.weights)
        return weights

    # ------------------------------------------------------------------------------------- mixtures
    def prior(self) -> dict[str, float]:
        from mixtures.plan import unit_weights

        raw = unit_weights(self.stage.weights, self.units)
        by_unit = {u.name: u for u in self.units}
        out = dict.fromkeys(self.names, 0.0)
        for name, w in raw.items():
            cat = category_of(by_unit[name], self.kind)
            if cat in out:
                out[cat] += w
        total = sum(out.values())
        return {k: v / total for k, v in out.items()}

    def mixtures(self) -> tuple[list[Mixture], list[dict]]:
        """Candidates and baselines, each planned at the stage's tokens; returns (kept, rejected)."""
        c, mx = self.cfg.candidates, self.recipe.mixture
        prior = self.prior()
        raw = [Mixture(f"cand-{i:03d}", "candidate", w) for i, w in
               enumerate(cands.dirichlet_samples(self.categories, prior, c.count, c.concentration, c.floor, c.seed))]
        base = {"token_proportional": cands.token_proportional(self.categories), "uniform": cands.uniform(self.categories),
                "unimax": cands.unimax(self.categories, self.stage.tokens, mx.max_epochs), "recipe": prior}
        raw += [Mixture(b, "baseline", base[b]) for b in c.baselines]
        kept, rejected = [], []
        for m in raw:
            try:
                plan = plan_one(m.weights, self.units, self.kind, self.stage.name, self.stage.tokens, mx, mx.over_cap)
            except MixtureError as e:
                rejected.append({"mixture": m.name, "weights": m.weights, "reason": str(e)})
                continue
            kept.append(Mixture(m.name, m.kind, planned_weights(plan, self.units, self.kind, self.names)))
        return kept, rejected

    # ----------------------------------------------------------------------------------------- runs
    def spec(self, mixture: Mixture, seed: int) -> dict:
        run_id = f"{mixture.name}-s{seed}"
        out = os.path.join(self.root, "runs", run_id)
        try:
            plan = plan_one(mixture.weights, self.units, self.kind, "proxy", self.proxy_tokens, self.recipe.mixture, "fail")
        except MixtureError as e:
            raise AblationError(f"ablation.proxy: mixture {mixture.name} cannot supply the proxy's {self.proxy_tokens:,} "
                                f"tokens ({e}); lower ablation.proxy.steps") from None
        valid = [{"prefix": self.heldout[s.name], "weight": w} for s in self.recipe.sources
                 if (w := self.target_weights.get(f"{s.domain}/{s.name}", 0.0)) > 0]
        return proxy_spec(
            run_id, out, plan["stages"][0]["prefixes"], valid, self.train, seed,
            mixture=mixture.name, kind=mixture.kind, weights=mixture.weights, tokens=self.proxy_tokens,
            eval_sets={f"{s.domain}/{s.name}": self.heldout[s.name] for s in self.recipe.sources if s.name in self.heldout},
            eval_seed=self.recipe.train.seed, tokenizer=self.recipe.tokenizer.model_dump(mode="json"),
            keep_checkpoint=self.cfg.keep_checkpoints,
            benchmark=self.cfg.target.benchmark.model_dump() if self.cfg.target.benchmark else None)

    def run(self, specs: list[dict], what: str) -> dict[str, dict]:
        try:
            return run_all(specs, self.train_fn, self.recipe.executor, self.cfg.workers, what)
        except StageError:
            raise
        except Exception as e:  # a proxy's own error: name it and where its log (with the stack) is
            error = AblationError(f"ablate: a proxy run failed: {type(e).__name__}: {e} (its stack is in the run's log: "
                                  f"{self.root}/runs/*/train.log)")
            error.stack = "".join(traceback.format_exception(e))
            raise error from e

    def exit_names(self, result: dict) -> list[str]:
        return list(result["eval"][next(iter(self.target_weights))])

    def outcome(self, result: dict, exit_name: str) -> float:
        """The target (lower is better): the benchmark's error, or the weighted held-out loss."""
        if self.cfg.target.benchmark:
            return 1.0 - float(result["benchmark"][exit_name])
        return float(sum(w * result["eval"][label][exit_name] for label, w in self.target_weights.items()))

    def per_set(self, results: list[dict], exit_name: str):
        """(held-out loss per run per set, the sets' target weights, their names) for the per-set law fit;
        None for a benchmark target."""
        if self.cfg.target.benchmark:
            return None
        sets = list(self.target_weights)
        losses = np.array([[r["eval"][label][exit_name] for label in sets] for r in results])
        return losses, [self.target_weights[label] for label in sets], sets

    @property
    def target_name(self) -> str:
        b = self.cfg.target.benchmark
        return f"{b.task} error (1 - accuracy, {b.limit or 'all'} items)" if b else "held-out loss"


def mean_ci(values: list[float], level: float = 0.95) -> dict:
    v = np.asarray(values, dtype=np.float64)
    half = float(scipy_stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
    return {"mean": float(v.mean()), "ci95": half, "n": len(v)}


# ------------------------------------------------------------------------------------------- the flow
def run_ablation(recipe, layout, proxy_train: dict, train, target_flops: float, resume: bool = False,
                 restart: bool = False) -> dict:
    """The whole ablation. ``proxy_train``: the proxies' train section as data; ``train(spec) -> dict``
    trains one proxy (given by the composition above); ``target_flops``: the planned run's cost. Finished proxy
    runs are kept with ``resume``, deleted with ``restart``; otherwise their presence is an error."""
    from mixtures.ablation.outputs import write_outputs

    if resume and restart:
        raise AblationError("--resume and --restart: choose one (keep the finished proxy runs, or delete them)")
    if not (resume or restart) and (held := layout.kept_work(FOLDER, {"runs": "proxy runs of an earlier ablation"})):
        raise AblationError(f"ablate starts from an empty folder, which would delete {held[0]}: rerun with --resume to keep "
                            "the finished ones (a run whose settings changed is trained again), or with --restart to delete them all")
    ab = Ablation(recipe, layout, proxy_train, train)
    layout.fresh_stage(FOLDER, resume)  # emptied only inside a marked run directory
    seed0 = recipe.train.seed
    mixtures, rejected = ab.mixtures()
    for r in rejected:
        logger.warning(f"ablate: mixture {r['mixture']} rejected by the planner: {r['reason']}")
    fit_set = [m for m in mixtures]
    if len(fit_set) < max(6, ab.cfg.fit.folds + 1):
        raise AblationError(f"ablate: {len(fit_set)} feasible mixture(s) ({len(rejected)} rejected by the planner); the fits "
                            f"need at least {max(6, ab.cfg.fit.folds + 1)}: raise ablation.candidates.count")
    specs = [ab.spec(m, seed0) for m in fit_set]
    results = ab.run(specs, "candidates")
    exits = ab.exit_names(results[specs[0]["run_id"]])
    target_exit = exits[-1] if ab.cfg.target.exit is None else f"exit{ab.cfg.target.exit}"
    if target_exit not in exits:
        raise AblationError(f"ablation.target.exit: {ab.cfg.target.exit} is not an exit of the proxy model ({exits})")
    x = np.array([[m.weights[c] for c in ab.names] for m in fit_set])
    fits = {e: fit_outcome(x, np.array([ab.outcome(results[s["run_id"]], e) for s in specs]), ab.names, ab.cfg.fit.folds,
                           ab.cfg.fit.model, ab.per_set([results[s["run_id"]] for s in specs], e)) for e in exits}
    chosen = fits[target_exit]
    prior = ab.prior()
    prior_vec = np.array([prior[c] for c in ab.names])
    cap = caps([c.unique_tokens for c in ab.categories], ab.stage.tokens, recipe.mixture.max_epochs)
    measured = chosen["measured"]
    best = x[int(np.argmin(measured))]
    starts = [prior_vec, np.full(len(ab.names), 1 / len(ab.names)), best]
    w = propose(chosen["model"], prior_vec, cap, starts, ab.cfg.proposer.prior_penalty)
    proposal_weights = {c: float(round(v, 6)) for c, v in zip(ab.names, w)}
    try:
        plan = plan_one(proposal_weights, ab.units, ab.kind, ab.stage.name, ab.stage.tokens, recipe.mixture, recipe.mixture.over_cap)
    except MixtureError:
        plan = plan_one(proposal_weights, ab.units, ab.kind, ab.stage.name, ab.stage.tokens, recipe.mixture, "redistribute")
    proposal = Mixture("proposal", "proposal", planned_weights(plan, ab.units, ab.kind, ab.names))
    predicted = float(chosen["model"].predict(np.array([[proposal.weights[c] for c in ab.names]]))[0])
    # validation: the proposal and every baseline at several seeds (the seed-0 baseline runs are reused)
    seeds = [seed0 + i for i in range(ab.cfg.validation.seeds)]
    compared = [proposal] + [m for m in fit_set if m.kind == "baseline"]
    vspecs = [ab.spec(m, s) for m in compared for s in seeds]
    results |= ab.run(vspecs, "validation")
    summary = compare(ab, compared, seeds, results, target_exit)
    summary |= {"predicted": predicted, "target_exit": target_exit, "unscored_sources": ab.unscored, "rejected": rejected, "prior": prior,
                "proposal": proposal.weights, "plan": plan["stages"][0], "caps": dict(zip(ab.names, map(float, cap)))}
    return write_outputs(ab, fit_set, specs + vspecs, results, fits, summary, exits, target_flops)


def compare(ab: Ablation, compared: list[Mixture], seeds: list[int], results: dict, exit_name: str) -> dict:
    """Mean ± 95% CI of the target per mixture over seeds, and the proposal's paired difference (same
    seed: same initial data order) from each baseline; the proposal wins only if the whole interval of
    the difference is below zero."""
    per = {m.name: [ab.outcome(results[f"{m.name}-s{s}"], exit_name) for s in seeds] for m in compared}
    out = {"seeds": seeds, "mixtures": {name: mean_ci(v) | {"values": v} for name, v in per.items()}, "versus": {}}
    for name, values in per.items():
        if name == "proposal":
            continue
        out["versus"][name] = paired_difference(per["proposal"], values)
    return out


def paired_difference(a: list[float], b: list[float]) -> dict:
    """Mean ± 95% CI of ``a - b`` paired by seed (lower is better): "better" only if the whole interval is below
    zero, "worse" if above, otherwise "no significant difference"."""
    diff = mean_ci([x - y for x, y in zip(a, b)])
    verdict = ("better" if diff["ci95"] is not None and diff["mean"] + diff["ci95"] < 0
               else "worse" if diff["ci95"] is not None and diff["mean"] - diff["ci95"] > 0 else "no significant difference")
    return diff | {"verdict": verdict}
