"""How far two filter runs of the same corpus agree, document by document (issue 34: a change that alters a
decision is measured as an agreement rate).

    .venv/bin/python bench/filter_agreement.py RUN_A RUN_B

Reads each run's ``filter/output`` (kept) and ``filter/removed`` Parquet files: per source, the documents
whose decision is the same (kept by both, or removed by both for the same reason), the kept documents whose
text differs, and the most frequent decision changes. Exit status 0 when every decision and every kept text
is the same, 1 otherwise.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import Counter

import pyarrow.parquet as pq

KEPT = "kept"


def decisions(run_dir: str) -> dict[str, tuple[str, str, str | None]]:
    """id -> (source, decision, text digest for kept documents); the decision is KEPT or the removal reason."""
    import hashlib

    out = {}
    for sub in ("output", "removed"):
        for path in sorted(glob.glob(os.path.join(run_dir, "filter", sub, "*.parquet"))):
            table = pq.read_table(path, columns=["id", "text", "metadata"])
            for doc_id, text, metadata in zip(*(table.column(c).to_pylist() for c in ("id", "text", "metadata"))):
                meta = json.loads(metadata)
                if sub == "output":
                    out[doc_id] = (meta["source"], KEPT, hashlib.blake2b(text.encode("utf-8", "surrogatepass")).hexdigest())
                else:
                    out[doc_id] = (meta["source"], meta["removed_reason"], None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--top", type=int, default=10, help="decision changes listed")
    args = ap.parse_args()
    a, b = decisions(args.first), decisions(args.second)
    if a.keys() != b.keys():
        print(f"the runs read different documents: {len(a.keys() - b.keys())} only in the first, "
              f"{len(b.keys() - a.keys())} only in the second")
        return 1
    per_source: dict[str, Counter] = {}
    changes: Counter = Counter()
    for doc_id, (source, decision, digest) in a.items():
        _, other, other_digest = b[doc_id]
        c = per_source.setdefault(source, Counter())
        c["documents"] += 1
        if decision != other:
            changes[(decision, other)] += 1
        elif decision == KEPT and digest != other_digest:
            c["kept_text_differs"] += 1
        else:
            c["same"] += 1
    print(f"{'source':<16s} {'documents':>10s} {'same':>10s} {'agreement':>10s} {'kept, text differs':>19s}")
    total = Counter()
    for source, c in sorted(per_source.items()):
        total.update(c)
        print(f"{source:<16s} {c['documents']:>10,} {c['same']:>10,} {c['same'] / c['documents']:>10.4%} {c['kept_text_differs']:>19,}")
    print(f"{'all':<16s} {total['documents']:>10,} {total['same']:>10,} {total['same'] / total['documents']:>10.4%} "
          f"{total['kept_text_differs']:>19,}")
    for (before, after), n in changes.most_common(args.top):
        print(f"  {n:>7,}  {before} -> {after}")
    return 0 if total["same"] == total["documents"] else 1


if __name__ == "__main__":
    sys.exit(main())
