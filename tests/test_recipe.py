import os

import pytest
import yaml

from pipeline.cli import main
from pipeline.recipe import RecipeError, load_recipe


def _write(tmp_path, data) -> str:
    corpus = tmp_path / "in.jsonl"
    corpus.write_text('{"text": "hello"}\n')
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _base() -> dict:
    return {
        "run_dir": "run",
        "sources": [{"name": "web", "paths": ["in.jsonl"], "format": "jsonl", "domain": "web"}],
        "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}]},
    }


def test_valid_recipe_resolves_paths_relative_to_the_recipe(tmp_path):
    recipe = load_recipe(_write(tmp_path, _base()))
    assert recipe.run_dir == str(tmp_path / "run")
    assert recipe.sources[0].paths == [str(tmp_path / "in.jsonl")]
    assert recipe.filter.rules_for(recipe.sources[0]).c4.enabled


def test_unknown_key_is_named(tmp_path):
    data = _base()
    data["filter"] = {"rules": {"gopher_quality": {"min_doc_wrds": 10}}}
    with pytest.raises(RecipeError, match=r"filter\.rules\.gopher_quality\.min_doc_wrds: unknown key"):
        load_recipe(_write(tmp_path, data))


def test_wrong_type_is_named(tmp_path):
    data = _base()
    data["executor"] = {"tasks": "many"}
    with pytest.raises(RecipeError, match=r"executor\.tasks: .*integer.*'many'"):
        load_recipe(_write(tmp_path, data))


def test_missing_input_path_is_named(tmp_path):
    data = _base()
    data["sources"][0]["paths"] = ["nowhere/*.jsonl"]
    with pytest.raises(RecipeError, match=r"sources\[0\] \('web'\)\.paths: no input file matches .*nowhere"):
        load_recipe(_write(tmp_path, data))


def test_bad_format_and_unknown_domain_weight(tmp_path):
    data = _base()
    data["sources"][0]["format"] = "csv"
    with pytest.raises(RecipeError, match=r"sources\[0\]\.format"):
        load_recipe(_write(tmp_path, data))
    data = _base()
    data["mixture"]["stages"][0]["weights"] = {"books": 1.0}
    with pytest.raises(RecipeError, match=r"'books'.* neither a source, a domain of a source, nor a bucket"):
        load_recipe(_write(tmp_path, data))


def test_bucket_and_upsample_errors_name_the_key(tmp_path):
    data = _base()
    data["mixture"]["buckets"] = {"web": {"score": "quality", "edges": [0.5, 0.2]}}
    with pytest.raises(RecipeError, match=r"mixture\.buckets\.web.*strictly ascending"):
        load_recipe(_write(tmp_path, data))
    data["mixture"]["buckets"] = {"web": {"score": "quality", "edges": [0.5], "names": ["lo", "heldout"]}}
    with pytest.raises(RecipeError, match=r"not 'heldout'"):
        load_recipe(_write(tmp_path, data))
    data["mixture"]["buckets"] = {"web": {"score": "quality", "edges": [0.5], "names": ["lo", "hi"]}}
    data["mixture"]["stages"][0]["weights"] = {"web.top": 1.0}
    with pytest.raises(RecipeError, match=r"buckets here: \['web.hi', 'web.lo'\]"):
        load_recipe(_write(tmp_path, data))
    data["mixture"]["stages"][0]["weights"] = {"web.hi": 1.0}
    assert load_recipe(_write(tmp_path, data)).mixture.units_of(load_recipe(_write(tmp_path, data)).sources[0]) == [
        ("web.lo", "lo"), ("web.hi", "hi")]
    data["mixture"]["upsample"] = {"web": 0.5}
    with pytest.raises(RecipeError, match=r"mixture\.upsample.*between 1 and 100"):
        load_recipe(_write(tmp_path, data))
    data["mixture"]["upsample"] = {"nosuch": 2}
    with pytest.raises(RecipeError, match=r"mixture.upsample: \['nosuch'\] is not a source"):
        load_recipe(_write(tmp_path, data))


def test_per_domain_override_keeps_other_domain_defaults(tmp_path):
    data = _base()
    data["sources"].append({"name": "py", "paths": ["in.jsonl"], "format": "jsonl", "domain": "code", "language": "python"})
    data["filter"] = {"per_domain": {"web": {"c4": {"enabled": False}}}}
    recipe = load_recipe(_write(tmp_path, data))
    assert not recipe.filter.rules_for(recipe.source("web")).c4.enabled
    assert not recipe.filter.rules_for(recipe.source("py")).gopher_quality.enabled  # code defaults survive


def test_invalid_override_fails_at_load(tmp_path):
    data = _base()
    data["filter"] = {"per_source": {"web": {"c4": {"min_num_sentences": "five"}}}}
    with pytest.raises(RecipeError, match="filter overrides for source 'web'"):
        load_recipe(_write(tmp_path, data))


def test_bad_recipe_fails_before_any_work(tmp_path, capsys):
    data = _base()
    data["executor"] = {"kind": "slurm"}
    path = _write(tmp_path, data)
    assert main(["run", path]) == 2
    assert "executor.kind" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_stage_without_previous_output_says_what_to_run(tmp_path, capsys):
    path = _write(tmp_path, _base())
    assert main(["dedup", path]) == 1
    assert "run `ruyi2 filter` first" in capsys.readouterr().err
