"""The contamination report: per benchmark, which items were found, in which documents of which source."""

from __future__ import annotations

import glob
import json
import os

import pyarrow.parquet as pq

from decontam.filter import MATCHES

MAX_EXAMPLES = 5


def contamination_report(removed_folder: str, items, n_gram: int) -> dict:
    indexed: dict[str, int] = {}
    for item in items:
        indexed[item.benchmark] = indexed.get(item.benchmark, 0) + 1
    bench: dict[str, dict] = {
        b: {"items_indexed": n, "items_found": 0, "documents": 0, "documents_per_source": {}, "items": {}, "examples": []}
        for b, n in sorted(indexed.items())
    }
    for path in sorted(glob.glob(os.path.join(removed_folder, "*.parquet"))):
        for batch in pq.ParquetFile(path).iter_batches(columns=["id", "metadata"], batch_size=1024):
            for doc_id, md_json in zip(batch.column("id").to_pylist(), batch.column("metadata").to_pylist()):
                md = json.loads(md_json)
                matches = md.get(MATCHES) or []
                for b in sorted({m["benchmark"] for m in matches}):
                    r = bench[b]
                    r["documents"] += 1
                    r["documents_per_source"][md["source"]] = r["documents_per_source"].get(md["source"], 0) + 1
                for m in matches:
                    r = bench[m["benchmark"]]
                    r["items"].setdefault(m["item"], []).append({"doc": doc_id, "source": md["source"]})
                    if len(r["examples"]) < MAX_EXAMPLES:
                        r["examples"].append({"doc": doc_id, "source": md["source"], "item": m["item"], "matched": m["ngram"]})
    for r in bench.values():
        r["items_found"] = len(r["items"])
    return {"n_gram": n_gram, "benchmarks": bench}
