"""Duplicate clusters made inspectable: size histogram and the largest clusters with their documents.

Read back from the dedup stage's own output (kept and removed shards, streamed by column batches): MinHash
clusters by ``minhash_cluster_id`` (kept and removed members), exact groups by the keeper locator of their
removed copies. Memory grows with the documents that are in a cluster, not with the corpus.
"""

from __future__ import annotations

import glob
import json
import os

import pyarrow.parquet as pq

SNIPPET = 120


def _size_bucket(n: int) -> str:
    if n <= 3:
        return str(n)
    lo = 1 << (n.bit_length() - 1)
    return f"{lo}-{2 * lo - 1}"


def _scan(folder: str, role: str):
    for path in sorted(glob.glob(os.path.join(folder, "*.parquet"))):
        for batch in pq.ParquetFile(path).iter_batches(columns=["id", "text", "metadata"], batch_size=1024):
            for doc_id, text, md in zip(*(batch.column(c).to_pylist() for c in ("id", "text", "metadata"))):
                md = json.loads(md)
                if "minhash_cluster_id" in md or "exact_duplicate_of" in md:  # only cluster members carry these
                    yield role, doc_id, text, md


def cluster_report(output_folder: str, removed_folder: str, largest: int = 5, members: int = 4) -> dict:
    fuzzy: dict[int, dict] = {}
    exact: dict[str, list] = {}
    for folder, role in ((output_folder, "kept"), (removed_folder, "removed")):
        for role, doc_id, text, md in _scan(folder, role):
            entry = {"id": doc_id, "source": md.get("source"), "role": role, "text": text[:SNIPPET].replace("\n", " ")}
            if "duplicate_similarity" in md:  # the estimated Jaccard similarity with the document kept
                entry["similarity"] = md["duplicate_similarity"]
            if "exact_duplicate_of" in md:
                exact.setdefault(md["exact_duplicate_of"], []).append(entry)
            else:
                fuzzy.setdefault(md["minhash_cluster_id"], []).append(entry)
    histogram: dict[str, int] = {}
    for docs in fuzzy.values():
        histogram[_size_bucket(len(docs))] = histogram.get(_size_bucket(len(docs)), 0) + 1
    order = sorted(fuzzy, key=lambda c: (-len(fuzzy[c]), c))[:largest]
    return {
        "minhash": {
            "clusters": len(fuzzy),
            "documents": sum(map(len, fuzzy.values())),
            "size_histogram": dict(sorted(histogram.items(), key=lambda kv: int(kv[0].split("-")[0]))),
            "largest": [{"cluster": c, "size": len(fuzzy[c]),
                         "members": sorted(fuzzy[c], key=lambda e: (e["role"] != "kept", e["id"]))[:members]} for c in order],
        },
        "exact": {
            "groups": len(exact),
            "removed": sum(map(len, exact.values())),
            "largest": [{"keeper": k, "copies_removed": len(v), "members": sorted(v, key=lambda e: e["id"])[:members]}
                        for k, v in sorted(exact.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:largest]],
        },
    }


def print_cluster_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m, e = report["minhash"], report["exact"]
    console.print(f"MinHash clusters: {m['clusters']:,} holding {m['documents']:,} documents; "
                  f"sizes: {', '.join(f'{k}: {v:,}' for k, v in m['size_histogram'].items()) or 'none'}")
    console.print(f"exact duplicate groups: {e['groups']:,}, copies removed: {e['removed']:,}")
    t = Table(title="largest MinHash clusters")
    for col in ("cluster", "size", "document", "source", "kept?", "J est.", "text"):
        t.add_column(col)
    for c in m["largest"]:
        for i, d in enumerate(c["members"]):
            t.add_row(str(c["cluster"]) if i == 0 else "", str(c["size"]) if i == 0 else "", d["id"], d["source"] or "",
                      "kept" if d["role"] == "kept" else "", f"{d['similarity']:.2f}" if "similarity" in d else "", d["text"][:60])
    console.print(t)
