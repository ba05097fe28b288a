"""The contamination report: per benchmark, which items were found, in how many documents of which source,
what was done to them (dropped, cut, flagged), with examples of the matched text.

The per-rank match logs are streamed: memory follows the benchmarks' items, never the corpus's matches. What
the report lists is chosen by document id (the smallest first), so it is the same however the matches were
split across ranks: per item the first ``MAX_IDS_PER_ITEM`` documents (``item_documents`` counts them all),
per benchmark the first ``MAX_EXAMPLES`` matches.
"""

from __future__ import annotations

import bisect
import glob
import itertools
import os

from pipeline.core.records import records as read_records

MAX_EXAMPLES = 5
MAX_IDS_PER_ITEM = 20


class Smallest:
    """The ``k`` smallest keys of a stream with their values, in key order; memory is ``k`` entries."""

    def __init__(self, k: int):
        self.k, self.entries = k, []

    def add(self, key, value) -> None:
        if len(self.entries) < self.k or key < self.entries[-1][0]:
            bisect.insort(self.entries, (key, value), key=lambda e: e[0])
            del self.entries[self.k:]

    def values(self) -> list:
        return [v for _, v in self.entries]


def contamination_report(matches_folder: str, index_stats: dict, n_gram: int, extra: dict | None = None) -> dict:
    """Reads the per-rank match logs of the decontamination step; deterministic (ordered by document id)."""
    bench: dict[str, dict] = {
        b: {"items_indexed": s["items"], "items_too_short": s["too_short"], "items_found": 0, "documents": 0,
            "documents_per_source": {}, "actions": {}, "items": {}, "item_documents": {}, "examples": []}
        for b, s in sorted(index_stats["benchmarks"].items())
    }
    item_ids: dict[tuple[str, str], Smallest] = {}
    examples = {b: Smallest(MAX_EXAMPLES) for b in bench}
    affected, seq = 0, itertools.count()
    for path in sorted(glob.glob(os.path.join(matches_folder, "*.jsonl"))):
        for _, rec in read_records(path):
            affected += 1
            for b in sorted({m["benchmark"] for m in rec["matches"]}):
                r = bench[b]
                r["documents"] += 1
                r["documents_per_source"][rec["source"]] = r["documents_per_source"].get(rec["source"], 0) + 1
                r["actions"][rec["action"]] = r["actions"].get(rec["action"], 0) + 1
            n = next(seq)
            for i, m in enumerate(rec["matches"]):
                key = (rec["id"], n, i)  # a document's matches in their order
                counts = bench[m["benchmark"]]["item_documents"]
                counts[m["item"]] = counts.get(m["item"], 0) + 1
                item_ids.setdefault((m["benchmark"], m["item"]), Smallest(MAX_IDS_PER_ITEM)).add(key, rec["id"])
                examples[m["benchmark"]].add(key, {"doc": rec["id"], "source": rec["source"], "item": m["item"],
                                                   "action": rec["action"], "matched": m["text"], "coverage": m.get("coverage")})
    for (b, item), ids in sorted(item_ids.items()):
        bench[b]["items"][item] = ids.values()
    for b, r in bench.items():
        r["items_found"] = len(r["items"])
        r["item_documents"] = dict(sorted(r["item_documents"].items()))
        r["examples"] = examples[b].values()
    index = {k: v for k, v in index_stats.items() if k != "benchmarks"}
    return {"n_gram": n_gram, "index": index, "documents_affected": affected, "benchmarks": bench, **(extra or {})}


def report_rows(report: dict) -> list[list[str]]:
    """One printable row per benchmark (used by the run report and ``ruyi2 decontam-check``)."""
    rows = []
    for b, r in report["benchmarks"].items():
        ex = r["examples"][0]["matched"].replace("\n", " ")[:60] if r["examples"] else ""
        rows.append([b, f"{r['items_indexed']:,}", f"{r['items_found']:,}", f"{r['documents']:,}",
                     ", ".join(f"{s} {n}" for s, n in sorted(r["documents_per_source"].items())),
                     ", ".join(f"{a} {n}" for a, n in sorted(r["actions"].items())), ex])
    return rows


REPORT_COLUMNS = ("benchmark", "items indexed", "items found", "documents", "per source", "actions", "example match")
