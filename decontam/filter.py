"""The decontamination step: finds benchmark n-grams in each document and acts per domain.

Actions: ``drop`` marks the document ``removed_reason = contaminated:<benchmark>``; ``cut`` removes every
contaminated span widened by a margin of tokens on each side and keeps the rest when it is still at least
``cut_min_tokens`` long (otherwise it is dropped with ``contaminated_after_cut:<benchmark>``); ``flag``
keeps the document and only records the matches (``ruyi2 decontam-check``). Each affected document writes
one JSON line to ``<matches_folder>/<rank>.jsonl`` (id, source, action, matches with the original matched
text), from which the contamination report is built, whichever executor ran the step.
"""

from __future__ import annotations

import json

from datatrove.data import DocumentsPipeline
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep

from decontam.ngrams import NgramIndex, normalized_words, token_spans
from pipeline.core.documents import REMOVED_REASON
from pipeline.core.ranges import merge_ranges
from pipeline.core.tokens import TokenRecounter

MATCHES = "decontam_matches"
ACTIONS = ("drop", "cut", "flag")
MAX_RECORDED_MATCHES = 5
MAX_MATCHED_CHARS = 300


def cut_spans(text: str, spans: list[tuple[int, int]], token_ranges: list[tuple[int, int]]) -> str:
    """``text`` without the characters covered by ``token_ranges`` (token index ranges, end exclusive); a
    removed run reaching the text's start or end takes the surrounding whitespace, inner ones leave a
    paragraph break so the pieces do not run together."""
    pieces, last = [], 0
    for a, b in merge_ranges(token_ranges):
        start = 0 if a == 0 else spans[a][0]
        end = len(text) if b >= len(spans) else spans[b][0]  # up to the next kept token: its separator goes too
        pieces.append(text[last:start])
        last = end
    pieces.append(text[last:])
    return "\n\n".join(p.strip() for p in pieces if p.strip())


class NgramDecontaminationTagger(PipelineStep):
    """Finds benchmark n-grams (``decontam_matches``: benchmark, item, matched text) and applies the action
    of the document's domain (``actions``: domain -> drop|cut|flag, ``default_action`` otherwise)."""

    name = "🧪 Benchmark n-gram decontamination"
    type = "🔻 - FILTER"

    def __init__(self, index_path: str, matches_folder: str, default_action: str = "drop", actions: dict | None = None,
                 cut_margin_tokens: int = 32, cut_min_tokens: int = 64, tokenizer_path: str | None = None,
                 min_item_coverage: float = 0.0):
        super().__init__()
        self.min_item_coverage = min_item_coverage
        self.recount = TokenRecounter(tokenizer_path) if tokenizer_path else None  # n_tokens of cut documents
        for a in [default_action, *(actions or {}).values()]:
            if a not in ACTIONS:
                raise ValueError(f"unknown decontamination action {a!r}; known: {ACTIONS}")
        self.index_path = index_path
        self.matches_folder = get_datafolder(matches_folder)
        self.default_action, self.actions = default_action, dict(actions or {})
        self.cut_margin_tokens, self.cut_min_tokens = cut_margin_tokens, cut_min_tokens
        self._index: NgramIndex | None = None

    @property
    def index(self) -> NgramIndex:
        if self._index is None:
            self._index = NgramIndex.load(self.index_path)
        return self._index

    def _matches(self, text: str, spans: list[tuple[int, int]], tokens: list[str], hits, coverage: dict[int, float]) -> list[dict]:
        """The first hit of each item (up to MAX_RECORDED_MATCHES, the best covered items first), with the
        original text it matched and the share of the item the document covers."""
        out, seen = [], set()
        for pos, length, item in sorted(hits, key=lambda h: (-coverage[h[2]], h[0])):
            if item in seen:
                continue
            seen.add(item)
            bench, item_id = self.index.items[item]
            matched = text[spans[pos][0] : spans[pos + length - 1][1]]
            out.append({"benchmark": bench, "item": item_id, "ngram": " ".join(tokens[pos : pos + length]),
                        "text": matched[:MAX_MATCHED_CHARS], "coverage": round(coverage[item], 3)})
            if len(out) == MAX_RECORDED_MATCHES:
                break
        return out

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        idx = self.index
        with self.matches_folder.open(f"{rank:05d}.jsonl", "wt") as log:
            for doc in data:
                with self.track_time():
                    tokens = normalized_words(doc.text)
                    hits = idx.lookup_all(tokens)
                    coverage = idx.coverage(hits) if hits else {}
                    if hits and self.min_item_coverage:
                        hits = [h for h in hits if coverage[h[2]] >= self.min_item_coverage]
                        if not hits:
                            self.stat_update("below_min_item_coverage")  # a shared phrase, not the item
                self.stat_update("checked")
                if hits:
                    self._act(doc, tokens, hits, coverage, log)
                yield doc

    def _act(self, doc, tokens: list[str], hits, coverage: dict[int, float], log) -> None:
        spans = token_spans(doc.text)  # only for the rare documents with a hit
        matches = self._matches(doc.text, spans, tokens, hits, coverage)
        bench = matches[0]["benchmark"]
        action = self.actions.get(doc.metadata.get("domain"), self.default_action)
        record = {"id": doc.id, "source": doc.metadata.get("source"), "action": action, "matches": matches,
                  "matched_ngrams": len(hits), "tokens": len(tokens)}
        doc.metadata[MATCHES] = matches
        doc.metadata["decontam_matched_ngrams"] = len(hits)
        if action == "cut":
            m = self.cut_margin_tokens
            ranges = merge_ranges([(max(0, p - m), min(len(tokens), p + n + m)) for p, n, _ in hits])
            removed = sum(b - a for a, b in ranges)
            if len(tokens) - removed >= self.cut_min_tokens:
                before = len(doc.text)
                doc.text = cut_spans(doc.text, spans, ranges)
                doc.metadata["decontam_cut_tokens"] = removed
                if self.recount:
                    self.recount([doc])
                record.update(cut_tokens=removed, cut_chars=before - len(doc.text))
                self.stat_update(f"cut/{bench}")
            else:
                action = record["action"] = "drop"
                record["reason"] = "too short after cut"
                doc.metadata[REMOVED_REASON] = f"contaminated_after_cut:{bench}"
                self.stat_update(f"contaminated_after_cut/{bench}")
        elif action == "drop":
            doc.metadata[REMOVED_REASON] = f"contaminated:{bench}"
            self.stat_update(f"contaminated/{bench}")
        else:
            self.stat_update(f"flagged/{bench}")
        log.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
