"""Per-stage document accounting: in = kept + removed + quarantined, per source, or the stage fails.

Counts are taken from the Parquet files a stage wrote (not from counters kept in memory), so they are
exactly what the next stage will read. Tokens are ``metadata.n_tokens``, counted once as documents leave
the filter stage (later stages that cut text re-count the documents they change).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import polars as pl

from pipeline.core.atomic import write_json
from pipeline.core.documents import QUARANTINE_REASON, REMOVED_REASON, TEXT_BYTES
from pipeline.core.errors import StageError


class AccountingError(StageError):
    """Documents went missing or appeared from nowhere: a bug, never tolerated."""


def _empty() -> dict[str, Any]:
    return {"docs": 0, "tokens": 0, "bytes": 0}


def folder_counts(folder: str, reason_key: str | None = None) -> dict[str, dict[str, Any]]:
    """{source: {docs, tokens, bytes[, reasons: {reason: docs}]}} for the document shards in ``folder``."""
    files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
    if not files:
        return {}
    md = pl.col("metadata")
    reason = md.str.json_path_match(f"$.{reason_key}") if reason_key else pl.lit(None, dtype=pl.String)
    df = (
        pl.scan_parquet(files)
        .select(
            source=md.str.json_path_match("$.source"),
            reason=reason,
            tokens=md.str.json_path_match("$.n_tokens").cast(pl.Int64),
            # a removed document keeps a prefix of its text; its full size is in text_bytes
            bytes=pl.coalesce(md.str.json_path_match(f"$.{TEXT_BYTES}").cast(pl.Int64), pl.col("text").str.len_bytes()),
        )
        .group_by("source", "reason")
        .agg(docs=pl.len(), tokens=pl.col("tokens").sum(), bytes=pl.col("bytes").sum())
        .sort("source", "reason", nulls_last=True)
        .collect(engine="streaming")
    )
    out: dict[str, dict[str, Any]] = {}
    for row in df.iter_rows(named=True):
        c = out.setdefault(row["source"], _empty() | ({"reasons": {}} if reason_key else {}))
        c["docs"] += row["docs"]
        c["tokens"] += row["tokens"] or 0
        c["bytes"] += row["bytes"] or 0
        if reason_key:
            c["reasons"][row["reason"] or "unspecified"] = c["reasons"].get(row["reason"] or "unspecified", 0) + row["docs"]
    return out


def stage_accounting(stage: str, stage_dir: str, input_docs: dict[str, int], sources: list[str]) -> dict:
    """Build and check the stats of a document stage from its output/, removed/ and quarantine/ folders."""
    kept = folder_counts(os.path.join(stage_dir, "output"))
    removed = folder_counts(os.path.join(stage_dir, "removed"), REMOVED_REASON)
    quarantined = folder_counts(os.path.join(stage_dir, "quarantine"), QUARANTINE_REASON)
    per_source, problems = {}, []
    for src in sources:
        k = kept.get(src, _empty())
        r = removed.get(src, _empty() | {"reasons": {}})
        q = quarantined.get(src, _empty() | {"reasons": {}})
        n_in = int(input_docs.get(src, 0))
        out_docs = k["docs"] + r["docs"] + q["docs"]
        if n_in != out_docs:
            problems.append(f"{src}: {n_in} in != {k['docs']} kept + {r['docs']} removed + {q['docs']} quarantined")
        per_source[src] = {
            "in": {"docs": n_in, "tokens": k["tokens"] + r["tokens"], "bytes": k["bytes"] + r["bytes"] + q["bytes"]},
            "kept": k,
            "removed": r,
            "quarantined": q,
        }
    stats = {"stage": stage, "sources": per_source, "totals": _totals(per_source)}
    if problems:
        raise AccountingError(f"stage {stage!r}: document counts do not add up:\n  " + "\n  ".join(problems))
    return stats


def _totals(per_source: dict) -> dict:
    tot: dict[str, dict[str, int]] = {}
    for counts in per_source.values():
        for part in ("in", "kept", "removed", "quarantined"):
            t = tot.setdefault(part, _empty())
            for key in ("docs", "tokens", "bytes"):
                t[key] += counts[part][key]
    return tot


def write_stats(path: str, stats: dict) -> None:
    """A stage's stats.json marks it finished: written atomically, so a kill leaves the old file or none."""
    write_json(path, stats, indent=2, sort_keys=True)


def read_stats(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def previous_kept(stats_path: str) -> dict[str, int]:
    """Documents kept per source by the stage whose stats are at ``stats_path``: the next stage's input."""
    return {src: c["kept"]["docs"] for src, c in read_stats(stats_path)["sources"].items()}
