"""Corpus-common n-grams: a benchmark n-gram found in a large share of the corpus's own documents is the
corpus's boilerplate or template (a manual's translation credit, a forum footer, a licence line in the
corpus's language), not a leaked item, and must not flag every document that carries it.

The reference corpus (``decontam.reference``) only knows phrases common in *its* text; this pass counts, in
the corpus being decontaminated, how many documents contain each index n-gram (``CorpusNgramCounter``, one
sparse count file per task, bounded by the index size, never by the corpus), then excludes those in at least
``max(corpus_common_min_docs, corpus_common_fraction x documents)`` documents before any document is tagged.
A real leak of one item is copied into far fewer documents than that: the item's other n-grams still flag it.
"""

from __future__ import annotations

import glob
import json
import math
import os

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from decontam.ngrams import NgramIndex, normalized_words
from pipeline.core.atomic import atomic_open

MAX_EXAMPLES_PER_TASK = 1000  # n-gram texts kept per task, to show what was excluded


class CorpusNgramCounter(PipelineStep):
    """Counts, for each n-gram of the index, the documents of this task that contain it; writes
    ``<folder>/<rank>.npz`` (slots, counts, documents, a few example texts). Passes no document on."""

    name = "🧮 Benchmark n-grams in the corpus"
    type = "📊 - STATS"

    def __init__(self, index_path: str, folder: str):
        super().__init__()
        self.index_path, self.folder = index_path, folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        index = NgramIndex.load(self.index_path)
        df = np.zeros(len(index.hashes), dtype=np.int32)
        examples: dict[int, str] = {}
        docs = 0
        for doc in data:
            with self.track_time():
                tokens = normalized_words(doc.text)
                hits = index.find(tokens)
                slots = np.unique(np.fromiter((s for _, _, s in hits), dtype=np.int64, count=len(hits)))
                df[slots] += 1
                for p, n, s in hits:
                    if len(examples) >= MAX_EXAMPLES_PER_TASK:
                        break
                    examples.setdefault(s, " ".join(tokens[p : p + n]))
            docs += 1
            self.stat_update("documents")
        os.makedirs(self.folder, exist_ok=True)
        nz = np.flatnonzero(df)
        path = os.path.join(self.folder, f"{rank:05d}.npz")
        with atomic_open(path, "wb") as f:  # a resumed stage finds each task's counts whole or absent
            np.savez(f, slots=nz.astype(np.int64), counts=df[nz], documents=np.int64(docs),
                     examples=np.array(json.dumps({str(k): v for k, v in sorted(examples.items())}, ensure_ascii=False)))
        return
        yield


def document_frequency(folder: str, size: int) -> tuple[np.ndarray, int, dict[int, str]]:
    """The summed counts of every task (document frequency per index slot), the documents counted and the
    example texts, read in task order."""
    df, docs, examples = np.zeros(size, dtype=np.int64), 0, {}
    for path in sorted(glob.glob(os.path.join(folder, "*.npz"))):
        with np.load(path) as z:
            np.add.at(df, z["slots"], z["counts"])
            docs += int(z["documents"])
            for k, v in json.loads(str(z["examples"])).items():
                examples.setdefault(int(k), v)
    return df, docs, examples


def exclude_corpus_common(index: NgramIndex, folder: str, fraction: float, min_docs: int) -> dict:
    """Drops from ``index`` the n-grams in at least ``max(min_docs, ceil(fraction x documents))`` documents of
    the counted corpus; returns what was measured (documents, threshold, excluded, the commonest examples)."""
    df, docs, examples = document_frequency(folder, len(index.hashes))
    threshold = max(min_docs, math.ceil(fraction * docs))
    common = df >= threshold
    order = np.argsort(-df[common], kind="stable")
    slots = np.flatnonzero(common)[order]
    owners = index.item_of_hash[slots]
    shown = [{"ngram": examples[int(s)], "documents": int(df[s]), "benchmark": index.items[o][0], "item": index.items[o][1]}
             for s, o in zip(slots.tolist(), owners.tolist()) if s in examples][:5]
    index.exclude(common, "corpus_common")
    return {"documents": docs, "threshold": threshold, "excluded": int(common.sum()),
            "items_affected": int(len(np.unique(owners))), "examples": shown}
