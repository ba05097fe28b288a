"""The decontamination step: marks documents that share a word n-gram with any benchmark item."""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from decontam.ngrams import NgramIndex, ngram_hashes, normalized_words
from pipeline.documents import REMOVED_REASON

MATCHES = "decontam_matches"
MAX_RECORDED_MATCHES = 5


class NgramDecontaminationTagger(PipelineStep):
    """Marks a contaminated document ``removed_reason = contaminated:<benchmark>`` and records which items
    and which n-grams matched (``decontam_matches``) for the contamination report."""

    name = "🧪 Benchmark n-gram decontamination"
    type = "🔻 - FILTER"

    def __init__(self, index_path: str):
        super().__init__()
        self.index_path = index_path
        self._index: NgramIndex | None = None

    @property
    def index(self) -> NgramIndex:
        if self._index is None:
            self._index = NgramIndex.load(self.index_path)
        return self._index

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        idx = self.index
        for doc in data:
            with self.track_time():
                words = normalized_words(doc.text)
                positions, items = idx.lookup(ngram_hashes(words, idx.n))
            self.stat_update("checked")
            if len(positions):
                matches, seen = [], set()
                for pos, item in zip(positions.tolist(), items.tolist()):
                    if item in seen:
                        continue
                    seen.add(item)
                    bench, item_id = idx.items[item]
                    matches.append({"benchmark": bench, "item": item_id, "ngram": " ".join(words[pos : pos + idx.n])})
                    if len(matches) == MAX_RECORDED_MATCHES:
                        break
                doc.metadata[MATCHES] = matches
                doc.metadata["decontam_matched_ngrams"] = int(len(positions))
                doc.metadata[REMOVED_REASON] = f"contaminated:{matches[0]['benchmark']}"
                self.stat_update(f"contaminated/{matches[0]['benchmark']}")
            yield doc
