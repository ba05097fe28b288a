"""The benchmark index is taken from the cache only when its benchmark files, reference files, settings and
code are those it was built from, and a run given a cached index holds the same bytes as one that built it."""

from __future__ import annotations

import json
import os

import pytest

import decontam.index_cache
from decontam.build import build_index
from decontam.config import DecontamConfig
from decontam.ngrams import NgramIndex
from tests.corpora import shakespeare_speeches
from tests.realdata import need


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RUYI2_CACHE", str(tmp_path / "cache"))
    builds = []
    real = NgramIndex.build.__func__

    def counted(cls, *a, **k):
        builds.append(1)
        return real(cls, *a, **k)

    monkeypatch.setattr(NgramIndex, "build", classmethod(counted))
    return builds


def _benchmark(folder, questions) -> str:
    """A GSM8K-format release (test.jsonl) with real sentences as questions, written once."""
    if (folder / "gsm8k").exists():
        return str(folder)
    os.makedirs(folder / "gsm8k")
    with open(folder / "gsm8k" / "test.jsonl", "w") as f:
        for q in questions:
            f.write(json.dumps({"question": q, "answer": "It follows from the text. #### 4"}) + "\n")
    return str(folder)


def _config(tmp_path, **changes) -> DecontamConfig:
    speeches = [s["text"] for s in need(shakespeare_speeches) if len(s["text"].split()) > 60]
    questions = [" ".join(s.split()[:40]) for s in speeches[:6]]
    reference = tmp_path / "reference.txt"
    if not reference.exists():
        reference.write_text("\n".join(speeches[6:20]))
    return DecontamConfig(benchmarks=["gsm8k"], benchmark_dir=_benchmark(tmp_path / "bench", questions),
                          reference=[str(reference)], **changes)


def _build(cfg, folder) -> bytes:
    path, _ = build_index(cfg, str(folder))
    with open(path, "rb") as f:
        return f.read()


def test_a_second_build_from_the_same_inputs_takes_the_cached_index_with_the_same_bytes(tmp_path, cache):
    first = _build(_config(tmp_path), tmp_path / "run1")
    second = _build(_config(tmp_path), tmp_path / "run2")
    assert len(cache) == 1 and first == second
    assert not os.path.islink(tmp_path / "run2" / NgramIndex.file_name(13))  # the run holds its own copy


def test_a_changed_benchmark_file_setting_or_reference_builds_again(tmp_path, cache):
    _build(_config(tmp_path), tmp_path / "run1")
    assert len(cache) == 1
    bench = tmp_path / "bench" / "gsm8k" / "test.jsonl"
    with open(bench, "a") as f:
        f.write(json.dumps({"question": "How many apples are left after Anna gives away three of seven apples today?",
                            "answer": "#### 4"}) + "\n")
    _build(_config(tmp_path), tmp_path / "run2")
    assert len(cache) == 2
    index = NgramIndex.load(str(tmp_path / "run2" / NgramIndex.file_name(13)))
    assert len(index.items) == 7  # the added item is in it, not the cached six
    _build(_config(tmp_path, max_items_per_ngram=3), tmp_path / "run3")
    assert len(cache) == 3
    (tmp_path / "reference.txt").write_text("A different clean reference text.")
    _build(_config(tmp_path), tmp_path / "run4")
    assert len(cache) == 4
    assert _build(_config(tmp_path), tmp_path / "run5") == _build(_config(tmp_path), tmp_path / "run6")
    assert len(cache) == 4


def test_changed_code_builds_again(tmp_path, cache, monkeypatch):
    _build(_config(tmp_path), tmp_path / "run1")
    code = tmp_path / "code"
    code.mkdir()
    (code / "ngrams.py").write_text("# another version of the tokeniser\n")
    monkeypatch.setattr(decontam.index_cache, "_CODE", (*decontam.index_cache._CODE, str(code)))
    _build(_config(tmp_path), tmp_path / "run2")
    assert len(cache) == 2


def test_the_cache_turned_off_builds_every_time(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("RUYI2_CACHE", "off")
    _build(_config(tmp_path), tmp_path / "run1")
    _build(_config(tmp_path), tmp_path / "run2")
    assert len(cache) == 2 and not (tmp_path / "cache").exists()
