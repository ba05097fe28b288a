"""The run manifest: what produced a run directory (recipe hash, input fingerprints, versions, seeds)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

from pipeline.core.atomic import write_json
from pipeline.recipe import Recipe

PACKAGES = ("ruyi2-pipeline", "datatrove", "megatron-core", "torch", "ray", "pyarrow", "polars", "tokenizers",
            "fasttext-numpy2-wheel", "datasketch", "numpy")


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def input_fingerprints(recipe: Recipe) -> dict:
    """Per source: file count, total bytes, (path, size, mtime) of each file, and how many paths the listing
    skipped by reason (links out of the source's folders, loops, ...); cheap at any scale."""
    out = {}
    for s in recipe.sources:
        listing = s.listing()
        # an object: its size and ETag from the one listing (no request per object); a file: size and mtime
        entries = [[f, listing.remote[f]["size"], listing.remote[f]["etag"]] if f in listing.remote else
                   [f, (st := os.stat(f)).st_size, st.st_mtime_ns] for f in listing.files]
        out[s.name] = {
            "files": len(listing.files),
            "bytes": sum(e[1] for e in entries),
            "entries": entries,
            "skipped_paths": listing.skipped_counts(),
        }
    return out


def write_manifest(recipe: Recipe, path: str, stages: list[str]) -> dict:
    manifest = {
        "recipe_sha256": recipe.fingerprint(),
        "stages_requested": stages,
        "inputs": input_fingerprints(recipe),
        "versions": {p: _version(p) for p in PACKAGES} | {"python": sys.version.split()[0], "platform": platform.platform()},
        "seeds": {"minhash": recipe.dedup.minhash.seed, "train": recipe.train.seed},
        "executor": recipe.executor.model_dump(),
    }
    write_json(path, manifest, indent=2, sort_keys=True)
    return manifest
