"""The rule families in order: where each one's signals are stored and the test that reads them.

Signals are grouped per family in ``metadata["signals"]`` (the four web families share the fused
``heuristics`` group). ``first_failing_rule`` walks the enabled families of a source in RULE_ORDER and returns
the first ``(family, reason)``; the document's ``removed_reason`` is ``"<family>:<reason>"``.
"""

from __future__ import annotations

from filters.bad_words import bad_words_reason
from filters.boilerplate import boilerplate_reason
from filters.c4 import c4_reason
from filters.chinese import chinese_reason
from filters.classifier import classifier_reason
from filters.code import code_reason
from filters.config import RULE_ORDER, RuleSet
from filters.fineweb import fineweb_reason
from filters.gopher import gopher_quality_reason, gopher_repetition_reason
from filters.language import language_reason
from filters.sanity import sanity_reason
from filters.tex import tex_reason
from filters.thresholds import SignalMissing
from filters.url import url_reason

HEURISTIC_FAMILIES = ("gopher_repetition", "gopher_quality", "c4", "fineweb")
SIGNAL_GROUP = {f: "heuristics" for f in HEURISTIC_FAMILIES}

REASONS = {
    "sanity": sanity_reason,
    "url": url_reason,
    "boilerplate": boilerplate_reason,
    "code": code_reason,
    "tex": tex_reason,
    "bad_words": bad_words_reason,
    "gopher_repetition": gopher_repetition_reason,
    "gopher_quality": gopher_quality_reason,
    "c4": c4_reason,
    "fineweb": fineweb_reason,
    "chinese": chinese_reason,
    "classifier": classifier_reason,
}


def first_failing_rule(signals: dict, rules: RuleSet, source_language: str, doc_id: str = "?") -> tuple[str, str] | None:
    for family in RULE_ORDER:
        cfg = getattr(rules, family)
        if not cfg.enabled or family == "pii":
            continue
        group = SIGNAL_GROUP.get(family, family)
        if group not in signals:
            raise SignalMissing(
                f"document {doc_id}: filter rule {family!r} is on but its signals were not computed when the "
                "documents were tagged: run `ruyi2 filter` without --retune"
            )
        sig = signals[group]
        reason = language_reason(sig, cfg, source_language) if family == "language" else REASONS[family](sig, cfg)
        if reason:
            return family, reason
    return None
