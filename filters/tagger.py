"""Tag once: every enabled rule family's signals for every document, computed in one step and stored.

The tagger writes ``metadata["signals"]`` ({family group: {signal: value}}) and the same record, in read
order, to ``<attributes>/<rank>.jsonl.gz`` (Dolma's attribute files): ``ruyi2 filter --retune`` re-reads the
sources, joins these files back and re-applies thresholds without computing any signal again.

Documents failing a sanity test get no other signal (bounded time and memory on bad input). Text edits
(boilerplate lines, C4 lines) are not applied here: they are stored as kept-line ranges and applied to the
documents that pass (``filters/apply.py``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import time

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from filters.bad_words import bad_word_signals
from filters.boilerplate import boilerplate_signals
from filters.chinese import chinese_signals
from filters.classifier import quality_score
from filters.code import code_language, code_signals
from filters.config import RuleSet
from filters.heuristics import HeuristicSettings, compute_signals
from filters.language import LID_LANGUAGE, LID_SCORE, FastTextLanguageTagger, cjk_share
from filters.pii import pii_signals
from filters.rules import HEURISTIC_FAMILIES
from filters.sanity import sanity_reason, sanity_signals
from filters.tex import prose_view, tex_signals
from filters.url import url_signals
from pipeline.core.documents import REMOVED_REASON
from pipeline.core.tokens import N_TOKENS

SIGNALS = "signals"
SECONDS_STAT = "seconds/"  # seconds/<source>/<family>: the signals' profile
QUALITY_SCORE = "quality_score"


def produced_metadata(rules: RuleSet) -> set[str]:
    """The metadata keys the filter stage writes on every document it keeps under ``rules`` (what later
    stages, e.g. quality buckets or the dedup keeper, may read by name)."""
    return {SIGNALS, LID_LANGUAGE, LID_SCORE, N_TOKENS} | ({QUALITY_SCORE} if rules.classifier.enabled else set())


def heuristic_settings(rules: RuleSet, language: str) -> HeuristicSettings:
    c4 = rules.c4
    return HeuristicSettings(
        language=language if len(language) == 2 else "en",
        top_n=tuple(n for n, _ in rules.gopher_repetition.top_n_grams),
        dup_n=tuple(n for n, _ in rules.gopher_repetition.dup_n_grams),
        stop_words=tuple(rules.gopher_quality.stop_words),
        c4=c4.enabled,
        c4_split_paragraph=c4.split_paragraph,
        c4_remove_citations=c4.remove_citations,
        c4_filter_no_terminal_punct=c4.filter_no_terminal_punct,
        c4_min_words_per_line=c4.min_words_per_line,
        c4_max_word_length=c4.max_word_length,
        c4_filter_javascript=c4.filter_javascript,
        c4_filter_policy=c4.filter_policy,
        fineweb_short_line_length=rules.fineweb.short_line_length,
    )


class FamilyClock:
    """Seconds spent on each signal family (the filter's profile, ``stats.json`` ``profile``): ``lap(family)``
    charges the time since the previous lap to ``family``. Two clock reads per family and document."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def start(self) -> None:
        self._last = time.perf_counter()

    def lap(self, family: str) -> None:
        now = time.perf_counter()
        self.seconds[family] = self.seconds.get(family, 0.0) + now - self._last
        self._last = now


class _NoClock:
    def start(self) -> None:
        pass

    def lap(self, family: str) -> None:
        pass


def tag_document(text: str, metadata: dict, rules: RuleSet, language: str, lid, clock: FamilyClock | None = None) -> dict:
    """All signals of one document under one source's rules (``lid`` predicts (label, score)); ``clock``
    gets each family's time."""
    clock = clock or _NoClock()
    clock.start()
    sig: dict = {"sanity": sanity_signals(text, rules.sanity.max_chars)}
    clock.lap("sanity")
    if rules.sanity.enabled and sanity_reason(sig["sanity"], rules.sanity):
        return sig
    if rules.url.enabled:
        sig["url"] = url_signals(metadata.get("url"), rules.url.soft_word_threshold, rules.url.extra_domains)
        clock.lap("url")
    view = text
    if rules.boilerplate.enabled:
        sig["boilerplate"], view = boilerplate_signals(text, rules.boilerplate.min_template_repeats,
                                                       rules.boilerplate.max_template_line_chars)
        clock.lap("boilerplate")
    if rules.code.enabled:
        sig["code"] = code_signals(text, code_language(metadata, language))
        clock.lap("code")
    heuristic_view = view
    if rules.tex.enabled:
        sig["tex"] = tex_signals(view)
        if rules.tex.prose_view:
            heuristic_view = prose_view(view)
        clock.lap("tex")
    # language of the words a reader sees: for TeX the prose view (formulas and commands are no language)
    language_view = heuristic_view if rules.tex.enabled and rules.tex.prose_view else text
    label, score = lid(language_view)
    sig["language"] = {"lid_language": label, "lid_score": round(score, 4), "cjk_share": cjk_share(language_view)}
    clock.lap("language")
    if rules.bad_words.enabled:
        sig["bad_words"] = bad_word_signals(heuristic_view, rules.bad_words.words_file)
        clock.lap("bad_words")
    if any(getattr(rules, f).enabled for f in HEURISTIC_FAMILIES):
        sig["heuristics"], _ = compute_signals(heuristic_view, heuristic_settings(rules, language))
        clock.lap("heuristics")
    if rules.chinese.enabled:
        sig["chinese"] = chinese_signals(heuristic_view, [n for n, _ in rules.chinese.top_char_n_grams],
                                         [n for n, _ in rules.chinese.dup_char_n_grams])
        clock.lap("chinese")
    if rules.classifier.enabled:
        sig["classifier"] = {"score": quality_score(rules.classifier.model, view)}
        clock.lap("classifier")
    if rules.pii.enabled:
        sig["pii"] = pii_signals(view)
        clock.lap("pii")
    return sig


def attach_signals(metadata: dict, sig: dict) -> None:
    """Signals into the metadata, with the ones later stages read by name (language, quality score)."""
    metadata[SIGNALS] = sig
    if "language" in sig:
        metadata[LID_LANGUAGE] = sig["language"]["lid_language"]
        metadata[LID_SCORE] = sig["language"]["lid_score"]
    if "classifier" in sig:
        metadata[QUALITY_SCORE] = sig["classifier"]["score"]


def attribute_file(folder: str, rank: int) -> str:
    return os.path.join(folder, f"{rank:05d}.jsonl.gz")


def open_attributes(path: str):
    # mtime=0: the same signals give the same bytes on every run
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8")


class SignalTagger(PipelineStep):
    name = "🏷️ Filter signals"
    type = "🏷️ - TAGGER"

    def __init__(self, rules_per_source: dict[str, dict], languages: dict[str, str], attributes_folder: str):
        super().__init__()
        self.rules_per_source = rules_per_source
        self.languages = languages
        self.attributes_folder = attributes_folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rules = {name: RuleSet.model_validate(r) for name, r in self.rules_per_source.items()}
        lid = FastTextLanguageTagger()
        os.makedirs(self.attributes_folder, exist_ok=True)
        clocks: dict[str, FamilyClock] = {}
        with open_attributes(attribute_file(self.attributes_folder, rank)) as out:
            for doc in data:
                src = doc.metadata["source"]
                if REMOVED_REASON in doc.metadata:  # removed before the signals (a page with no extracted text)
                    sig = {}
                else:
                    clock = clocks.setdefault(src, FamilyClock())
                    with self.track_time():
                        sig = tag_document(doc.text, doc.metadata, rules[src], self.languages[src], lid.predict, clock)
                attach_signals(doc.metadata, sig)
                out.write(json.dumps({"id": doc.id, SIGNALS: sig}, ensure_ascii=False, sort_keys=True) + "\n")
                self.stat_update("tagged")
                yield doc
        for src, clock in sorted(clocks.items()):
            for family, seconds in sorted(clock.seconds.items()):
                self.stat_update(f"{SECONDS_STAT}{src}/{family}", value=seconds)
