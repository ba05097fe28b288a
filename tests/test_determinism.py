"""Same inputs and recipe give byte-identical outputs (documents, tokens, blends)."""

import pytest

from pipeline.run_diff import diff_runs
from pipeline.runner import run_stages

pytestmark = pytest.mark.slow  # two full demo runs


def test_rerun_gives_identical_files(demo_run, tmp_path):
    recipe = demo_run["recipe"].model_copy(deep=True)
    recipe.run_dir = str(tmp_path / "again")
    run_stages(recipe, ["filter", "dedup", "decontam", "tokenize", "mix"], quiet=True)
    diff = diff_runs(demo_run["layout"].root, recipe.run_dir)
    assert diff.identical, diff
    assert diff.compared > 20
