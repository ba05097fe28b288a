"""The contamination report: per benchmark, which items were found, in how many documents of which source,
what was done to them (dropped, cut, flagged), with examples of the matched text."""

from __future__ import annotations

import glob
import os

from pipeline.core.records import records as read_records

MAX_EXAMPLES = 5


def contamination_report(matches_folder: str, index_stats: dict, n_gram: int, extra: dict | None = None) -> dict:
    """Reads the per-rank match logs of the decontamination step (sorted, so the report is deterministic)."""
    bench: dict[str, dict] = {
        b: {"items_indexed": s["items"], "items_too_short": s["too_short"], "items_found": 0, "documents": 0,
            "documents_per_source": {}, "actions": {}, "items": {}, "examples": []}
        for b, s in sorted(index_stats["benchmarks"].items())
    }
    records = [rec for path in sorted(glob.glob(os.path.join(matches_folder, "*.jsonl"))) for _, rec in read_records(path)]
    records.sort(key=lambda r: r["id"])
    for rec in records:
        for b in sorted({m["benchmark"] for m in rec["matches"]}):
            r = bench[b]
            r["documents"] += 1
            r["documents_per_source"][rec["source"]] = r["documents_per_source"].get(rec["source"], 0) + 1
            r["actions"][rec["action"]] = r["actions"].get(rec["action"], 0) + 1
        for m in rec["matches"]:
            r = bench[m["benchmark"]]
            r["items"].setdefault(m["item"], []).append(rec["id"])
            if len(r["examples"]) < MAX_EXAMPLES:
                r["examples"].append({"doc": rec["id"], "source": rec["source"], "item": m["item"], "action": rec["action"],
                                      "matched": m["text"], "coverage": m.get("coverage")})
    for r in bench.values():
        r["items_found"] = len(r["items"])
    index = {k: v for k, v in index_stats.items() if k != "benchmarks"}
    return {"n_gram": n_gram, "index": index, "documents_affected": len(records), "benchmarks": bench, **(extra or {})}


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
