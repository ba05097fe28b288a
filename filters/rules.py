"""The filter rules: datatrove's Gopher, C4 and FineWeb filters plus the language threshold, per source.

A ``RuleStep`` applies one rule family with each source's own settings (``FilterConfig.rules_for``). A
document that fails is not dropped here: it is marked with ``removed_reason = "<rule>:<reason>"`` and
passes on, so later rules skip it and the ``StageRouter`` at the end writes it to ``removed/``.
"""

from __future__ import annotations

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters.base_filter import get_filter_result

from filters.language import LID_LANGUAGE, LID_SCORE
from pipeline.documents import REMOVED_REASON
from pipeline.recipe import RuleSet, SourceConfig

RULE_ORDER = ("language", "gopher_repetition", "gopher_quality", "c4", "fineweb")


class LanguageThreshold:
    """Keeps documents whose stored fastText label is accepted with at least ``min_score``."""

    def __init__(self, languages: list[str], min_score: float):
        self.languages, self.min_score = set(languages), min_score

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lang, score = doc.metadata.get(LID_LANGUAGE), doc.metadata.get(LID_SCORE, 0.0)
        if lang not in self.languages:
            return False, f"not_{'_'.join(sorted(self.languages))}({lang})"
        if score < self.min_score:
            return False, "low_language_score"
        return True


def _word_language(source: SourceConfig) -> str:
    # datatrove picks its word tokenizer by language; code has none, so count it as English words
    return source.language if len(source.language) == 2 else "en"


def build_rule(rule: str, rules: RuleSet, source: SourceConfig):
    """The filter object for one rule and one source, or None when the rule is off for it."""
    cfg = getattr(rules, rule)
    if not cfg.enabled:
        return None
    params = cfg.model_dump(exclude={"enabled"})
    if rule == "language":
        return LanguageThreshold(params["languages"] or [source.language], params["min_score"])
    lang = _word_language(source)
    if rule == "gopher_quality":
        return GopherQualityFilter(**params, language=lang)
    if rule == "gopher_repetition":
        params["top_n_grams"] = tuple(map(tuple, params["top_n_grams"]))
        params["dup_n_grams"] = tuple(map(tuple, params["dup_n_grams"]))
        return GopherRepetitionFilter(**params, language=lang)
    if rule == "c4":
        return C4QualityFilter(**params, language=lang)
    if rule == "fineweb":
        return FineWebQualityFilter(**params, language=lang)
    raise ValueError(f"unknown rule {rule!r}")


class RuleStep(PipelineStep):
    """Applies one rule family; each source gets the rule built from its own settings (or none)."""

    type = "🔻 - FILTER"

    def __init__(self, rule: str, rules_per_source: dict[str, dict], sources: list[SourceConfig]):
        self.name = f"🔻 {rule}"  # before PipelineStep.__init__, which names the stats block after it
        super().__init__()
        self.rule = rule
        self.rules_per_source = rules_per_source
        self.sources = {s.name: s for s in sources}
        self._filters: dict | None = None

    def _filter_for(self, source: str):
        if self._filters is None:
            self._filters = {
                name: build_rule(self.rule, RuleSet.model_validate(rs), self.sources[name])
                for name, rs in self.rules_per_source.items()
            }
        return self._filters.get(source)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            flt = None if doc.metadata.get(REMOVED_REASON) else self._filter_for(doc.metadata["source"])
            if flt is not None:
                with self.track_time():
                    keep, reason = get_filter_result(flt.filter(doc))
                self.stat_update("checked")
                if not keep:
                    doc.metadata[REMOVED_REASON] = f"{self.rule}:{reason or 'failed'}"
                    self.stat_update(f"removed/{reason or 'failed'}")
            yield doc


def rules_per_source(filter_cfg, sources: list[SourceConfig]) -> dict[str, dict]:
    return {s.name: filter_cfg.rules_for(s).model_dump() for s in sources}
