"""Counting tokens once, at ingest, so every stage's funnel can report tokens without re-tokenizing."""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from mixtures.tokenizer import load_tokenizer

N_TOKENS = "n_tokens"


class TokenCountTagger(PipelineStep):
    """Stores ``metadata["n_tokens"]`` (tokens of the text, without the end-of-document token)."""

    name = "🔢 Token count"
    type = "🏷️ - TAGGER"

    def __init__(self, tokenizer_path: str, batch_size: int = 256):
        super().__init__()
        self.tokenizer_path = tokenizer_path
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tok = load_tokenizer(self.tokenizer_path)
        for batch in batched(data, self.batch_size):
            with self.track_time(unit="batch"):
                encodings = tok.encode_batch_fast([d.text for d in batch], add_special_tokens=False)
            for doc, enc in zip(batch, encodings):
                doc.metadata[N_TOKENS] = len(enc.ids)
                self.stat_update("tokens", value=len(enc.ids))
                yield doc


class TokenRecounter:
    """Re-counts ``n_tokens`` of documents whose text a later stage changed (cut spans), so the funnel and
    the tokenize stage's accounting stay exact. The tokenizer loads on first use, inside the worker."""

    def __init__(self, tokenizer_path: str):
        self.tokenizer_path = tokenizer_path
        self._tok = None

    def __call__(self, docs) -> None:
        if not docs:
            return
        if self._tok is None:
            self._tok = load_tokenizer(self.tokenizer_path)
        for doc, enc in zip(docs, self._tok.encode_batch_fast([d.text for d in docs], add_special_tokens=False)):
            doc.metadata[N_TOKENS] = len(enc.ids)
