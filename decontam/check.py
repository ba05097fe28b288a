"""``ruyi2 decontam-check PATH``: the contamination check on any dataset (SFT data, a candidate source),
without running the flow. Nothing is removed; matches are reported.

Records are read with the project's one record reader: every record is either checked or named in the
report with its file, line (or row) and reason (malformed JSON, not an object, no string text field), so
``records_read == documents_checked + records_unreadable`` always holds.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from typing import Iterator

from datatrove.data import Document

from decontam.build import apply_corpus_counts, build_index
from decontam.corpus_common import CorpusNgramCounter
from decontam.filter import NgramDecontaminationTagger
from decontam.report import contamination_report
from pipeline.core.atomic import write_json
from pipeline.core.paths import match_files
from pipeline.core.records import BadRecord, OversizedRowGroup, jsonl_records, parquet_rows

READABLE = ("*.jsonl", "*.jsonl.gz", "*.parquet")
MAX_NAMED = 20  # unreadable records listed in the report (all are counted)
MAX_ID_CHARS = 4096  # a longer or non-scalar id is replaced by the record's file:line


def dataset_files(path: str) -> list[str]:
    return match_files([path], READABLE, what="decontam-check")


class _Tally:
    def __init__(self):
        self.read = 0
        self.unreadable: dict[str, int] = {}
        self.examples: list[dict] = []

    def bad(self, where: str, reason: str) -> None:
        self.unreadable[reason] = self.unreadable.get(reason, 0) + 1
        if len(self.examples) < MAX_NAMED:
            self.examples.append({"record": where, "reason": reason})


def _documents(files: list[str], root: str, text_key: str, id_key: str, tally: _Tally) -> Iterator[Document]:
    for f in files:
        rel = os.path.relpath(f, root)
        try:
            rows = parquet_rows(f, error=None) if f.endswith(".parquet") else jsonl_records(f)
            for n, rec in rows:
                tally.read += 1
                where = f"{f} row {n}" if f.endswith(".parquet") else f"{f}:{n}"
                if isinstance(rec, BadRecord):
                    tally.bad(where, rec.reason)
                elif isinstance(rec, OversizedRowGroup):
                    tally.bad(f"{f} row group {rec.index} ({rec.rows:,} rows)", "oversized_row_group")
                elif not isinstance(rec.get(text_key), str):
                    tally.bad(where, f"no string field {text_key!r}")
                else:
                    rid = rec.get(id_key)
                    usable = isinstance(rid, (str, int)) and not isinstance(rid, bool) and 0 < len(str(rid)) <= MAX_ID_CHARS
                    yield Document(text=rec[text_key], id=str(rid) if usable else f"{rel}:{n}",
                                   metadata={"source": rel})
        except Exception as e:  # noqa: BLE001 - a truncated .gz or a broken Parquet file: named, the check goes on
            tally.read += 1
            tally.bad(f"{f} (the rest of the file: {type(e).__name__}: {e})", "unreadable_file")


def decontam_check(path: str, cfg, out: str, text_key: str = "text", id_key: str = "id") -> dict:
    """``cfg`` is a ``DecontamConfig``; the report is written to ``out`` (JSON) and returned."""
    files = dataset_files(path)
    root = path if os.path.isdir(path) else os.path.dirname(path)
    tally = _Tally()
    with tempfile.TemporaryDirectory(prefix="decontam-check-") as work:
        index_path, index_stats = build_index(cfg, os.path.join(work, "index"))
        if cfg.corpus_common_fraction is not None:  # the dataset counted first, as the decontam stage does
            counts = os.path.join(work, "corpus_ngrams")
            deque(CorpusNgramCounter(index_path, counts).run(_documents(files, root, text_key, id_key, _Tally())), maxlen=0)
            index_path, index_stats = apply_corpus_counts(cfg, index_path, counts, index_stats)
        matches = os.path.join(work, "matches")
        tagger = NgramDecontaminationTagger(index_path, matches, default_action="flag", min_item_coverage=cfg.min_item_coverage)
        checked = sum(1 for _ in tagger.run(_documents(files, root, text_key, id_key, tally)))
        extra = {"dataset": os.path.abspath(path), "records_read": tally.read, "documents_checked": checked,
                 "records_unreadable": sum(tally.unreadable.values()), "unreadable_reasons": tally.unreadable,
                 "unreadable_examples": tally.examples}
        report = contamination_report(matches, index_stats, cfg.n_gram, extra)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_json(out, report, indent=2, sort_keys=True, ensure_ascii=False)
    return report
