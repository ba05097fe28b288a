"""Filter many: thresholds applied to stored signals, then the text edits of the documents that pass.

``ThresholdStep`` marks a failing document ``removed_reason = "<family>:<reason>"`` (the router writes it to
removed/ with its original text) and keeps a few real examples per source and reason for the report. A
passing document gets its edits, in the order the tagger saw them: boilerplate lines, C4 lines, then PII
redaction. ``StoredSignals`` is the retune path's tagger: it joins the attribute files back onto the
documents, in read order, and fails on any mismatch (the sources changed since they were tagged).
"""

from __future__ import annotations

import os

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from filters.boilerplate import boilerplate_edit
from filters.c4 import c4_edit
from filters.config import RuleSet
from filters.pii import redact
from filters.rules import first_failing_rule
from filters.tagger import SIGNALS, attach_signals, attribute_file
from pipeline.core.atomic import write_json
from pipeline.core.documents import REMOVED_REASON
from pipeline.core.records import records

EXAMPLE_CHARS = 300


def apply_edits(text: str, sig: dict, rules: RuleSet) -> str:
    if rules.boilerplate.enabled and "boilerplate" in sig:
        text = boilerplate_edit(text, sig["boilerplate"]["kept"])
    if rules.c4.enabled and "heuristics" in sig:
        text = c4_edit(text, sig["heuristics"], rules.c4.remove_citations)
    if rules.pii.enabled and rules.pii.redact:
        text = redact(text, rules.pii.emails, rules.pii.ips)
    return text


class ThresholdStep(PipelineStep):
    name = "🔻 Filter thresholds"
    type = "🔻 - FILTER"

    def __init__(self, rules_per_source: dict[str, dict], languages: dict[str, str], examples_folder: str,
                 examples_per_reason: int = 3):
        super().__init__()
        self.rules_per_source = rules_per_source
        self.languages = languages
        self.examples_folder = examples_folder
        self.examples_per_reason = examples_per_reason

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rules = {name: RuleSet.model_validate(r) for name, r in self.rules_per_source.items()}
        examples: dict[str, dict[str, list]] = {}
        for doc in data:
            src = doc.metadata["source"]
            sig = doc.metadata[SIGNALS]
            with self.track_time():
                earlier = doc.metadata.get(REMOVED_REASON)  # removed before the signals (extraction)
                failed = tuple(earlier.split(":", 1)) if earlier else first_failing_rule(sig, rules[src], self.languages[src], doc.id)
                if failed is None:
                    doc.text = apply_edits(doc.text, sig, rules[src])
                    if not doc.text.strip():
                        failed = ("edit", "empty_after_edit")
            if failed:
                reason = f"{failed[0]}:{failed[1]}"
                doc.metadata[REMOVED_REASON] = reason
                self.stat_update(f"removed/{reason}")
                kept = examples.setdefault(src, {}).setdefault(reason, [])
                if len(kept) < self.examples_per_reason:
                    kept.append({"id": doc.id, "text": doc.text[:EXAMPLE_CHARS]})
            else:
                self.stat_update("kept")
            yield doc
        os.makedirs(self.examples_folder, exist_ok=True)
        write_json(os.path.join(self.examples_folder, f"{rank:05d}.json"), examples, ensure_ascii=False, sort_keys=True, indent=1)


class SignalFileMismatch(RuntimeError):
    pass


class StoredSignals(PipelineStep):
    """Joins ``<attributes>/<rank>.jsonl.gz`` back onto the documents of the same rank, in order."""

    name = "📎 Stored signals"
    type = "🏷️ - TAGGER"

    def __init__(self, attributes_folder: str):
        super().__init__()
        self.attributes_folder = attributes_folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = attribute_file(self.attributes_folder, rank)
        hint = "the sources changed since they were tagged: run `ruyi2 filter` without --retune"
        if not os.path.exists(path):
            raise SignalFileMismatch(f"{path}: missing ({hint})")
        stored = records(path, SignalFileMismatch)  # streamed in step with the documents
        for line_no, doc in enumerate(data, 1):
            rec = next(stored, None)
            if rec is None:
                raise SignalFileMismatch(f"{path}: ends at line {line_no - 1} but the sources have more documents ({hint})")
            where, rec = rec
            if rec["id"] != doc.id:
                raise SignalFileMismatch(f"{where}: signals of {rec['id']!r} but the sources give {doc.id!r} ({hint})")
            attach_signals(doc.metadata, rec[SIGNALS])
            self.stat_update("joined")
            yield doc
        if next(stored, None) is not None:
            raise SignalFileMismatch(f"{path}: has more documents than the sources give ({hint})")
