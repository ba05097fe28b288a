"""The run's tokenizer (a Hugging Face tokenizer.json; nothing is downloaded) and token counts.

Tokens are counted once, as documents leave the filter stage (``metadata["n_tokens"]``), so every stage's
funnel reports tokens without re-tokenizing; a stage that cuts text re-counts the documents it changed.
"""

from __future__ import annotations

from functools import lru_cache

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from pipeline.core.assets import resolve_asset
from pipeline.core.documents import REMOVED_REASON

N_TOKENS = "n_tokens"


@lru_cache(maxsize=4)
def load_tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(resolve_asset(path))


def token_id(path: str, token: str) -> int:
    tid = load_tokenizer(path).token_to_id(token)
    if tid is None:
        raise ValueError(f"tokenizer {path!r} has no token {token!r}")
    return tid


def vocab_size(path: str) -> int:
    return load_tokenizer(path).get_vocab_size(with_added_tokens=True)


class TokenCountTagger(PipelineStep):
    """Stores ``metadata["n_tokens"]`` (tokens of the text, without the end-of-document token).

    ``skip_reasons``: documents removed for a reason starting with one of these are not tokenized (their
    ``n_tokens`` is 0, their bytes still counted; stat ``not_tokenized``). The filter skips the documents over
    its size limit: the tokenizer's time and memory grow faster than a text's length (a 50 MB document: 34 s),
    and such a document was removed, not kept.

    ``count_removed=False``: no document removed before this step is tokenized; it gets no ``n_tokens`` at all
    (not a 0 that would read as a count; stat ``removed_not_counted``), and its stage reports its tokens as not
    counted. On web text most bytes are removed, so this is most of the counter's time."""

    name = "🔢 Token count"
    type = "🏷️ - TAGGER"

    def __init__(self, tokenizer_path: str, batch_size: int = 256, skip_reasons: tuple[str, ...] = (),
                 count_removed: bool = True):
        super().__init__()
        self.tokenizer_path = tokenizer_path
        self.batch_size = batch_size
        self.skip_reasons = tuple(skip_reasons)
        self.count_removed = count_removed

    def _skipped(self, doc) -> bool:
        if not self.count_removed and doc.metadata.get(REMOVED_REASON):
            return True
        return bool(self.skip_reasons) and str(doc.metadata.get(REMOVED_REASON) or "").startswith(self.skip_reasons)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tok = load_tokenizer(self.tokenizer_path)
        for batch in batched(data, self.batch_size):
            skipped = [self._skipped(d) for d in batch]
            counted = [d for d, skip in zip(batch, skipped) if not skip]
            with self.track_time(unit="batch"):
                encodings = tok.encode_batch_fast([d.text for d in counted], add_special_tokens=False)
            for doc, enc in zip(counted, encodings):  # len(enc), not len(enc.ids): no Python list of the ids
                doc.metadata[N_TOKENS] = len(enc)
                self.stat_update("tokens", value=len(enc))
            for doc, skip in zip(batch, skipped):
                if skip and not self.count_removed:
                    self.stat_update("removed_not_counted")
                elif skip:
                    doc.metadata[N_TOKENS] = 0
                    self.stat_update("not_tokenized")
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
            doc.metadata[N_TOKENS] = len(enc)
