"""Same inputs and recipe give byte-identical outputs (documents, tokens, blends)."""

import filecmp
import glob
import os

import pytest

from pipeline.runner import run_stages

pytestmark = pytest.mark.slow  # two full demo runs


def test_rerun_gives_identical_files(demo_run, tmp_path):
    recipe = demo_run["recipe"].model_copy(deep=True)
    recipe.run_dir = str(tmp_path / "again")
    run_stages(recipe, ["filter", "dedup", "decontam", "tokenize", "mix"], quiet=True)
    first = demo_run["layout"].root
    patterns = ["*/output/*.parquet", "*/removed/*.parquet", "*/quarantine/*.parquet", "tokenize/*.bin", "tokenize/*.idx",
                "tokenize/*.docids", "decontam/contamination.json", "*/stats.json"]
    compared = 0
    for pattern in patterns:
        files = sorted(os.path.relpath(p, first) for p in glob.glob(os.path.join(first, pattern)) if "/train/" not in p)
        again = sorted(os.path.relpath(p, recipe.run_dir) for p in glob.glob(os.path.join(recipe.run_dir, pattern)))
        assert files == again, pattern
        for rel in files:
            if rel.startswith(("mix/", "tokenize/stats")):
                continue  # these name the run directory's absolute prefixes
            assert filecmp.cmp(os.path.join(first, rel), os.path.join(recipe.run_dir, rel), shallow=False), rel
            compared += 1
    assert compared > 20
