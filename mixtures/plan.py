"""Mixture planning: per curriculum stage, a weight and an epoch count per token prefix, and blend files.

A prefix is a *unit*: a source, or one quality bucket of a source (``<source>.<bucket>``). Weights in
the recipe name units, sources or domains; the most specific name wins: a bucket named directly takes
its own weight, a source's weight is shared by its other buckets, and a domain's weight by the remaining
units of its sources, each in proportion to its tokens. Megatron samples sequences from prefix i with
probability w_i, so w_i is the fraction of the stage's tokens drawn from prefix i. Epochs count passes
over a unit's *unique* tokens (a physically upsampled source already holds copies):
``epochs_i = w_i * stage_tokens / unique_tokens_i``. A plan that would repeat any unit more than
``max_epochs`` times fails before anything is written, naming the unit and what would fix it.

Outputs per stage: ``<stage>.data_args.txt`` (the ``--data-path``/``--data-args-path`` argument of
Megatron-LM: ``w1 prefix1 w2 prefix2 ...``), ``<stage>.valid_data_args.txt`` (each source's held-out
prefix with the source's total weight: ``--valid-data-path``) and ``<stage>.blend.json`` (both blends),
read by ``train_entry`` through megatron-core's ``get_blend_from_list``; ``plan.json`` and ``plan.png``
(tokens per unit per stage) for the plan report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mixtures.config import MixtureConfig
from pipeline.core.atomic import write_json, write_text
from pipeline.core.config import SourceConfig
from pipeline.core.errors import StageError

PLAN_PLOT = "plan.png"


class MixtureError(StageError):
    """The corpus cannot supply a curriculum stage as planned; the message names the unit and the fix."""


@dataclass(frozen=True)
class Unit:
    """One token prefix the mixture weights: a source or a quality bucket of a source."""

    name: str
    source: str
    domain: str
    tokens: int  # tokens in the prefix (copies from physical upsampling included, one EOS per document)
    unique_tokens: int  # first copies only
    prefix: str | None
    bucket: str | None = None
    # a run grown by `ruyi2 add` holds a unit in one prefix per layer: (prefix, tokens) of each, base first
    parts: tuple[tuple[str, int], ...] = ()


def merge_layers(layers: list[dict]) -> dict:
    """The tokenize stats' ``sources`` of a base run and its increments as one: per unit and per source the
    counts summed and every layer's prefix kept (``parts``) for the blends to weight by tokens."""
    out = {}
    for src, row in layers[0].items():
        later = [layer[src] for layer in layers[1:] if src in layer]
        units = {}
        for unit, u in row["units"].items():
            rows = [u] + [r["units"][unit] for r in later if unit in r["units"]]
            units[unit] = {k: sum(r[k] for r in rows) for k in ("documents", "tokens", "unique_tokens")}
            units[unit]["parts"] = [[r["prefix"], r["tokens"]] for r in rows if r["prefix"]]
            units[unit]["prefix"] = units[unit]["parts"][0][0] if units[unit]["parts"] else None
        rows = [row] + later
        out[src] = {"units": units, "heldout_parts": [[r["heldout_prefix"], r["heldout_tokens"]] for r in rows if r["heldout_prefix"]]}
        out[src]["heldout_prefix"] = out[src]["heldout_parts"][0][0] if out[src]["heldout_parts"] else None
    return out


def units_from_tokenize(mixture: MixtureConfig, sources: list[SourceConfig], tokenize_sources: dict) -> list[Unit]:
    """The units of the recipe's sources, in recipe order, with the tokenize stage's counts."""
    out = []
    for s in sources:
        row = tokenize_sources[s.name]["units"]
        for name, bucket in mixture.units_of(s):
            u = row[name]
            parts = tuple((p, int(t)) for p, t in u.get("parts", ())) if len(u.get("parts", ())) > 1 else ()
            out.append(Unit(name, s.name, s.domain, u["tokens"], u["unique_tokens"], u["prefix"], bucket, parts))
    return out


def unit_weights(weights: dict[str, float], units: list[Unit]) -> dict[str, float]:
    """Resolve unit / source / domain weights to one weight per unit (see the module docstring)."""
    out: dict[str, float] = {}
    named_units = {u.name for u in units if u.bucket is not None and u.name in weights}
    for u in units:
        if u.name in named_units:
            out[u.name] = weights[u.name]
    sources = {u.source for u in units}

    def share(weight: float, members: list[Unit]) -> None:
        total = sum(m.tokens for m in members)
        for m in members:
            # no tokens at all: split evenly, so the plan notes the empty units instead of hiding them
            out[m.name] = out.get(m.name, 0.0) + (weight * m.tokens / total if total else weight / len(members))

    for src in sorted(sources & set(weights)):
        share(weights[src], [u for u in units if u.source == src and u.name not in named_units])
    for key, w in weights.items():
        if key in sources or key in named_units:
            continue
        share(w, [u for u in units if u.domain == key and u.source not in weights and u.name not in named_units])
    return out


def plan_mixture(mixture: MixtureConfig, units: list[Unit], heldout_prefixes: dict[str, str | list] | None = None) -> dict:
    """The plan of every curriculum stage; each source's held-out prefix gets the source's total weight
    (renormalised over the sources that have one) for evaluation. A held-out prefix may be a list of
    [prefix, tokens] (one per layer of a run grown by ``ruyi2 add``)."""
    heldout_prefixes = heldout_prefixes or {}
    by_name = {u.name: u for u in units}
    stages, notes = [], []
    for st in mixture.stages:
        raw = unit_weights(st.weights, units)
        empty = sorted(n for n, w in raw.items() if w > 0 and by_name[n].tokens == 0)
        if empty:
            notes.append(f"stage {st.name!r}: unit(s) {empty} have no tokens left and are left out")
        usable = {n: w for n, w in raw.items() if w > 0 and by_name[n].tokens > 0}
        if not usable:
            raise MixtureError(f"mixture stage {st.name!r}: no weighted source has any tokens (weights {st.weights})")
        planned_by_unit = _fill(st.name, st.tokens, usable, by_name, mixture, notes)
        rows = []
        for u in units:  # recipe order: deterministic blend files
            if u.name not in usable:
                continue
            planned = planned_by_unit[u.name]
            w = planned / st.tokens
            epochs = planned / u.unique_tokens
            rows.append({"unit": u.name, "source": u.source, "domain": u.domain, "bucket": u.bucket, "prefix": u.prefix,
                         "weight": round(w, 10), "tokens_available": u.tokens, "unique_tokens": u.unique_tokens,
                         "tokens_planned": round(planned), "epochs": round(epochs, 6),
                         "file_passes": round(planned / u.tokens, 6), **({"parts": [list(p) for p in u.parts]} if u.parts else {})})
        per_source: dict[str, float] = {}
        for r in rows:
            per_source[r["source"]] = per_source.get(r["source"], 0.0) + r["weight"]
        valid = [(heldout_prefixes[src], w) for src, w in per_source.items() if src in heldout_prefixes]
        norm = sum(w for _, w in valid)
        stages.append({
            "name": st.name,
            "tokens": st.tokens,
            "prefixes": rows,
            "valid": [{"prefix": p if isinstance(p, str) else p[0][0], "weight": round(w / norm, 10),
                       **({"parts": p} if not isinstance(p, str) and len(p) > 1 else {})} for p, w in valid],
        })
    return {"stages": stages, "max_epochs": mixture.max_epochs, "notes": notes}


def _fill(stage: str, tokens: int, weights: dict[str, float], units: dict[str, Unit], mixture: MixtureConfig,
          notes: list[str]) -> dict[str, float]:
    """Tokens per unit: the stage's tokens in proportion to the weights. A unit over ``max_epochs`` fails
    the plan, or with ``over_cap: redistribute`` is held at the cap while the tokens it cannot supply go
    to the remaining units in proportion to their weights (repeated until nothing is over; water-filling)."""
    cap = {n: mixture.max_epochs * units[n].unique_tokens for n in weights}
    fixed: dict[str, float] = {}
    while True:
        free = {n: w for n, w in weights.items() if n not in fixed}
        left = tokens - sum(fixed.values())
        if not free:
            raise MixtureError(
                f"mixture stage {stage!r}: the corpus cannot supply {tokens:,} tokens within max_epochs "
                f"{mixture.max_epochs}: every weighted unit is at its cap ({sum(fixed.values()):,.0f} tokens); "
                f"lower the stage's tokens, raise max_epochs or add data"
            )
        total_w = sum(free.values())
        planned = {n: left * w / total_w for n, w in free.items()}
        over = sorted(n for n, t in planned.items() if t > cap[n] * (1 + 1e-9))
        if not over:
            break
        if mixture.over_cap == "fail":
            n = over[0]
            raise MixtureError(
                f"mixture stage {stage!r}: {n!r} would be repeated {planned[n] / units[n].unique_tokens:.2f} times "
                f"(weight {planned[n] / tokens:.4f} of {tokens:,} tokens, {units[n].unique_tokens:,} unique tokens "
                f"available) > max_epochs {mixture.max_epochs}; lower the stage's tokens or this weight, add data, "
                f"or set mixture.over_cap: redistribute"
            )
        for n in over:
            fixed[n] = cap[n]
        notes.append(f"stage {stage!r}: {over} held at {mixture.max_epochs} epochs; the rest of their weight "
                     f"went to the other units in proportion to their weights")
    return planned | fixed


def plot_plan(plan: dict, path: str) -> str:
    """The plan figure as a PNG file (mix/plan.png)."""
    import matplotlib.pyplot as plt

    fig = plan_figure(plan)
    fig.savefig(path, dpi=120, metadata={"Software": None})  # no version stamp: the file is reproducible
    plt.close(fig)
    return path


def plan_figure(plan: dict):
    """Stacked bars of planned tokens per unit per curriculum stage, with each unit's epochs on its bar."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    stages = plan["stages"]
    units = list(dict.fromkeys(r["unit"] for st in stages for r in st["prefixes"]))
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(stages), 4.8))
    colours = plt.get_cmap("tab20")
    bottoms = [0.0] * len(stages)
    min_labelled = 0.04 * max(st["tokens"] for st in stages)  # bars too thin for a label stay bare
    for i, unit in enumerate(units):
        heights, labels = [], []
        for st in stages:
            row = next((r for r in st["prefixes"] if r["unit"] == unit), None)
            heights.append(row["tokens_planned"] if row else 0)
            labels.append(f"{row['epochs']:.2f}x" if row else "")
        bars = ax.bar([st["name"] for st in stages], heights, bottom=bottoms, label=unit, color=colours(i % 20))
        for bar, label, h in zip(bars, labels, heights):
            if h > min_labelled:
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + h / 2, label, ha="center", va="center", fontsize=7)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_ylabel("tokens planned")
    ax.set_title(f"mixture plan (max {plan['max_epochs']} epochs per unit)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def blend_entries(rows: list[dict]) -> list[tuple[float, str]]:
    """(weight, prefix) per prefix: a row held in several prefixes (``parts``) has its weight split over them
    by their tokens, so each layer is sampled as often as its share of the unit's tokens."""
    out = []
    for r in rows:
        parts = r.get("parts") or [[r["prefix"], 1]]
        total = sum(t for _, t in parts)
        out += [(round(r["weight"] * t / total, 10), p) for p, t in parts]
    return out


def data_args(rows: list[dict]) -> str:
    return " ".join(f"{w!r} {p}" for w, p in blend_entries(rows))


def write_plan(plan: dict, folder: str) -> dict[str, dict[str, str | None]]:
    """Write plan.json plus the blend files of every stage; returns {stage: {train, valid: data-args path}}."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for st in plan["stages"]:
        train_path = os.path.join(folder, f"{st['name']}.data_args.txt")
        write_text(train_path, data_args(st["prefixes"]) + "\n")
        valid_path = None
        if st["valid"]:
            valid_path = os.path.join(folder, f"{st['name']}.valid_data_args.txt")
            write_text(valid_path, data_args(st["valid"]) + "\n")
        blend = {
            "name": st["name"],
            "tokens": st["tokens"],
            "train": {"data_args_path": train_path, "prefixes": [p for _, p in blend_entries(st["prefixes"])],
                      "weights": [w for w, _ in blend_entries(st["prefixes"])]},
            "valid": {"data_args_path": valid_path, "prefixes": [p for _, p in blend_entries(st["valid"])],
                      "weights": [w for w, _ in blend_entries(st["valid"])]},
        }
        write_json(os.path.join(folder, f"{st['name']}.blend.json"), blend, indent=2)
        paths[st["name"]] = {"train": train_path, "valid": valid_path}
    write_json(os.path.join(folder, "plan.json"), plan, indent=2)
    plot_plan(plan, os.path.join(folder, PLAN_PLOT))
    return paths

