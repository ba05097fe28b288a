"""Duplicate clusters made inspectable: size histogram and the largest clusters with their documents.

Read back from the dedup stage's own output (kept and removed shards): MinHash clusters by
``minhash_cluster_id`` (kept and removed members), exact groups by the keeper locator of their removed copies.
polars scans the shards twice (streaming engine): once for every group's size, once for the members of the
largest groups, of which a few per group are kept; memory follows the number of clusters and the members of
the largest ones, never the corpus.
"""

from __future__ import annotations

import glob
import os

import polars as pl

SNIPPET = 120


def _size_bucket(n: int) -> str:
    if n <= 3:
        return str(n)
    lo = 1 << (n.bit_length() - 1)
    return f"{lo}-{2 * lo - 1}"


def _members(output_folder: str, removed_folder: str) -> pl.LazyFrame:
    """Every cluster member (kept or removed) as (role, id, source, text snippet, similarity, cluster, keeper)."""
    md = pl.col("metadata")
    frames = []
    for folder, role in ((output_folder, "kept"), (removed_folder, "removed")):
        files = sorted(glob.glob(os.path.join(folder, "*.parquet")))
        if files:
            frames.append(pl.scan_parquet(files).select(
                role=pl.lit(role),
                id=pl.col("id"),
                source=md.str.json_path_match("$.source"),
                text=pl.col("text").str.slice(0, SNIPPET).str.replace_all("\n", " ", literal=True),
                similarity=md.str.json_path_match("$.duplicate_similarity").cast(pl.Float64),
                cluster=md.str.json_path_match("$.minhash_cluster_id").cast(pl.Int64),
                keeper=md.str.json_path_match("$.exact_duplicate_of"),
            ).filter(pl.col("cluster").is_not_null() | pl.col("keeper").is_not_null()))  # only cluster members carry these
    schema = {"role": pl.String, "id": pl.String, "source": pl.String, "text": pl.String, "similarity": pl.Float64,
              "cluster": pl.Int64, "keeper": pl.String}
    return pl.concat(frames) if frames else pl.LazyFrame(schema=schema)


def _entries(df: pl.DataFrame) -> list[dict]:
    out = []
    for row in df.iter_rows(named=True):
        entry = {"id": row["id"], "source": row["source"], "role": row["role"], "text": row["text"]}
        if row["similarity"] is not None:  # the estimated Jaccard similarity with the document kept
            entry["similarity"] = row["similarity"]
        out.append(entry)
    return out


def cluster_report(output_folder: str, removed_folder: str, largest: int = 5, members: int = 4) -> dict:
    docs = _members(output_folder, removed_folder)
    # one scan for every group's size (a MinHash cluster: no keeper; an exact group: by its keeper), one for the
    # members of the largest groups
    groups = docs.group_by("cluster", "keeper").agg(size=pl.len()).collect(engine="streaming")
    sizes = groups.filter(pl.col("keeper").is_null()).select("cluster", "size")
    copies = groups.filter(pl.col("keeper").is_not_null()).group_by("keeper").agg(size=pl.col("size").sum())
    histogram: dict[str, int] = {}
    for n in sizes["size"].to_list():
        histogram[_size_bucket(n)] = histogram.get(_size_bucket(n), 0) + 1
    top = sizes.sort(["size", "cluster"], descending=[True, False]).head(largest)
    top_groups = copies.sort(["size", "keeper"], descending=[True, False]).head(largest)
    wanted = (docs.filter((pl.col("keeper").is_null() & pl.col("cluster").is_in(top["cluster"].implode()))
                          | pl.col("keeper").is_in(top_groups["keeper"].implode()))
              .collect(engine="streaming"))
    in_top = (wanted.filter(pl.col("keeper").is_null()).sort([pl.col("role") != "kept", pl.col("id")])
              .group_by("cluster", maintain_order=True).head(members))
    in_top_groups = (wanted.filter(pl.col("keeper").is_not_null()).sort("id")
                     .group_by("keeper", maintain_order=True).head(members))
    return {
        "minhash": {
            "clusters": sizes.height,
            "documents": int(sizes["size"].sum()),
            "size_histogram": dict(sorted(histogram.items(), key=lambda kv: int(kv[0].split("-")[0]))),
            "largest": [{"cluster": c, "size": n, "members": _entries(in_top.filter(pl.col("cluster") == c))}
                        for c, n in top.iter_rows()],
        },
        "exact": {
            "groups": copies.height,
            "removed": int(copies["size"].sum()),
            "largest": [{"keeper": k, "copies_removed": n, "members": _entries(in_top_groups.filter(pl.col("keeper") == k))}
                        for k, n in top_groups.iter_rows()],
        },
    }


def print_cluster_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipeline.core.printable import cells, line, printable

    console = Console()
    m, e = report["minhash"], report["exact"]
    console.print(line(f"MinHash clusters: {m['clusters']:,} holding {m['documents']:,} documents; "
                       f"sizes: {', '.join(f'{k}: {v:,}' for k, v in m['size_histogram'].items()) or 'none'}"))
    console.print(line(f"exact duplicate groups: {e['groups']:,}, copies removed: {e['removed']:,}"))
    t = Table(title="largest MinHash clusters")
    for col in ("cluster", "size", "document", "source", "kept?", "J est.", "text"):
        t.add_column(col)
    for c in m["largest"]:
        for i, d in enumerate(c["members"]):
            t.add_row(*cells(str(c["cluster"]) if i == 0 else "", str(c["size"]) if i == 0 else "", d["id"], d["source"] or "",
                             "kept" if d["role"] == "kept" else "", f"{d['similarity']:.2f}" if "similarity" in d else "",
                             printable(d["text"], 60)))
    console.print(t)
