"""Typed settings of every filter rule family, with their defaults per domain and language.

Each family has its switch (``enabled``) and its thresholds. Fields marked ``tag_time`` change what the
tagger computes (a model, an n-gram size, a line edit): ``ruyi2 filter --retune`` refuses a change to one
of them and names it, because retuning only re-applies thresholds to stored signals.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, Field, create_model, model_serializer

from filters.code import CodeLanguage
from pipeline.core.config import Domain, ReadLimits, Strict

TAG = {"tag_time": True}


class Patch(Strict):
    """A partial override: only the keys that were set are part of it, also when it is written out (a
    recipe saved with its run and loaded again means the same thing)."""

    @model_serializer(mode="wrap")
    def _only_set(self, handler):
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}


def patch_of(model: type[BaseModel]) -> type[Patch]:
    """A partial override of ``model``: every field optional and unset by default, with the same types and
    bounds; unknown keys are still errors, and nested sections become patches too."""
    fields: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            ann = patch_of(ann)
        elif f.metadata:
            ann = Annotated[(ann, *f.metadata)]
        fields[name] = (Optional[ann], None)
    return create_model(f"{model.__name__}Patch", __base__=Patch, __doc__=f"Partial {model.__name__}.", **fields)


class SanityRule(Strict):
    """Bad input, decided before any other signal is computed (bounds the tagger's time and memory)."""

    # all tag-time: a document failing one is not tagged further, which is what bounds the tagger's work
    enabled: bool = Field(True, json_schema_extra=TAG)
    max_chars: int = Field(2_000_000, ge=1, json_schema_extra=TAG, description="larger documents are not tagged: too_large")
    max_line_chars: int = Field(
        200_000, ge=1, json_schema_extra=TAG, description="a longer line (one-line dumps, minified blobs): giant_line"
    )
    max_binary_fraction: float = Field(
        0.001, ge=0, le=1, json_schema_extra=TAG, description="share of control or U+FFFD characters: binary"
    )


class LanguageRule(Strict):
    enabled: bool = True
    languages: list[str] | None = Field(None, description="accepted fastText labels; default: the source's language")
    min_score: float = Field(0.65, ge=0, le=1)
    min_scores: dict[str, float] = Field(default_factory=dict, description="per-language score threshold, e.g. {zh: 0.5}")
    # lid.176 reads one label per document: a Chinese page full of English terms may come out `en` at a
    # low score, and an English page with a CJK half still `en`. Script shares decide those deliberately.
    mixed_max_cjk: float = Field(0.3, ge=0, le=1, description="non-CJK targets: more CJK among letters is mixed_script")
    mixed_min_cjk: float = Field(0.3, ge=0, le=1, description="CJK targets: keep a document with at least this CJK share")


class GopherQualityRule(Strict):
    enabled: bool = True
    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: float = 3
    max_avg_word_length: float = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    max_non_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    stop_words: list[str] = Field(
        default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"], json_schema_extra=TAG
    )


class GopherRepetitionRule(Strict):
    enabled: bool = True
    dup_line_frac: float = 0.3
    dup_para_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    dup_para_char_frac: float = 0.2
    # the n of each pair is tag-time (its signal must exist); the fraction is a threshold
    top_n_grams: list[tuple[int, float]] = [(2, 0.2), (3, 0.18), (4, 0.16)]
    dup_n_grams: list[tuple[int, float]] = [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]


class C4Rule(Strict):
    enabled: bool = Field(True, json_schema_extra=TAG)  # its line edit shapes the text FineWeb sees
    # C4 judges lines (as in the paper); false: spaCy sentences of the whole document, kept ones joined by spaces
    split_paragraph: bool = Field(True, json_schema_extra=TAG)
    remove_citations: bool = Field(True, json_schema_extra=TAG)
    filter_no_terminal_punct: bool = Field(True, json_schema_extra=TAG)
    min_num_sentences: int = 5
    min_words_per_line: int = Field(3, json_schema_extra=TAG)
    max_word_length: int = Field(1000, json_schema_extra=TAG)
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = Field(True, json_schema_extra=TAG)
    filter_curly_bracket: bool = True
    filter_policy: bool = Field(True, json_schema_extra=TAG)


class FineWebRule(Strict):
    enabled: bool = True
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = Field(30, json_schema_extra=TAG)
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


class ChineseRule(Strict):
    """Chinese as a first-class target: jieba words, CJK character counts, character-level repetition."""

    enabled: bool = False
    min_cjk_chars: int = Field(100, ge=0, description="fewer Chinese characters: too_few_cjk_chars")
    min_words: int = Field(30, ge=0, description="fewer jieba words: too_few_words")
    max_avg_word_length: float = Field(4.0, gt=0, description="jieba words longer on average: unsegmentable text")
    # a Chinese word is ~1.5 characters: Gopher's word 5-10-grams are ~8-15 characters, and technical
    # Chinese repeats its terms, so the duplicated-n-gram rules start at 10 characters
    top_char_n_grams: list[tuple[int, float]] = [(2, 0.2), (3, 0.18), (4, 0.16)]
    dup_char_n_grams: list[tuple[int, float]] = [(10, 0.2), (15, 0.17), (20, 0.15)]


class CodeThresholds(Strict):
    """Source files: line lengths, alphanumeric share, generated/minified/encoded data, license-only, size."""

    max_bytes: int = Field(1_000_000, ge=1)
    min_bytes: int = Field(20, ge=0)
    max_line_length: int = Field(1000, ge=1)
    max_mean_line_length: float = Field(100, gt=0)
    min_alnum_fraction: float = Field(0.25, ge=0, le=1)
    max_encoded_fraction: float = Field(0.5, ge=0, le=1, description="share of characters in base64/hex/escape runs")
    max_encoded_run: int = Field(1024, ge=1, description="longest single encoded run, in characters")
    drop_autogenerated: bool = True
    drop_license_only: bool = True


CodeThresholdsPatch = patch_of(CodeThresholds)


class CodeRule(CodeThresholds):
    enabled: bool = False
    per_language: dict[CodeLanguage, CodeThresholdsPatch] = Field(
        default_factory=lambda: {
            # markup and data files are mostly punctuation and long lines by nature
            "html": CodeThresholdsPatch(min_alnum_fraction=0.15),
            "json": CodeThresholdsPatch(min_alnum_fraction=0.15, max_mean_line_length=200),
            "markdown": CodeThresholdsPatch(max_mean_line_length=200), "css": CodeThresholdsPatch(min_alnum_fraction=0.2),
        },
        description="programming language -> overrides of the thresholds above",
    )

    def thresholds_for(self, language: str) -> dict[str, Any]:
        patch = self.per_language.get(language)
        return self.model_dump(exclude={"per_language"}) | (patch.model_dump() if patch else {})


class TexRule(Strict):
    """TeX sources: web heuristics read the prose view (math, commands and comments masked), never the TeX."""

    enabled: bool = Field(False, json_schema_extra=TAG)
    prose_view: bool = Field(True, json_schema_extra=TAG, description="heuristic signals computed on the prose view")
    drop_unbalanced_math: bool = Field(True, description="an odd number of unescaped $ (broken TeX): unbalanced_math")
    max_math_fraction: float = Field(0.9, ge=0, le=1, description="more math than this share of characters: math_only")


class BoilerplateRule(Strict):
    """Line-level cleaning of web pages: cookie, JavaScript and navigation lines, templated repeated lines."""

    enabled: bool = Field(False, json_schema_extra=TAG)  # its line edit shapes the text every later rule reads
    min_template_repeats: int = Field(3, ge=2, json_schema_extra=TAG, description="a line shape repeated this often is templated")
    max_template_line_chars: int = Field(120, ge=1, json_schema_extra=TAG)
    max_removed_fraction: float = Field(0.6, ge=0, le=1, description="more lines removed than this: mostly_boilerplate")


class UrlRule(Strict):
    """datatrove's URLFilter (its bundled block lists) on ``metadata.url``; documents without a url pass."""

    enabled: bool = False
    soft_word_threshold: int = Field(2, ge=1, json_schema_extra=TAG)
    extra_domains: list[str] = Field(default_factory=list, json_schema_extra=TAG)


class BadWordsRule(Strict):
    """Share of words on the bad-word list (datatrove's banned_words.txt by default, or a file)."""

    enabled: bool = False
    words_file: str | None = Field(None, json_schema_extra=TAG, description="one word per line; default datatrove's list")
    max_fraction: float = Field(0.01, ge=0, le=1)
    max_distinct: int = Field(10, ge=1, description="this many different bad words: too_many_bad_words")


class PiiRule(Strict):
    """E-mail and public IP address redaction (datatrove's PIIFormatter) of kept documents; counts always stored."""

    enabled: bool = True
    redact: bool = False
    emails: bool = True
    ips: bool = True


class ClassifierRule(Strict):
    """A fastText quality classifier (``ruyi2 classifier train``); the score is stored as ``quality_score``."""

    enabled: bool = False
    model: str | None = Field(None, json_schema_extra=TAG, description="model.bin written by `ruyi2 classifier train`")
    min_score: float = Field(0.0, ge=0, le=1, description="P(positive) below this: low_quality_score")


class RuleSet(Strict):
    """The rules applied to one source, in this order (a document's first failing rule names its reason)."""

    sanity: SanityRule = SanityRule()
    language: LanguageRule = LanguageRule()
    url: UrlRule = UrlRule()
    boilerplate: BoilerplateRule = BoilerplateRule()
    code: CodeRule = CodeRule()
    tex: TexRule = TexRule()
    bad_words: BadWordsRule = BadWordsRule()
    gopher_repetition: GopherRepetitionRule = GopherRepetitionRule()
    gopher_quality: GopherQualityRule = GopherQualityRule()
    c4: C4Rule = C4Rule()
    fineweb: FineWebRule = FineWebRule()
    chinese: ChineseRule = ChineseRule()
    classifier: ClassifierRule = ClassifierRule()
    pii: PiiRule = PiiRule()


RULE_ORDER = tuple(RuleSet.model_fields)


def _off(*rules: str) -> dict:
    return {r: {"enabled": False} for r in rules}


def _on(*rules: str) -> dict:
    return {r: {"enabled": True} for r in rules}


RuleSetPatch = patch_of(RuleSet)
WEB_RULES = ("gopher_repetition", "gopher_quality", "c4", "fineweb")
TECHNICAL_QUALITY = {"max_non_alpha_words_ratio": 0.65}
# Web-text heuristics destroy code and TeX (curly brackets, short lines, symbol ratios): each domain gets
# the families that fit it; a recipe can override any of it.
DEFAULT_DOMAIN_OVERRIDES: dict[str, Strict] = {domain: RuleSetPatch.model_validate(patch) for domain, patch in {
    "web": _on("url", "boilerplate", "bad_words"),
    "forum": _on("boilerplate", "bad_words"),
    "code": _off("language", *WEB_RULES) | _on("code"),
    # math and papers keep their TeX: the web rules judge the prose view, C4 (curly brackets) is off, and
    # technical prose around masked formulas is denser in symbols and set phrases than web text
    "math": _off("c4") | _on("tex") | {"gopher_quality": TECHNICAL_QUALITY, "fineweb": {"char_duplicates_ratio": 0.05}},
    "paper": _off("c4") | _on("tex") | {"gopher_quality": TECHNICAL_QUALITY, "fineweb": {"char_duplicates_ratio": 0.05}},
    # synthetic reasoning data is worked problems: formulas and steps, judged like math
    "synthetic": _off("c4") | _on("tex") | {"gopher_quality": TECHNICAL_QUALITY, "fineweb": {"char_duplicates_ratio": 0.05}},
    # verse and dialogue: short lines without terminal punctuation are the norm, not boilerplate
    "book": _off("c4", "fineweb"),
}.items()}
# Chinese: C4's terminal punctuation and Gopher's English word lengths and stop words do not apply; the
# Chinese family's jieba words and character repetition take their place.
DEFAULT_LANGUAGE_OVERRIDES: dict[str, Strict] = {language: RuleSetPatch.model_validate(patch) for language, patch in {
    # a Chinese line of 12 characters says as much as an English line of 30
    "zh": _off("c4", "gopher_quality", "gopher_repetition")
    | {"chinese": {"enabled": True}, "language": {"min_score": 0.5}, "fineweb": {"short_line_length": 12}},
}.items()}
# settings that name a file: made absolute against the recipe's folder, checked to exist before any work
FILE_SETTINGS = (("classifier", "model"), ("bad_words", "words_file"))


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class ExtractSettings(Strict):
    """HTML to text for ``warc`` sources (``filters/extract.py``), before any signal."""

    extractor: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura", description="trafilatura with FineWeb's settings, or resiliparse's main-content extraction (faster)")
    timeout_s: float = Field(1.0, gt=0, description="a page taking longer is removed as extract:timeout")


class FilterConfig(Strict):
    rules: RuleSet = RuleSet()
    extract: ExtractSettings = Field(ExtractSettings(), description="HTML extraction of warc sources' pages")
    # partial rule sets, merged over the built-in defaults key by key, so naming one domain keeps the others'
    # defaults; each is typed like ``rules``, so a misspelt family or setting is an error at load time
    per_domain: dict[Domain, RuleSetPatch] = {}
    per_language: dict[str, RuleSetPatch] = {}
    per_source: dict[str, RuleSetPatch] = {}
    examples_per_reason: int = Field(3, ge=0, description="real examples kept per source and removal reason in the stats")
    read: ReadLimits = Field(ReadLimits(), description="bounds on one input record, applied as the sources are read")
    count_removed_tokens: bool = Field(
        True, description="tokenize removed documents too, for the funnel's raw tokens; false: removed documents are "
                          "reported in documents and bytes, their tokens as not counted (on web text, where most bytes "
                          "are removed, most of the token counter's time)")

    def rules_for(self, source) -> RuleSet:
        """rules < built-in domain < built-in language < per_domain < per_language < per_source (later wins)."""
        merged = self.rules.model_dump()
        for layer in (
            DEFAULT_DOMAIN_OVERRIDES.get(source.domain),
            DEFAULT_LANGUAGE_OVERRIDES.get(source.language),
            self.per_domain.get(source.domain),
            self.per_language.get(source.language),
            self.per_source.get(source.name),
        ):
            if layer is not None:
                merged = deep_merge(merged, layer.model_dump())
        return RuleSet.model_validate(merged)

    def _layers(self):
        yield "filter.rules", self.rules
        for kind in ("per_domain", "per_language", "per_source"):
            for key, patch in getattr(self, kind).items():
                yield f"filter.{kind}.{key}", patch

    def file_settings(self):
        """(recipe key, family settings, field) of every file path set anywhere in the section."""
        for where, layer in self._layers():
            for family, key in FILE_SETTINGS:
                settings = getattr(layer, family)
                if settings is not None and getattr(settings, key):
                    yield f"{where}.{family}.{key}", settings, key


def tag_time_settings(rules: RuleSet) -> dict[str, Any]:
    """{"family.field": value} of every tag-time setting of the enabled families (n-gram sizes included)."""
    out: dict[str, Any] = {}
    for family in RULE_ORDER:
        cfg = getattr(rules, family)
        # a family whose switch changes the text the others read is recorded on or off
        if (type(cfg).model_fields["enabled"].json_schema_extra or {}).get("tag_time") or cfg.enabled:
            out[f"{family}.enabled"] = cfg.enabled
        if not cfg.enabled:
            continue
        for name, field in type(cfg).model_fields.items():
            if name != "enabled" and (field.json_schema_extra or {}).get("tag_time"):
                out[f"{family}.{name}"] = getattr(cfg, name)
    ngram_sizes = {
        "gopher_repetition": ("top_n_grams", "dup_n_grams"),
        "chinese": ("top_char_n_grams", "dup_char_n_grams"),
    }
    for family, keys in ngram_sizes.items():
        if getattr(rules, family).enabled:
            for key in keys:
                out[f"{family}.{key}[n]"] = sorted(n for n, _ in getattr(getattr(rules, family), key))
    return out
