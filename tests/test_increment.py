"""`ruyi2 add`: files added to a finished run are filtered, deduplicated against what the run kept,
decontaminated and tokenized as an increment, and the blends are planned again; the decisions on the new
documents equal those of a full rerun over the old and the new files."""

from __future__ import annotations

import copy
import glob
import json
import os
import random

import pytest
import yaml

from decontam.benchmarks import load_benchmark
from mixtures.megatron_writer import read_docids
from pipeline.cli import main
from pipeline.core.layout import RunLayout
from pipeline.demo import prepare_demo, shakespeare_scenes
from pipeline.increment import IncrementError, add_files, parse_added
from pipeline.recipe import RecipeError, load_recipe, parse_recipe
from pipeline.runner import run_stages
from tests.conftest import read_docs

pytestmark = pytest.mark.slow  # three runs of the data stages on the small demo corpus

DATA = ["filter", "dedup", "decontam", "tokenize"]


def _near(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(max(1, len(words) // 150)):
        del words[rng.randrange(len(words))]
    return " ".join(words) + "\n\nReposted from the original page."


def _new_web_file(corpus: str, kept_web: list[dict]) -> tuple[str, dict[str, str]]:
    """web_new.jsonl: copies of kept pages (exact and near), fresh pages, a near copy of a fresh page, a
    benchmark item in a post, and a malformed record. Returns the path and what each planted id expects."""
    rng = random.Random(3)
    old = sorted((d for d in kept_web if len(d["text"]) > 1500), key=lambda d: d["id"])
    fresh = [s for s in shakespeare_scenes(300)[150:] if len(s["text"]) > 1500][:6]
    # an item long enough to read as prose (a short quiz line would leave the filter as too few sentences)
    item = next(i for i in load_benchmark("mmlu")[400:] if len(i.text.split()) > 80 and i.text.count(". ") >= 4)
    rows = [
        {"id": "new-exact", "text": old[0]["text"].replace(" ", "  ", 4)},
        {"id": "new-near", "text": _near(old[1]["text"], rng)},
        *({"id": f"new-fresh-{i}", "text": s["text"]} for i, s in enumerate(fresh)),
        {"id": "new-fresh-copy", "text": _near(fresh[0]["text"], rng)},
        {"id": "new-mmlu", "text": "Practice quiz from my revision group. We argued about it for an hour. What do you think the right "
         "option is, and why?\n\n" + item.text + "\n\nThank you all. This board helped me a lot during the whole term. I hope it "
         "helps others too."},
    ]
    path = os.path.join(corpus, "web_new.jsonl")
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
        f.write('{"id": "new-bad", "text": "cut off\n')
    expect = {"web/new-exact": f"exact_duplicate of {old[0]['id']}", "web/new-near": f"minhash_duplicate of {old[1]['id']}",
              "web/new-fresh-copy": "minhash_duplicate of web/new-fresh-0", "web/new-mmlu": "contaminated " + item.text[:40]}
    return path, expect


def _decisions(root: str, ids: set[str]) -> dict[str, tuple]:
    """What each document's stages did: (stage and reason it left, duplicate_of) or its kept text."""
    layout, out = RunLayout(root), {}
    for stage in DATA[:3]:
        for d in read_docs(layout.removed(stage)) + read_docs(layout.quarantine(stage)):
            if d["id"] in ids:
                md = d["metadata"]
                out[d["id"]] = (stage, md.get("removed_reason") or md.get("quarantine_reason"), md.get("duplicate_of"))
    for d in read_docs(layout.output("decontam")):
        if d["id"] in ids:
            out[d["id"]] = ("kept", d["text"])
    return out


def _tokens(prefixes: list[str], ids: set[str]) -> dict[str, list[int]]:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    out = {}
    for prefix in prefixes:
        data = IndexedDataset(prefix)
        for i, doc_id in enumerate(read_docids(prefix)):
            if doc_id in ids:
                out[doc_id] = data[i].tolist()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("increment")
    path = prepare_demo(str(root / "base"), small=True)
    with open(path) as f:
        data = yaml.safe_load(f)
    # several MinHash partitions on the small demo (~100 documents enter dedup; the increment's ~10 alone would
    # make one): the increment has to use the base run's
    data.setdefault("dedup", {}).setdefault("minhash", {})["partition_documents"] = 40
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    recipe = load_recipe(path)
    run_stages(recipe, DATA + ["mix"], quiet=True)
    kept_web = [d for d in read_docs(RunLayout(recipe.run_dir).output("dedup")) if d["metadata"]["source"] == "web"]
    new_file, expect = _new_web_file(os.path.dirname(path), kept_web)
    added = add_files(recipe, parse_added([f"web={new_file}"], recipe), quiet=True)
    # the full rerun: the same recipe with the new file after the old one in the web source
    full = copy.deepcopy(data)
    full["run_dir"] = str(root / "full")
    full["sources"][0]["paths"].append(new_file)
    full_recipe = parse_recipe(full, path)
    run_stages(full_recipe, DATA, quiet=True)
    return {"recipe": recipe, "increment": added["increment"], "full": full_recipe.run_dir, "expect": expect, "new_file": new_file,
            "results": added["results"]}


def test_the_new_documents_get_the_decisions_of_a_full_rerun(runs):
    new_ids = {d["id"] for d in read_docs(RunLayout(runs["increment"]).output("filter")) + read_docs(RunLayout(runs["increment"]).removed("filter"))}
    new_ids |= {d["id"] for d in read_docs(RunLayout(runs["increment"]).quarantine("filter"))}
    assert len(new_ids) == 11  # ten records and the malformed one
    inc, full = _decisions(runs["increment"], new_ids), _decisions(runs["full"], new_ids)
    assert set(inc) == new_ids and inc == full
    for doc_id, what in runs["expect"].items():
        reason, _, of = what.partition(" of ")
        got = inc[doc_id]
        if got[0] == "kept":  # a web page loses the contaminated span and keeps the rest (per_domain web: cut)
            assert what.startswith("contaminated ") and what.removeprefix("contaminated ") not in got[1], (doc_id, got)
            continue
        reason = reason.split(" ")[0]
        assert got[1].startswith(reason), (doc_id, got)
        if reason == "minhash_duplicate":
            assert got[2] == of
    # the exact copy is removed as a copy of a document in the base run's shards
    exact = next(d for d in read_docs(RunLayout(runs["increment"]).removed("dedup")) if d["id"] == "web/new-exact")
    assert exact["metadata"]["exact_duplicate_of"].startswith("shard 0 ") or exact["metadata"]["exact_duplicate_of"].startswith("shard 1 ")
    # the tokens written for the kept new documents are the full run's
    kept = {i for i, v in inc.items() if v[0] == "kept"}
    assert len(kept) >= 4
    inc_prefixes = glob.glob(os.path.join(runs["increment"], "tokenize", "*_text_document.bin"))
    full_prefixes = glob.glob(os.path.join(runs["full"], "tokenize", "*_text_document.bin"))
    inc_tokens, full_tokens = (_tokens([p[:-4] for p in prefixes], kept) for prefixes in (inc_prefixes, full_prefixes))
    assert set(inc_tokens) == kept and inc_tokens == full_tokens


def test_an_increment_uses_the_minhash_partitions_of_its_base_run(runs):
    def used(root: str) -> int:
        with open(RunLayout(root).stats("dedup")) as f:
            return json.load(f)["minhash"]["partitions_used"]

    assert used(runs["recipe"].run_dir) >= 2
    assert used(runs["increment"]) == used(runs["recipe"].run_dir)


def test_an_increment_decontaminates_with_the_base_runs_stored_index(runs):
    def index(root: str) -> list[str]:
        return glob.glob(os.path.join(root, "decontam", "benchmark_index", "*.npz"))

    (own,), (base,) = index(runs["increment"]), index(runs["recipe"].run_dir)
    assert os.path.islink(own) and os.path.realpath(own) == os.path.realpath(base)
    with open(os.path.join(runs["increment"], "decontam", "contamination.json")) as f:
        assert json.load(f)["index"]["from_base_run"]


def test_the_blends_are_planned_over_the_run_and_its_increment(runs):
    from train_entry.data import read_blend

    base = RunLayout(runs["recipe"].run_dir)
    mix = json.load(open(base.stats("mix")))
    assert mix["increments"] == [runs["increment"]]
    inc_tok = json.load(open(RunLayout(runs["increment"]).stats("tokenize")))["sources"]["web"]
    base_tok = json.load(open(base.stats("tokenize")))["sources"]["web"]
    for st in mix["plan"]["stages"]:
        row = next(r for r in st["prefixes"] if r["unit"] == "web")
        assert [p for p, _ in row["parts"]] == [base_tok["units"]["web"]["prefix"], inc_tok["units"]["web"]["prefix"]]
        prefixes, weights = read_blend(mix["data_args"][st["name"]]["train"])
        w = dict(zip(prefixes, weights))
        parts = {p: w[p] for p, _ in row["parts"]}
        assert abs(sum(parts.values()) - row["weight"]) < 1e-8
        # each layer is weighted by its share of the unit's tokens
        assert abs(parts[row["parts"][1][0]] / row["weight"] - inc_tok["units"]["web"]["tokens"] / row["tokens_available"]) < 1e-6
        assert row["tokens_available"] == base_tok["units"]["web"]["tokens"] + inc_tok["units"]["web"]["tokens"]
        assert all(os.path.exists(p + ".bin") for p in prefixes)


def test_adding_a_file_the_run_already_read_is_refused(runs):
    recipe = runs["recipe"]
    with pytest.raises(IncrementError, match="already read by this run"):
        add_files(recipe, parse_added([f"web={runs['new_file']}"], recipe), quiet=True)
    web_old = recipe.sources[0].files()[0]
    with pytest.raises(IncrementError, match="already read"):
        add_files(recipe, parse_added([f"web={web_old}"], recipe), quiet=True)


def test_a_bad_add_argument_fails_before_any_work(runs, capsys):
    recipe = runs["recipe"]
    with pytest.raises(RecipeError, match="no source 'nope'"):
        parse_added([f"nope={runs['new_file']}"], recipe)
    with pytest.raises(RecipeError, match="is not SOURCE=PATH"):
        parse_added([runs["new_file"]], recipe)
    path = os.path.join(recipe.run_dir, "demo_corpus", "recipe.yaml")
    assert main(["add", path, "web=/nonexistent/file.jsonl"]) == 2
    assert "no jsonl file matches /nonexistent/file.jsonl" in capsys.readouterr().err


def test_a_base_run_with_the_older_fingerprint_layout_is_refused_not_skipped(tmp_path):
    """Fingerprints stored per partition (``fp/<partition>/``, before one file per shard) would not be linked, and
    the increment would silently not be deduplicated against the base's code: the stage refuses, naming them."""
    from types import SimpleNamespace

    from dedup.stage import DedupStage
    from pipeline.core.errors import StageError
    from pipeline.core.layers import LAYERS

    base = tmp_path / "base"
    old = base / "dedup" / "work" / "substring" / "fp" / "00000"
    old.mkdir(parents=True)
    (old / "00000_000000.bin").write_bytes(b"")
    ctx = SimpleNamespace(options={LAYERS: SimpleNamespace(earlier=[str(base)])})
    with pytest.raises(StageError, match=r"substring/fp: substring fingerprints in the per-partition layout"):
        DedupStage._check_fingerprint_layout(ctx)
    old.rename(tmp_path / "elsewhere")
    DedupStage._check_fingerprint_layout(ctx)  # the current layout passes
