import os
import re

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


@pytest.mark.parametrize("value", [0, "many"])
def test_minhash_partitions_are_a_positive_count_or_auto(tmp_path, value):
    data = _base()
    data["dedup"] = {"minhash": {"partitions": value}}
    with pytest.raises(RecipeError, match=r"dedup\.minhash\.partitions"):
        load_recipe(_write(tmp_path, data))
    data["dedup"]["minhash"] = {"partitions": "auto", "partition_documents": 1000}
    minhash = load_recipe(_write(tmp_path, data)).dedup.minhash
    assert [minhash.partitions_for(n) for n in (0, 1000, 1001, 2_500_000)] == [1, 1, 2, 2500]


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
    data["sources"][0]["metadata_fields"] = ["quality"]  # a score the input carries
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


@pytest.mark.parametrize("section,value,named", [
    ("decontam", {"per_domain": {"wbe": "cut"}}, r"decontam\.per_domain\.wbe\.\[key\]: Input should be 'web'"),
    ("filter", {"per_domain": {"paper": {"c4": {"min_wrds": 3}}}}, r"filter\.per_domain\.paper\.c4\.min_wrds: unknown key"),
    ("filter", {"per_domain": {"papers": {"c4": {"enabled": False}}}}, r"filter\.per_domain\.papers\.\[key\]"),
    ("filter", {"per_language": {"en": {"nonsense": {"enabled": True}}}}, r"filter\.per_language\.en\.nonsense: unknown key"),
    ("filter", {"per_language": {"zz": {"c4": {"enabled": False}}}}, r"filter\.per_language: no source has language \['zz'\]"),
    ("filter", {"per_source": {"web": {"language": {"min_score": 2}}}}, r"filter\.per_source\.web\.language\.min_score: .*less than or equal to 1"),
    ("filter", {"rules": {"code": {"per_language": {"python": {"min_alnm": 0.3}}}}},
     r"filter\.rules\.code\.per_language\.python\.min_alnm: unknown key"),
    ("filter", {"rules": {"code": {"per_language": {"pyhton": {"min_alnum_fraction": 0.3}}}}}, r"per_language\.pyhton\.\[key\]"),
    ("dedup", {"keeper": ["longest"]}, r"dedup\.keeper\[0\]"),
    ("dedup", {"substring": {"domains": ["kode"]}}, r"dedup\.substring\.domains\[0\]"),
])
def test_typos_in_overrides_are_named_even_where_no_source_uses_them(tmp_path, section, value, named):
    data = _base()
    data[section] = value
    with pytest.raises(RecipeError, match=named):
        load_recipe(_write(tmp_path, data))


def test_a_bucket_score_must_be_written_by_an_enabled_family_or_declared(tmp_path):
    data = _base()
    data["mixture"]["buckets"] = {"web": {"score": "quality_score", "edges": [0.5]}}
    with pytest.raises(RecipeError, match=r"mixture\.buckets\.web\.score: 'quality_score' is not written for source 'web'"):
        load_recipe(_write(tmp_path, data))
    model = tmp_path / "model.bin"
    model.write_bytes(b"fasttext model bytes")
    data["filter"] = {"per_source": {"web": {"classifier": {"enabled": True, "model": "model.bin"}}}}
    recipe = load_recipe(_write(tmp_path, data))
    assert recipe.filter.rules_for(recipe.sources[0]).classifier.model == str(model)
    data["filter"] = {}
    data["mixture"]["buckets"]["web"]["score"] = "lid_score"  # the language family always writes it
    load_recipe(_write(tmp_path, data))


def test_a_language_the_language_id_model_does_not_know_is_named(tmp_path):
    data = _base()
    data["sources"][0]["language"] = "multi"
    with pytest.raises(RecipeError, match=r"sources\[0\] \('web'\): the language rule is on but \['multi'\]"):
        load_recipe(_write(tmp_path, data))
    data["filter"] = {"per_source": {"web": {"language": {"languages": ["en", "zh"]}}}}
    load_recipe(_write(tmp_path, data))


def test_a_run_that_stops_before_mixing_needs_no_mixture_section(tmp_path, capsys):
    data = _base()
    del data["mixture"]
    path = _write(tmp_path, data)
    assert main(["validate", path]) == 0
    assert "not: mix (needs 'mixture'), train (needs 'mixture')" in capsys.readouterr().out
    assert main(["run", path]) == 2  # the whole flow: refused before any work
    assert "stage 'mix' needs the recipe's 'mixture' section" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


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
    with pytest.raises(RecipeError, match=r"filter\.per_source\.web\.c4\.min_num_sentences: .*valid integer.*'five'"):
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


def test_stage_exit_weights_must_name_a_stage_and_fit_the_exits(tmp_path, capsys):
    from pipeline.runner import check_runnable

    data = _base()
    data["train"] = {"stage_exit_weights": {"anneal": [{"start": 1.0}] * 3}}
    path = _write(tmp_path, data)
    check_runnable(load_recipe(path), ["filter", "dedup"])  # a run without train: not its business
    assert main(["run", path]) == 2  # with train: refused before any work
    assert "train.stage_exit_weights.anneal: no curriculum stage of that name" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")
    data["train"] = {"stage_exit_weights": {"general": [{"start": 1.0}] * 2}}
    assert main(["validate", _write(tmp_path, data)]) == 0
    assert "not: train (train.stage_exit_weights.general: 2 schedules for 3 exits [1, 2, 3])" in capsys.readouterr().out


def test_the_readme_recipe_reference_is_a_valid_recipe():
    """The annotated recipe in README.md's "Recipe reference" uses only real keys with valid values (its
    input files are examples, so they are not checked)."""
    import re

    import yaml

    from pipeline.recipe import parse_recipe

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    section = readme[readme.index("## Recipe reference"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    recipe = parse_recipe(yaml.safe_load(block), "README.md", check_inputs=False)
    assert recipe.train.lr_schedule == "wsd" and recipe.train.global_batch_size == 4 and recipe.mixture.stages


def test_train_settings_that_cannot_work_are_refused_before_any_work(tmp_path, capsys):
    """An annealing stage that does not exist, a global batch that micro-batches cannot fill, a schedule
    that has no annealing stage, full recompute under DaE, interleaving without pipeline stages or with
    micro-batches it cannot schedule, a layer layout of the wrong length: each named, nothing run."""
    data = _base()
    cases = [({"lr_schedule": "wsd", "lr_anneal_stage": "cooldown"}, "train.lr_anneal_stage: no curriculum stage 'cooldown'"),
             ({"lr_anneal_stage": "general"}, "train.lr_anneal_stage: only the wsd schedule anneals"),
             ({"micro_batch_size": 3, "global_batch_size": 8}, "train.global_batch_size: 8 is not a multiple of micro_batch_size 3"),
             ({"dae": {"enabled": True}, "recompute": "full"}, "train.recompute: full recompute cannot train DaE"),
             ({"virtual_pipeline_parallel": 2}, "train.virtual_pipeline_parallel: interleaving needs pipeline_parallel > 1"),
             ({"pipeline_parallel": 2, "virtual_pipeline_parallel": 2, "micro_batch_size": 2, "global_batch_size": 6},
              "train.global_batch_size: interleaved 1F1B needs the micro-batches per step"),
             ({"pipeline_parallel": 2, "virtual_pipeline_parallel": 2, "global_batch_size": 4, "pipeline_balance": [2, 2]},
              "train.pipeline_balance: 2 stages summing to 4 layers; needs 4 (pipeline_parallel x virtual_pipeline_parallel)")]
    for train, message in cases:
        data["train"] = train
        assert main(["run", _write(tmp_path, data)]) == 2, train
        assert message in capsys.readouterr().err, train
        assert not os.path.exists(tmp_path / "run")
    data["train"] = {"lr_schedule": "wsd", "lr_anneal_stage": "general", "global_batch_size": 4, "pipeline_parallel": 2,
                     "virtual_pipeline_parallel": 2, "pipeline_balance": [1, 1, 1, 1]}
    assert main(["validate", _write(tmp_path, data)]) == 0
    assert "not: train" not in capsys.readouterr().out


def test_a_second_run_on_the_same_run_dir_is_refused(tmp_path, capsys):
    """While one run holds the run directory, another fails naming it and the holder, and writes nothing; a
    killed holder leaves no stale lock."""
    import subprocess
    import sys

    from pipeline.core.run_lock import run_lock

    data = _base()
    path = _write(tmp_path, data)
    run_dir = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pipeline.core.run_lock import run_lock\n"
        f"with run_lock({run_dir!r}):\n    print('held', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["run", path]) == 1
        err = capsys.readouterr().err
        assert f"{run_dir}: another ruyi2 run is working in this run directory (pid {holder.pid}" in err
        assert sorted(os.listdir(run_dir)) == [".ruyi2.lock", ".ruyi2.lock.holder"]  # no stage folder, no recipe copy
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run_dir):  # the OS released the dead holder's lock
        pass


def test_a_publish_target_that_cannot_work_is_refused_before_any_work(tmp_path, capsys):
    """mixture.publish: not an s3:// URL, an invalid bucket name, anonymous access (publishing writes), and
    train.data_from: published without a publish target: each named, nothing run."""
    data = _base()
    for publish, message in (({"url": "https://bucket/prefix"}, "mixture.publish.url: 'https://bucket/prefix': an s3:// URL"),
                             ({"url": "s3://Bad_Bucket/x"}, "mixture.publish.url: 's3://Bad_Bucket/x': an s3:// URL"),
                             ({"url": "s3://bucket/x", "storage": {"anon": True}}, "storage.anon: publishing writes objects")):
        data["mixture"]["publish"] = publish
        with pytest.raises(RecipeError, match=re.escape(message)):
            load_recipe(_write(tmp_path, data))
    del data["mixture"]["publish"]
    data["train"] = {"data_from": "published"}
    assert main(["run", _write(tmp_path, data)]) == 2
    assert "train.data_from: published needs mixture.publish" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")
