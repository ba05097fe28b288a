"""``ruyi2 decontam-check PATH``: the contamination check on any dataset (SFT data, a candidate source),
without running the flow. Every record is kept; matches are only reported."""

from __future__ import annotations

import glob
import json
import os
import tempfile

from datatrove.pipeline.readers import JsonlReader, ParquetReader

from decontam.build import build_index
from decontam.filter import NgramDecontaminationTagger
from decontam.report import contamination_report

READABLE = ("*.jsonl", "*.jsonl.gz", "*.json", "*.parquet")


def dataset_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    files = sorted({f for p in READABLE for f in glob.glob(os.path.join(path, "**", p), recursive=True)})
    if not files:
        raise FileNotFoundError(f"{path}: no {', '.join(READABLE)} file to check")
    return files


def _documents(files: list[str], root: str, text_key: str, id_key: str):
    for f in files:
        folder, name = os.path.dirname(f) or ".", os.path.basename(f)
        cls = ParquetReader if f.endswith(".parquet") else JsonlReader
        reader = cls(folder, glob_pattern=name, text_key=text_key, id_key=id_key, default_metadata={"source": os.path.relpath(f, root)})
        for doc in reader.run():
            yield doc


def decontam_check(path: str, cfg, out: str, text_key: str = "text", id_key: str = "id") -> dict:
    """``cfg`` is a ``DecontamConfig``; the report is written to ``out`` (JSON) and returned."""
    files = dataset_files(path)
    root = path if os.path.isdir(path) else os.path.dirname(path)
    with tempfile.TemporaryDirectory(prefix="decontam-check-") as work:
        index_path, index_stats = build_index(cfg, os.path.join(work, "index"))
        matches = os.path.join(work, "matches")
        tagger = NgramDecontaminationTagger(index_path, matches, default_action="flag")
        checked = sum(1 for _ in tagger.run(_documents(files, root, text_key, id_key)))
        report = contamination_report(matches, index_stats, cfg.n_gram, {"dataset": os.path.abspath(path), "documents_checked": checked})
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True, ensure_ascii=False)
    return report
