"""The pipeline ablation's HTML report (``RUN_DIR/ablate/report.html``): the verdicts, the held-out loss of every
arm per exit with intervals, each arm's funnel, the trade-off between the tokens an arm keeps and the loss its
proxies reach, documents one arm keeps and the recipe drops (and the other way round), and the best arm's patch."""

from __future__ import annotations

import glob
import os

import polars as pl
import yaml

from mixtures.ablation.outputs import interval
from pipeline.core.documents import REMOVED_REASON
from pipeline.core.html_page import Page, esc, figure, paragraph, table
from pipeline.core.layout import RunLayout

EXAMPLES = 3  # documents shown per arm and direction
SAMPLE_IDS = 1_000_000  # above this many final documents, both sides are compared on a fixed hash sample of ids
PREFIX_CHARS = 300
STAGES = ("filter", "dedup", "decontam")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_bars(summary: dict):
    plt = _plt()
    arms = [a for a in summary["arm_order"] if summary["arms"][a]["feasible"]]
    exits = summary["exits"]
    fig, axes = plt.subplots(1, len(exits), figsize=(3.6 * len(exits), 0.6 + 0.42 * len(arms)), squeeze=False)
    for ax, e in zip(axes[0], exits):
        _bars(ax, arms, [summary["outcomes"][e][a] for a in arms])
        ax.set_title(e, fontsize=9)
    fig.tight_layout()
    return fig


def set_bars(summary: dict):
    plt = _plt()
    e = summary["target_exit"]
    arms = [a for a in summary["arm_order"] if summary["arms"][a]["feasible"]]
    labels = list(summary["target_weights"])
    fig, axes = plt.subplots(1, len(labels), figsize=(3.6 * len(labels), 0.6 + 0.42 * len(arms)), squeeze=False)
    for ax, label in zip(axes[0], labels):
        stats = [summary["per_set"][e][a][label] for a in arms]
        _bars(ax, arms, stats)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    return fig


def _bars(ax, arms: list[str], stats: list[dict]) -> None:
    colours = ["#0969da" if a == "recipe" else "#8c959f" if a == "raw" else "#bf8700" for a in arms]
    ax.barh(arms, [s["mean"] for s in stats], xerr=[s["ci95"] or 0 for s in stats], color=colours, capsize=3)
    lo = min(s["mean"] - (s["ci95"] or 0) for s in stats)
    hi = max(s["mean"] + (s["ci95"] or 0) for s in stats)
    ax.set_xlim(lo - 0.15 * (hi - lo + 1e-9), hi + 0.15 * (hi - lo + 1e-9))
    ax.invert_yaxis()
    ax.set_xlabel("held-out loss (mean, 95% CI)", fontsize=8)


def trade_off(summary: dict):
    plt = _plt()
    e = summary["target_exit"]
    arms = [a for a in summary["arm_order"] if summary["arms"][a]["feasible"]]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for a in arms:
        x = summary["arms"][a]["funnel"]["tokenize"]["tokens"]
        s = summary["outcomes"][e][a]
        ax.errorbar([x], [s["mean"]], yerr=[s["ci95"] or 0], fmt="o", capsize=3,
                    color="#0969da" if a == "recipe" else "#8c959f" if a == "raw" else "#bf8700")
        ax.annotate(a, (x, s["mean"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("tokens the arm's corpus holds (tokenize, training part)")
    ax.set_ylabel(f"held-out loss, {e}")
    return fig


def _final(layout: RunLayout) -> pl.LazyFrame:
    files = sorted(glob.glob(os.path.join(layout.output("decontam"), "*.parquet")))
    return pl.scan_parquet(files).select("id", "text", source=pl.col("metadata").str.json_path_match("$.source"))


def _removals(layout: RunLayout) -> pl.LazyFrame:
    parts = []
    for stage in STAGES:
        files = sorted(glob.glob(os.path.join(layout.removed(stage), "*.parquet")))
        if files:
            parts.append(pl.scan_parquet(files).select(
                "id", source=pl.col("metadata").str.json_path_match("$.source"),
                reason=pl.lit(stage + ": ") + pl.col("metadata").str.json_path_match(f"$.{REMOVED_REASON}")))
    return pl.concat(parts) if parts else pl.LazyFrame(schema={"id": pl.String, "source": pl.String, "reason": pl.String})


def kept_by_one(keeper: RunLayout, dropper: RunLayout, n: int = EXAMPLES) -> list[list[str]]:
    """Up to ``n`` documents in ``keeper``'s final corpus that ``dropper``'s lacks, with where ``dropper`` removed
    them. The join reads ids only, and over SAMPLE_IDS documents both sides are cut to the same fixed hash sample
    of ids first, so its memory stays bounded whatever the corpus size; only the chosen documents' texts are read."""
    a, b = _final(keeper).select("source", "id"), _final(dropper).select("source", "id")
    total = a.select(pl.len()).collect().item()
    if total > SAMPLE_IDS:
        keep = pl.col("id").hash(seed=0) % (total // SAMPLE_IDS + 1) == 0
        a, b = a.filter(keep), b.filter(keep)
    # ids first (the texts of the n chosen documents only are read afterwards)
    chosen = a.join(b, on=["source", "id"], how="anti").sort("source", "id").head(n).collect()
    reasons = _removals(dropper).join(chosen.lazy(), on=["source", "id"], how="semi")  # streamed past the chosen ids
    rows = (_final(keeper).join(chosen.lazy(), on=["source", "id"], how="semi")
            .join(reasons, on=["source", "id"], how="left").sort("source", "id").collect())
    return [[r["source"], r["id"], r["reason"] or "quarantined (not removed)", r["text"][:PREFIX_CHARS]]
            for r in rows.iter_rows(named=True)]


def write_pipeline_report(summary: dict, recipe_layout: RunLayout, path: str) -> str:
    e = summary["target_exit"]
    arms = summary["arm_order"]
    feasible = [a for a in arms if summary["arms"][a]["feasible"]]
    page = Page("Pipeline ablation", f"{len(arms)} arms · {len(summary['seeds'])} seeds · {summary['proxy_tokens']:,} "
                                     f"tokens per proxy · target: {e} held-out loss over "
                                     + ", ".join(f"{k} ({w:.2f})" for k, w in summary["target_weights"].items()))
    rows = []
    for a in feasible:
        v = summary["versus"][e][a]
        rows.append([a, interval(summary["outcomes"][e][a]), interval(v["recipe"]) if "recipe" in v else "",
                     interval(v["raw"]) if "raw" in v else "", summary["verdicts"][a] or "the reference"])
    page.section("Verdicts", paragraph(f"Best arm at {e}: {summary['best']}. An arm is better or worse than another only "
                                       "when the 95% interval of their paired difference (same seed) is on one side of "
                                       "zero.", "verdict"),
                 table(["arm", f"loss at {e}", "arm − recipe", "arm − raw", "verdict"], rows,
                       highlight={feasible.index(summary["best"])} if summary["best"] in feasible else None),
                 figure(loss_bars(summary), "Held-out loss per exit: recipe (blue), raw (grey), the other arms (ochre)."))
    funnel = []
    for a in arms:
        info = summary["arms"][a]
        f = info["funnel"]
        funnel.append([a, *[f"{f[s]['docs']:,}" for s in STAGES], *[f"{f[s]['tokens']:,}" for s in STAGES],
                       f"{f['tokenize']['tokens']:,}",
                       f"{info['epochs_max']:.3f}" if info["feasible"] else "infeasible: " + info["reason"]])
    page.section("What each arm keeps",
                 table(["arm", *[f"{s} docs" for s in STAGES], *[f"{s} tokens" for s in STAGES], "tokenized tokens",
                        "epochs (most repeated prefix)"], funnel),
                 figure(trade_off(summary), "Tokens kept against the loss reached: a stricter pipeline keeps fewer "
                                            "tokens; it pays off only if its loss is lower."))
    sources = sorted({src for a in arms for src in summary["arms"][a]["funnel"]["sources"]})
    by_source = [[a, src, *[f"{f[s]['docs']:,}" for s in STAGES], *[f"{f[s]['tokens']:,}" for s in (*STAGES, "tokenize")]]
                 for a in arms for src in sources if (f := summary["arms"][a]["funnel"]["sources"].get(src))]
    page.section("Documents and tokens kept per source",
                 table(["arm", "source", *[f"{s} docs" for s in STAGES], *[f"{s} tokens" for s in STAGES], "tokenized"],
                       by_source, left=2))
    labels = list(summary["target_weights"])
    page.section(f"Loss per evaluation set at {e}",
                 table(["arm", *labels], [[a, *[interval(summary["per_set"][e][a][label]) for label in labels]]
                                          for a in feasible]),
                 figure(set_bars(summary), "Held-out loss per evaluation set at the target exit (mean, 95% CI)."))
    examples = []
    for a in arms:
        if a == "recipe":
            continue
        other = RunLayout(summary["arms"][a]["run_dir"])
        examples += [[a, "keeps", *row] for row in kept_by_one(other, recipe_layout)]
        examples += [[a, "drops", *row] for row in kept_by_one(recipe_layout, other)]
    page.section("Documents the arms and the recipe disagree on",
                 paragraph(f"Up to {EXAMPLES} per arm and direction: a document the arm keeps and the recipe drops "
                           "(with the recipe's reason), and one the arm drops (with the arm's reason); the text's first "
                           f"{PREFIX_CHARS} characters."),
                 table(["arm", "the arm", "source", "id", "removed by the other side", "text"], examples, left=6)
                 if examples else paragraph("Every arm's corpus holds the same documents as the recipe's."))
    best = summary["best"]
    page.section("The best arm's patch",
                 paragraph(f"{best}: `ruyi2 run RECIPE --patch {os.path.join(os.path.dirname(path), 'best.patch.yaml')}`"),
                 f"<pre>{esc(yaml.safe_dump(summary['arms'][best]['patch'] or {}, sort_keys=True))}</pre>")
    return page.write(path)
