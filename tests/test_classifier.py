"""`ruyi2 classifier train` on the SpamAssassin corpus (ham = positive, spam = negative): held-out
precision/recall/AUC, a manifest, deterministic model bytes; the filter stage stores and thresholds the score."""

from __future__ import annotations

import glob
import hashlib
import json
import os

import pytest

from filters.classifier import auc, quality_score
from pipeline.cli import main
from tests.corpora import DATA
from tests.realdata import need


def _sa(kind):
    from tests.corpora import spam_assassin

    need(spam_assassin, kinds=(kind,), limit=1)
    return os.path.join(DATA, "spam-assassin", "package", "data", f"{kind}-1")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("clf")
    args = ["classifier", "train", "--positive", _sa("easy-ham"), "--negative", _sa("spam"), "--email", "--epoch", "5"]
    assert main(args + ["--out", str(out / "a")]) == 0
    assert main(args + ["--out", str(out / "b")]) == 0
    return out


def test_held_out_metrics_and_manifest(model):
    m = json.load(open(model / "a" / "manifest.json"))
    assert m["metrics"]["auc"] > 0.95 and m["metrics"]["precision"] > 0.9 and m["metrics"]["recall"] > 0.9
    # one document per message file; the .json sidecar beside each one is counted as skipped, not read
    messages = len(glob.glob(os.path.join(_sa("easy-ham"), "*.txt")))
    assert messages > 1000 and m["inputs"]["positive"]["documents"] == m["inputs"]["positive"]["files"] == messages
    assert m["inputs"]["positive"]["skipped_files"] == {".json": messages}
    assert m["metrics"]["held_out"] > 300
    assert m["metrics"]["train"] + m["metrics"]["held_out"] + m["metrics"]["empty_positive"] + m["metrics"]["empty_negative"] == (
        m["inputs"]["positive"]["documents"] + m["inputs"]["negative"]["documents"])
    digest = hashlib.sha256(open(model / "a" / "model.bin", "rb").read()).hexdigest()
    assert m["model_sha256"] == digest
    # same inputs and settings: the same model bytes
    assert open(model / "b" / "model.bin", "rb").read() == open(model / "a" / "model.bin", "rb").read()


def test_quantized_model_is_small_deterministic_and_reports_both_metrics(model, tmp_path, capsys):
    """`--quantize` saves model.ftz (product-quantized, pruned to the cutoff), a hundred times smaller, with the
    held-out metrics of the model before quantizing beside its own; the same inputs give the same bytes."""
    args = ["classifier", "train", "--positive", _sa("easy-ham"), "--negative", _sa("spam"), "--email", "--epoch", "5",
            "--quantize", "--quantize-cutoff", "50000"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    m = json.load(open(tmp_path / "a" / "manifest.json"))
    full = json.load(open(model / "a" / "manifest.json"))
    assert m["model"] == "model.ftz" and not (tmp_path / "a" / "model.bin").exists()
    quantized = tmp_path / "a" / "model.ftz"
    assert os.path.getsize(quantized) * 50 < os.path.getsize(model / "a" / "model.bin")
    assert open(quantized, "rb").read() == open(tmp_path / "b" / "model.ftz", "rb").read()
    assert m["model_sha256"] == hashlib.sha256(quantized.read_bytes()).hexdigest()
    assert m["metrics_unquantized"]["auc"] == full["metrics"]["auc"]  # the same training before quantizing
    assert m["metrics"]["auc"] > 0.95 and m["metrics"]["held_out"] == full["metrics"]["held_out"]
    assert "before quantizing: precision" in out and "model.ftz" in out
    assert 0 <= quality_score(str(quantized), "Thanks, the patch works. See you at the meeting on Monday.") <= 1


def test_a_worker_holds_one_quality_model_at_a_time(model):
    """A full model is ~500 MiB: scoring with a second model (another language's) drops the first from the
    worker; switching back loads it again and scores the same."""
    from filters.classifier import _load

    _load.cache_clear()
    text = "Thanks, the patch works. See you at the meeting on Monday."
    first = quality_score(str(model / "a" / "model.bin"), text)
    quality_score(str(model / "b" / "model.bin"), text)
    assert _load.cache_info().currsize == 1
    assert quality_score(str(model / "a" / "model.bin"), text) == first and _load.cache_info().misses == 3


def test_scores_rank_ham_above_spam(model):
    from tests.corpora import spam_assassin

    path = str(model / "a" / "model.bin")
    ham = [quality_score(path, d["text"]) for d in spam_assassin(kinds=("hard-ham",), limit=100)]
    spam = [quality_score(path, d["text"]) for d in spam_assassin(kinds=("spam",), limit=100)]
    assert all(0 <= s <= 1 for s in ham + spam)
    assert sum(ham) / len(ham) > sum(spam) / len(spam)


def test_a_glob_matching_folders_reads_the_documents_inside(tmp_path):
    from filters.classifier_inputs import read_documents

    for kind in ("a", "b"):
        (tmp_path / f"part-{kind}").mkdir()
        (tmp_path / f"part-{kind}" / "1.txt").write_text(f"message {kind}")
        (tmp_path / f"part-{kind}" / "1.json").write_text("{}")
    got = read_documents([str(tmp_path / "part-*")])
    assert sorted(t for _, t in got.documents) == ["message a", "message b"] and got.skipped == {".json": 2}


def test_bad_classifier_input_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    assert main(["classifier", "train", "--positive", str(bad), "--negative", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err


def test_parquet_rows_are_named_and_empty_documents_counted(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["good text here", None]}), tmp_path / "pos.parquet")
    neg = tmp_path / "neg.jsonl"
    neg.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["spam spam buy now"] * 20 + ["", "  \n "]))
    out = str(tmp_path / "m")
    assert main(["classifier", "train", "--positive", str(tmp_path / "pos.parquet"), "--negative", str(neg), "--out", out]) == 2
    assert f"{tmp_path / 'pos.parquet'} row 2: 'text' is NoneType, not a string" in capsys.readouterr().err
    pos = tmp_path / "pos.jsonl"
    pos.write_text("".join(json.dumps({"text": f"a calm letter number {i} about the garden"}) + "\n" for i in range(20)))
    assert main(["classifier", "train", "--positive", str(pos), "--negative", str(neg), "--out", out, "--test-fraction", "0.3"]) == 0
    m = json.load(open(os.path.join(out, "manifest.json")))["metrics"]
    # every input document is either trained on, held out, or counted as empty
    assert (m["empty_positive"], m["empty_negative"]) == (0, 2)
    assert m["train"] + m["held_out"] == 40
    assert "empty, not used: 0 positive, 2 negative" in capsys.readouterr().out


def test_auc():
    import numpy as np

    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([True, True, False, False])) == 1.0
    assert auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5


@pytest.mark.slow
def test_filter_stage_applies_the_classifier(model, tmp_path):
    from pipeline.core.layout import RunLayout
    from pipeline.recipe import parse_recipe
    from pipeline.runner import run_stages
    from tests.conftest import read_docs
    from tests.corpora import spam_assassin

    with open(tmp_path / "mail.jsonl", "w") as f:
        for d in spam_assassin(kinds=("hard-ham", "spam"), limit=40):
            f.write(json.dumps({"id": d["id"], "text": d["text"]}) + "\n")
    recipe = parse_recipe({
        "run_dir": str(tmp_path / "run"),
        "sources": [{"name": "mail", "paths": [str(tmp_path / "mail.jsonl")], "format": "jsonl", "domain": "forum"}],
        "executor": {"tasks": 1, "workers": 1},
        "filter": {"per_domain": {"forum": {"classifier": {"enabled": True, "model": str(model / "a" / "model.bin"), "min_score": 0.5},
                                            **{r: {"enabled": False} for r in ("gopher_repetition", "gopher_quality", "c4", "fineweb", "language", "boilerplate", "bad_words")}}}},
        "mixture": {"stages": [{"name": "g", "tokens": 100, "weights": {"forum": 1.0}}]},
    })
    run_stages(recipe, ["filter"], quiet=True)
    layout = RunLayout(str(tmp_path / "run"))
    docs = read_docs(layout.output("filter")) + read_docs(layout.removed("filter"))
    docs = [d for d in docs if not d["metadata"].get("removed_reason", "").startswith("sanity:")]  # never scored
    assert len(docs) > 60 and all("quality_score" in d["metadata"] for d in docs)
    for d in docs:
        low = d["metadata"]["quality_score"] < 0.5
        assert (d["metadata"].get("removed_reason") == "classifier:low_quality_score") == low
    spam_removed = sum(1 for d in docs if d["id"].startswith("mail/spam") and d["metadata"].get("removed_reason"))
    assert spam_removed >= 30
