"""Stage summaries and the run report: the funnel (documents and tokens per source per stage), the
contamination found, the mixture plan and the exit losses."""

from __future__ import annotations

import json
import os

from rich.console import Console
from rich.table import Table
from rich.text import Text

from decontam.report import REPORT_COLUMNS, report_rows
from pipeline.core.accounting import read_stats
from pipeline.core.atomic import write_json
from pipeline.core.layout import RunLayout
from pipeline.core.printable import cells, line
from pipeline.registry import DOC_STAGES

console = Console(stderr=False, width=160)


def _fmt(n) -> str:
    if n is None:  # e.g. the filter's removed tokens under filter.count_removed_tokens: false
        return "not counted"
    return f"{n:,}" if isinstance(n, int) else str(n)


def print_doc_stage(stats: dict) -> None:
    t = Table(title=line(f"stage {stats['stage']}: documents per source (in = kept + removed + quarantined)"))
    for col in ("source", "in", "kept", "removed", "quarantined", "kept tokens", "top removal reasons"):
        t.add_column(col, justify="left" if col in ("source", "top removal reasons") else "right")
    for src, c in stats["sources"].items():
        reasons = c["removed"].get("reasons", {}) | c["quarantined"].get("reasons", {})
        top = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda x: (-x[1], x[0]))[:3])
        t.add_row(*cells(src, _fmt(c["in"]["docs"]), _fmt(c["kept"]["docs"]), _fmt(c["removed"]["docs"]),
                         _fmt(c["quarantined"]["docs"]), _fmt(c["kept"]["tokens"]), top))
    tot = stats["totals"]
    t.add_row(*(Text(v, style="bold") for v in ("total", *(_fmt(tot[p]["docs"]) for p in ("in", "kept", "removed", "quarantined")),
                                                 _fmt(tot["kept"]["tokens"]))), "")
    console.print(t)


def print_tokenize(stats: dict) -> None:
    t = Table(title=line(f"stage tokenize: Megatron indexed datasets ({stats['dtype']} tokens)"))
    for col in ("unit", "documents", "tokens (with EOS)", "of which repeats", "prefix"):
        t.add_column(col)
    for src, c in stats["sources"].items():
        for unit, u in c["units"].items():
            t.add_row(*cells(unit, _fmt(u["documents"]), _fmt(u["tokens"]), _fmt(u["documents"] - u["unique_documents"]),
                             os.path.basename(u["prefix"]) if u["prefix"] else "(empty: no prefix)"))
        if c["heldout_prefix"]:
            t.add_row(*cells(f"{src} (held out)", _fmt(c["heldout_documents"]), _fmt(c["heldout_tokens"]), "0",
                             os.path.basename(c["heldout_prefix"])))
    console.print(t)


def print_mix(stats: dict) -> None:
    for st in stats["plan"]["stages"]:
        t = Table(title=line(f"mixture stage {st['name']}: {st['tokens']:,} tokens"))
        for col in ("unit", "weight", "tokens planned", "unique tokens", "epochs"):
            t.add_column(col)
        for r in st["prefixes"]:
            t.add_row(*cells(r["unit"], f"{r['weight']:.4f}", _fmt(r["tokens_planned"]), _fmt(r["unique_tokens"]), f"{r['epochs']:.3f}"))
        console.print(t)
    if stats.get("plot"):
        console.print(line("plan plot: ", stats["plot"]))


def print_train(stats: dict) -> None:
    t = Table(title=line(f"stage train: {stats['steps']} steps, {stats['parameters']:,} parameters, exits {stats['exits']}"))
    t.add_column("exit")
    t.add_column("first loss")
    t.add_column("last loss")
    for st in stats["eval"]:
        t.add_column(f"eval {st}")
    for k in stats["first_loss"]:
        t.add_row(*cells(k, f"{stats['first_loss'][k]:.4f}", f"{stats['last_loss'][k]:.4f}",
                         *(f"{stats['eval'][st]['blend'].get(k, float('nan')):.4f}" for st in stats["eval"])))
    console.print(t)
    print_eval_sets(stats["eval"])


def print_eval_sets(evals: dict) -> None:
    """Held-out loss of every exit per evaluation set ("domain/source", "domain/*"), per curriculum stage."""
    for st, sets in evals.items():
        exits = list(sets["blend"])
        t = Table(title=line(f"held-out loss per domain after stage {st}"))
        t.add_column("set")
        for k in exits:
            t.add_column(k)
        for label, losses in sets.items():
            t.add_row(*cells(label, *(f"{losses.get(k, float('nan')):.4f}" for k in exits)))
        console.print(t)


def print_stage(stage: str, stats: dict) -> None:
    {"tokenize": print_tokenize, "mix": print_mix, "train": print_train, "filter": print_filter}.get(stage, print_doc_stage)(stats)


def print_filter(stats: dict) -> None:
    """The document table, then every removal reason per source and rule with a real example of each."""
    print_doc_stage(stats)
    t = Table(title=line("filter: documents removed per source and rule" + (" (retuned from stored signals)" if stats.get("retune") else "")))
    for col in ("source", "rule", "reason", "docs", "example"):
        t.add_column(col, justify="right" if col == "docs" else "left", overflow="fold")
    examples = stats.get("examples", {})
    for src, c in stats["sources"].items():
        for reason, n in sorted(c["removed"].get("reasons", {}).items(), key=lambda x: (-x[1], x[0])):
            rule, _, why = reason.partition(":")
            ex = (examples.get(src, {}).get(reason) or [{}])[0]
            snippet = " ".join(ex.get("text", "").split())[:70]
            t.add_row(*cells(src, rule, why, _fmt(n), f"{ex.get('id', '')}: {snippet}" if ex else ""))
    console.print(t)


# ------------------------------------------------------------------------------------------------ funnel
def funnel(layout: RunLayout) -> list[dict]:
    """One row per source: documents, bytes and tokens entering filtering (raw) and after each stage,
    then the tokens written and planned per curriculum stage."""
    rows: dict[str, dict] = {}
    for stage in DOC_STAGES:
        if not os.path.exists(layout.stats(stage)):
            continue
        for src, c in read_stats(layout.stats(stage))["sources"].items():
            row = rows.setdefault(src, {"source": src})
            if stage == "filter":
                row |= {"raw_docs": c["in"]["docs"], "raw_bytes": c["in"]["bytes"], "raw_tokens": c["in"]["tokens"]}
            row |= {f"{stage}_docs": c["kept"]["docs"], f"{stage}_bytes": c["kept"]["bytes"], f"{stage}_tokens": c["kept"]["tokens"]}
    if os.path.exists(layout.stats("tokenize")):
        for src, c in read_stats(layout.stats("tokenize"))["sources"].items():
            row = rows.setdefault(src, {"source": src})
            row["tokenized_tokens"] = c["tokens"] + c["heldout_tokens"]  # with one EOS per document, repeats included
            row["heldout_tokens"] = c["heldout_tokens"]
    if os.path.exists(layout.stats("mix")):
        for st in read_stats(layout.stats("mix"))["plan"]["stages"]:
            for r in st["prefixes"]:
                row = rows.setdefault(r["source"], {"source": r["source"]})
                key = f"mix_{st['name']}_tokens"
                row[key] = row.get(key, 0) + r["tokens_planned"]
    return list(rows.values())


def print_funnel(rows: list[dict]) -> None:
    """Three narrow tables (documents, tokens, bytes), one column per stage."""
    if not rows:
        return
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and k != "source"]
    for measure in ("docs", "tokens", "bytes"):
        picked = [c for c in cols if c.endswith(f"_{measure}")]
        if not picked:
            continue
        t = Table(title=line(f"funnel: {measure} per source per stage"))
        t.add_column("source")
        for c in picked:
            t.add_column(c[: -len(measure) - 1].replace("_", " "), justify="right")
        for r in rows:
            t.add_row(*cells(r["source"], *(_fmt(r.get(c, "")) for c in picked)))
        console.print(t)


def build_report(layout: RunLayout, write: bool = True) -> dict:
    """The run's report from its stats on disk; written to RUN_DIR/report.json unless ``write`` is false."""
    report: dict = {"run_dir": layout.root, "funnel": funnel(layout)}
    contamination = os.path.join(layout.stage("decontam"), "contamination.json")
    if os.path.exists(contamination):
        with open(contamination) as f:
            c = json.load(f)
        report["contamination"] = {
            b: {k: r[k] for k in ("items_indexed", "items_found", "documents", "documents_per_source", "actions", "examples")}
            for b, r in c["benchmarks"].items()
        }
        report["contamination_index"] = c["index"]
    for stage in ("mix", "train"):
        if os.path.exists(layout.stats(stage)):
            s = read_stats(layout.stats(stage))
            report[stage] = s["plan"] if stage == "mix" else {k: s[k] for k in ("steps", "exits", "first_loss", "last_loss", "eval")}
    if write:
        write_json(os.path.join(layout.root, "report.json"), report, indent=2, sort_keys=True)
    return report


def print_contamination(benchmarks: dict, index: dict, title: str = "contamination found by decontam") -> None:
    t = Table(title=line(title))
    for col in REPORT_COLUMNS:
        t.add_column(col)
    for row in report_rows({"benchmarks": benchmarks}):
        t.add_row(*cells(*row))
    console.print(t)
    if index.get("benchmarks_skipped"):
        console.print(line("benchmarks skipped (no data): ", ", ".join(index["benchmarks_skipped"])))
    if "reference" in index:
        ref = index["reference"]
        console.print(line(f"index: {index.get('ngrams_indexed', 0):,} n-grams, {index.get('index_bytes', 0) / 2**20:.1f} MiB; "
                           f"excluded {index.get('excluded_template', 0):,} template n-grams and {ref['excluded']:,} found in >= "
                           f"{ref['min_docs']} of {ref['documents']:,} clean reference documents"))
    if "corpus_common" in index:
        cc = index["corpus_common"]
        console.print(line(f"excluded {cc['excluded']:,} n-grams found in >= {cc['threshold']:,} of the corpus's "
                           f"{cc['documents']:,} documents (its own boilerplate; {cc['items_affected']:,} items keep their other "
                           f"n-grams)", *(f"\n  {e['documents']:,} docs: {e['ngram'][:80]!r} ({e['benchmark']} {e['item']})" for e in cc["examples"][:3])))


def print_report(report: dict) -> None:
    print_funnel(report["funnel"])
    if "contamination" in report:
        print_contamination(report["contamination"], report.get("contamination_index", {}))
    if "train" in report:
        tr = report["train"]
        t = Table(title=line(f"exit losses after {tr['steps']} steps"))
        t.add_column("exit")
        t.add_column("first")
        t.add_column("last")
        for k in tr["first_loss"]:
            t.add_row(*cells(k, f"{tr['first_loss'][k]:.4f}", f"{tr['last_loss'][k]:.4f}"))
        console.print(t)
        print_eval_sets(tr["eval"])
