"""The run report as one self-contained HTML file (``ruyi2 report RECIPE --html`` -> RUN_DIR/report.html):
the funnel per source per stage, removal reasons with real examples, duplicate clusters, contamination with
the matched spans, the mixture plan, the training curves per exit and the benchmark scores per exit
(after ``ruyi2 eval``). Built from the stats every stage
already wrote; nothing is recomputed."""

from __future__ import annotations

import json
import os

from pipeline.core.accounting import read_stats
from pipeline.core.html_page import Page, figure, paragraph, table
from pipeline.core.layout import RunLayout
from pipeline.registry import DOC_STAGES

_EXAMPLE_CHARS = 160


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _n(v) -> str:
    return f"{v:,}" if isinstance(v, int) else ("" if v is None else str(v))


def _snippet(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _EXAMPLE_CHARS else text[:_EXAMPLE_CHARS] + "…"


def funnel_section(page: Page, rows: list[dict]) -> None:
    stages = [s for s in ("raw", *DOC_STAGES) if any(f"{s}_docs" in r for r in rows)]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for r in rows:
        for ax, measure in zip(axes, ("docs", "tokens")):
            # a count that was not made (None: the filter's raw tokens under count_removed_tokens: false) is a gap
            ax.plot(stages, [float("nan") if (v := r.get(f"{s}_{measure}", 0)) is None else v for s in stages],
                    marker="o", label=r["source"])
    for ax, measure in zip(axes, ("documents", "tokens")):
        ax.set_ylabel(f"{measure} kept")
        ax.set_yscale("log")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    body = [[r["source"], *[_n(r.get(f"{s}_docs")) for s in stages],
             *[("not counted" if f"{s}_tokens" in r and r[f"{s}_tokens"] is None else _n(r.get(f"{s}_tokens"))) for s in stages]]
            for r in rows]
    header = ["source", *[f"{s} docs" for s in stages], *[f"{s} tokens" for s in stages]]
    mix_cols = sorted({k for r in rows for k in r if k.startswith("mix_")})
    parts = [figure(fig, "Documents and tokens kept per source after each stage (log scale)."), table(header, body)]
    if mix_cols:
        parts.append(table(["source", "tokenized (with EOS)", "held out", *[c[4:].replace("_tokens", "") + " planned" for c in mix_cols]],
                           [[r["source"], _n(r.get("tokenized_tokens")), _n(r.get("heldout_tokens")), *[_n(r.get(c)) for c in mix_cols]]
                            for r in rows]))
    page.section("Funnel", *parts)


def removal_section(page: Page, layout: RunLayout) -> None:
    rows, examples = [], {}
    for stage in DOC_STAGES:
        if not os.path.exists(layout.stats(stage)):
            continue
        stats = read_stats(layout.stats(stage))
        examples[stage] = stats.get("examples", {})
        for src, c in stats["sources"].items():
            for kind in ("removed", "quarantined"):
                for reason, n in sorted(c[kind].get("reasons", {}).items(), key=lambda x: (-x[1], x[0])):
                    ex = (examples[stage].get(src, {}).get(reason) or [{}])[0]
                    rows.append([stage, src, kind, reason, _n(n), f"{ex.get('id', '')}: {_snippet(ex.get('text', ''))}" if ex else ""])
    if rows:
        page.section("Removal reasons", paragraph("Every document that entered a stage is kept, removed with a reason or "
                                                  "quarantined with a reason; one real example per reason where the stage keeps them."),
                     table(["stage", "source", "", "reason", "documents", "example"], rows, left=4))


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None  # the stage has not run: its section is left out
    with open(path) as f:
        return json.load(f)


def clusters_section(page: Page, layout: RunLayout) -> None:
    clusters = _read_json(os.path.join(layout.stage("dedup"), "clusters.json"))
    if clusters is None:
        return
    stats = read_stats(layout.stats("dedup")).get("clusters", {})
    parts = []
    hist = stats.get("minhash", {}).get("size_histogram", {})
    if hist:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 2.8))
        sizes = sorted(hist, key=int)
        ax.bar(sizes, [hist[s] for s in sizes], color="#0969da")
        ax.set_xlabel("near-duplicate cluster size")
        ax.set_ylabel("clusters")
        parts.append(figure(fig, "MinHash clusters by size (verified members only)."))
    rows = []
    for kind in ("exact", "minhash"):
        for c in clusters.get(kind, {}).get("largest", [])[:10]:
            for m in c["members"]:
                rows.append([kind, str(c.get("cluster", c.get("keeper", ""))), m["id"], m["role"],
                             "" if m.get("similarity") is None else f"{m['similarity']:.2f}", _snippet(m.get("text", ""))])
    if rows:
        parts.append(table(["pass", "cluster", "document", "kept / removed", "J est.", "text"], rows, left=4))
    if parts:
        page.section("Duplicate clusters", *parts)


def contamination_section(page: Page, layout: RunLayout) -> None:
    report = _read_json(os.path.join(layout.stage("decontam"), "contamination.json"))
    if report is None:
        return
    rows = [[b, _n(r["items_indexed"]), _n(r["items_found"]), _n(r["documents"]),
             ", ".join(f"{s} {n}" for s, n in sorted(r["documents_per_source"].items())),
             ", ".join(f"{a} {n}" for a, n in sorted(r["actions"].items()))] for b, r in report["benchmarks"].items()]
    examples = [[b, e["doc"], e["item"], e["action"], "" if e.get("coverage") is None else f"{e['coverage']:.2f}",
                 _snippet(e["matched"])] for b, r in report["benchmarks"].items() for e in r["examples"]]
    index = report["index"]
    skipped = index.get("benchmarks_skipped", {})
    ref, common = index.get("reference", {}), index.get("corpus_common")
    excluded = [["prompt templates (shared by many items)", _n(index.get("excluded_template", 0)), ""],
                ["common in the clean reference corpus", _n(ref.get("excluded", 0)),
                 "; ".join(e["ngram"] for e in ref.get("examples", [])[:3])]]
    if common:
        excluded.append([f"in >= {common['threshold']:,} of the corpus's {common['documents']:,} documents", _n(common["excluded"]),
                         "; ".join(f"{e['ngram']} ({e['documents']:,} docs)" for e in common["examples"][:3])])
    page.section("Contamination",
                 paragraph(f"{report['documents_affected']:,} document(s) matched benchmark {report['n_gram']}-grams; "
                           f"{_n(index.get('ngrams_indexed', 0))} n-grams indexed."),
                 table(["benchmark", "items indexed", "items found", "documents", "per source", "action"], rows),
                 table(["benchmark", "document", "item", "action", "item covered", "matched span"], examples, left=5) if examples else "",
                 table(["n-grams excluded from the index", "count", "examples"], excluded, left=1),
                 paragraph(f"Not indexed (no data): {', '.join(sorted(skipped))}.") if skipped else "")


def mixture_section(page: Page, layout: RunLayout) -> None:
    if not os.path.exists(layout.stats("mix")):
        return
    from mixtures.plan import plan_figure

    plan = read_stats(layout.stats("mix"))["plan"]
    parts = [figure(plan_figure(plan), "Planned tokens per token prefix per curriculum stage (epochs on the bars).")]
    for st in plan["stages"]:
        parts.append(paragraph(f"Stage {st['name']}: {st['tokens']:,} tokens."))
        parts.append(table(["token prefix", "weight", "tokens planned", "unique tokens", "epochs"],
                           [[r["unit"], f"{r['weight']:.4f}", _n(r["tokens_planned"]), _n(r["unique_tokens"]), f"{r['epochs']:.3f}"]
                            for r in st["prefixes"]]))
    parts += [paragraph(n) for n in plan.get("notes", [])]
    page.section("Mixture plan", *parts)


def training_section(page: Page, layout: RunLayout) -> None:
    if not os.path.exists(layout.stats("train")):
        return
    stats = read_stats(layout.stats("train"))
    with open(stats["metrics"]) as f:
        rows = [json.loads(line) for line in f]
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = [r["step"] for r in rows]
    for exit_name in rows[0]["loss"]:
        axes[0].plot(steps, [r["loss"][exit_name] for r in rows], label=exit_name)
        axes[1].plot(steps, [r["lambda"][exit_name] for r in rows], label=exit_name)
    axes[2].plot(steps, [r["lr"] for r in rows], color="#57606a")
    for ax, label in zip(axes, ("training loss", "exit weight λ_k(t)", "learning rate")):
        ax.set_xlabel("step")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    boundaries = [r["step"] for prev, r in zip(rows, rows[1:]) if r["stage"] != prev["stage"]]
    for ax in axes:
        for b in boundaries:
            ax.axvline(b - 0.5, color="#d0d7de", lw=1)
    fig.tight_layout()
    parts = [paragraph(f"{stats['steps']} steps, {stats['parameters']:,} parameters, exits {stats['exits']}"
                       + (f", continued from {stats['init_from']['path']}" if stats.get("init_from") else ", from random weights") + "."),
             figure(fig, "Per exit: training loss and loss weight; the learning rate (curriculum stage boundaries as lines).")]
    for st, sets in stats["eval"].items():
        exits = list(sets["blend"])
        parts.append(paragraph(f"Held-out loss after stage {st}:"))
        parts.append(table(["set", *exits], [[label, *[f"{v[k]:.4f}" for k in exits]] for label, v in sets.items()]))
    page.section("Training", *parts)


def benchmark_section(page: Page, layout: RunLayout) -> None:
    """``ruyi2 eval`` results of the run's models (RUN_DIR/eval/<model>/results.json), primary metric per exit."""
    parts = []
    for model in ("train", "compress"):
        result = _read_json(os.path.join(layout.root, "eval", model, "results.json"))
        if result is None:
            continue
        exits = sorted({e for t in result["tasks"].values() for e in t["exits"]}, key=lambda e: int(e.removeprefix("exit")))
        rows = [[task, t["primary_metric"], _n(t["n"]),
                 *[f"{t['exits'][e][t['primary_metric']]:.4f} ± {t['exits'][e][t['primary_metric'] + '_stderr']:.4f}"
                   if e in t["exits"] else "" for e in exits]] for task, t in sorted(result["tasks"].items())]
        limit = f" --limit {result['limit']}" if result["limit"] else ""
        parts += [paragraph(f"{'Trained' if model == 'train' else 'Compressed'} model ({result['model']}), ruyi2 eval{limit}:"),
                  table(["task", "metric", "items", *exits], rows)]
    if parts:
        page.section("Benchmarks", *parts)


def write_run_report(layout: RunLayout, report: dict) -> str:
    """RUN_DIR/report.html from the stats on disk and ``report`` (``pipeline.report.build_report``)."""
    page = Page(f"Run report: {os.path.basename(layout.root.rstrip('/'))}", layout.root)
    funnel_section(page, report["funnel"])
    removal_section(page, layout)
    clusters_section(page, layout)
    contamination_section(page, layout)
    mixture_section(page, layout)
    training_section(page, layout)
    benchmark_section(page, layout)
    return page.write(os.path.join(layout.root, "report.html"))
