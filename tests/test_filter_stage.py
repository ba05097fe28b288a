"""The filter stage end to end on real e-mails: tag once, filter many (--retune recomputes nothing and
matches a fresh run), bad input with named reasons, per-source per-rule counts with real examples."""

from __future__ import annotations

import json
import os

import pytest

from filters.stage import RetuneError
from pipeline.core.layout import RunLayout
from pipeline.recipe import parse_recipe
from pipeline.runner import run_stages
from tests.conftest import read_docs
from tests.corpora import spam_assassin
from tests.realdata import need

pytestmark = pytest.mark.slow  # the filter stage over real corpora, twice


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("filter_corpus")
    mails = need(spam_assassin, limit=120)
    with open(folder / "mail.jsonl", "w") as f:
        for d in mails:
            f.write(json.dumps({"id": d["id"], "text": d["text"], "url": "http://example.com/" + d["id"]}) + "\n")
        # bad input: binary-looking, one 50 MB line, a page from a block-listed domain
        f.write(json.dumps({"id": "binary", "text": "PK\x03\x04\x00\x00" + "\x00\x01\x02\ufffd" * 200}) + "\n")
        f.write(json.dumps({"id": "giant", "text": "x" * 50_000_000}) + "\n")
        f.write(json.dumps({"id": "oneline", "text": "word " * 60_000}) + "\n")
        f.write(json.dumps({"id": "empty", "text": ""}) + "\n")
        f.write(json.dumps({"id": "blank", "text": " \n\t "}) + "\n")
    return folder


def _recipe(corpus, run_dir, tasks=2, filter_cfg=None):
    return parse_recipe({
        "run_dir": str(run_dir),
        "sources": [{"name": "mail", "paths": [str(corpus / "mail.jsonl")], "format": "jsonl", "domain": "web"}],
        "executor": {"tasks": tasks, "workers": 2},
        "filter": filter_cfg or {},
        "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}]},
    })


def _outcome(layout):
    kept = {d["id"]: d["text"] for d in read_docs(layout.output("filter"))}
    removed = {d["id"]: d["metadata"]["removed_reason"] for d in read_docs(layout.removed("filter"))}
    return kept, removed


@pytest.fixture(scope="module")
def tagged(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("filter_run")
    recipe = _recipe(corpus, run_dir)
    stats = run_stages(recipe, ["filter"], quiet=True)["filter"]
    return {"recipe": recipe, "layout": RunLayout(str(run_dir)), "stats": stats}


def test_bad_input_has_named_reasons_and_counts_add_up(tagged):
    kept, removed = _outcome(tagged["layout"])
    assert removed["mail/binary"] == "sanity:binary"
    assert removed["mail/giant"] == "sanity:too_large"
    assert removed["mail/oneline"] == "sanity:giant_line"
    quarantined = {d["id"]: d["metadata"]["quarantine_reason"] for d in read_docs(tagged["layout"].quarantine("filter"))}
    assert sorted(quarantined.values()) == ["empty_text", "whitespace_only_text"]
    giant = next(d for d in read_docs(tagged["layout"].removed("filter")) if d["id"] == "mail/giant")
    assert set(giant["metadata"]["signals"]) == {"sanity"}  # nothing else was computed on it
    # nor tokenized (34 s and GBs for 50 MB); every other removed document is counted
    assert giant["metadata"]["n_tokens"] == 0
    assert all(d["metadata"]["n_tokens"] > 0 for d in read_docs(tagged["layout"].removed("filter")) if d["id"] != "mail/giant")
    c = tagged["stats"]["sources"]["mail"]
    assert c["in"]["docs"] == c["kept"]["docs"] + c["removed"]["docs"] + c["quarantined"]["docs"] == len(kept) + len(removed) + 2


def test_signals_stored_and_examples_per_rule(tagged):
    docs = read_docs(tagged["layout"].output("filter")) + read_docs(tagged["layout"].removed("filter"))
    normal = next(d for d in docs if d["id"].startswith("mail/easy-ham"))
    sig = normal["metadata"]["signals"]
    assert {"sanity", "language", "url", "boilerplate", "bad_words", "heuristics", "pii"} <= set(sig)
    assert 0 <= sig["heuristics"]["alpha_words_ratio"] <= 1
    reasons = tagged["stats"]["sources"]["mail"]["removed"]["reasons"]
    examples = tagged["stats"]["examples"]["mail"]
    assert set(examples) == set(reasons)  # every reason has real examples
    for reason, ex in examples.items():
        assert 1 <= len(ex) <= min(3, reasons[reason])
        assert all(e["id"].startswith("mail/") for e in ex)


def test_retune_recomputes_nothing_and_matches_a_fresh_run(corpus, tagged, tmp_path, monkeypatch):
    new = {"rules": {"gopher_quality": {"max_non_alpha_words_ratio": 0.6, "min_doc_words": 30},
                     "fineweb": {"char_duplicates_ratio": 0.05}, "language": {"min_score": 0.5},
                     "boilerplate": {"max_removed_fraction": 0.9}}}
    before = _outcome(tagged["layout"])
    fresh_layout = RunLayout(str(tmp_path / "fresh"))
    run_stages(_recipe(corpus, tmp_path / "fresh", filter_cfg=new), ["filter"], quiet=True)
    fresh = _outcome(fresh_layout)

    import filters.heuristics
    import filters.tagger

    def boom(*a, **k):
        raise AssertionError("a signal was recomputed during --retune")

    monkeypatch.setattr(filters.tagger, "tag_document", boom)
    monkeypatch.setattr(filters.heuristics, "compute_signals", boom)
    recipe = _recipe(corpus, tagged["layout"].root, filter_cfg=new)
    stats = run_stages(recipe, ["filter"], quiet=True, retune=True)["filter"]
    assert stats["retune"] is True
    retuned = _outcome(tagged["layout"])
    assert retuned == fresh
    assert len(retuned[0]) > len(before[0])  # the looser thresholds keep more documents


def test_retune_refuses_tag_time_changes_and_changed_sharding(corpus, tagged):
    root = tagged["layout"].root
    with pytest.raises(RetuneError, match=r"c4.min_words_per_line is a tag-time setting"):
        run_stages(_recipe(corpus, root, filter_cfg={"rules": {"c4": {"min_words_per_line": 5}}}), ["filter"], quiet=True, retune=True)
    with pytest.raises(RetuneError, match=r"gopher_repetition.top_n_grams\[n\]"):
        run_stages(_recipe(corpus, root, filter_cfg={"rules": {"gopher_repetition": {"top_n_grams": [[2, 0.2], [5, 0.1]]}}}),
                   ["filter"], quiet=True, retune=True)
    with pytest.raises(RetuneError, match=r"code.enabled = True was not tagged"):
        run_stages(_recipe(corpus, root, filter_cfg={"per_domain": {"web": {"code": {"enabled": True}}}}), ["filter"], quiet=True, retune=True)
    with pytest.raises(RetuneError, match="executor.tasks is 3"):
        run_stages(_recipe(corpus, root, tasks=3), ["filter"], quiet=True, retune=True)
    with pytest.raises(RetuneError, match="no stored signals"):
        run_stages(_recipe(corpus, os.path.join(root, "elsewhere")), ["filter"], quiet=True, retune=True)


def test_removed_tokens_not_counted_changes_no_kept_document(corpus, tagged, tmp_path):
    """filter.count_removed_tokens: false tokenizes only what the filter keeps: every decision and every kept
    document's token count are the counting run's (its stats, taken before any retune here touched its folder;
    each kept count is the tokenizer's own); removed documents carry no n_tokens, and the stats and the funnel
    say "not counted" instead of a sum that reads low."""
    from pipeline.core.tokens import load_tokenizer
    from pipeline.report import _fmt, funnel

    recipe = _recipe(corpus, tmp_path / "kept_only", filter_cfg={"count_removed_tokens": False})
    layout = RunLayout(str(tmp_path / "kept_only"))
    stats = run_stages(recipe, ["filter"], quiet=True)["filter"]
    tok = load_tokenizer(recipe.tokenizer.path)
    kept = read_docs(layout.output("filter"))
    assert [d["metadata"]["n_tokens"] for d in kept] == [len(tok.encode(d["text"], add_special_tokens=False)) for d in kept]
    removed = read_docs(layout.removed("filter"))
    assert len(removed) > 10 and not any("n_tokens" in d["metadata"] for d in removed)
    mail, counted = stats["sources"]["mail"], tagged["stats"]["sources"]["mail"]
    assert mail["kept"] == counted["kept"] and counted["removed"]["tokens"] > 0
    assert mail["removed"]["reasons"] == counted["removed"]["reasons"]
    assert mail["removed"]["tokens"] is None and mail["in"]["tokens"] is None and stats["totals"]["in"]["tokens"] is None
    assert mail["removed"]["docs"] == counted["removed"]["docs"] and mail["in"]["bytes"] == counted["in"]["bytes"]
    assert stats["removed_tokens_counted"] is False and "removed_tokens_counted" not in tagged["stats"]
    row = funnel(layout)[0]
    assert row["raw_tokens"] is None and _fmt(row["raw_tokens"]) == "not counted"
    assert row["filter_tokens"] == counted["kept"]["tokens"]
