"""The compiled n-gram repetition counts (filters/ngram_kernels.py) give datatrove's own counts
(``find_top_duplicate`` over ``get_n_grams``, ``find_all_duplicate``) on word lists built to repeat, tie and
overlap, and the exact paths that a hash collision hands over to give them too."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_top_duplicate, get_n_grams

from filters import ngram_kernels, repetition
from filters.ngram_kernels import COLLISION


def _word_lists(count: int = 300) -> list[list[str]]:
    rng = random.Random(7)
    vocab = ["a", "to", "the", "cat", "sat", "ab", "abc", "b", "c", "on", "mat", "x" * 12]
    out = [[], ["one"], ["a", "b"], ["a", "b", "a", "b", "a", "b"], ["ab", "c", "a", "bc"] * 3]
    for _ in range(count):
        n = rng.randint(0, 60)
        words = [rng.choice(vocab[: rng.randint(2, len(vocab))]) for _ in range(n)]
        if words and rng.random() < 0.5:  # a repeated run, as boilerplate repeats
            k = rng.randint(0, len(words) - 1)
            words += words[k:] * rng.randint(1, 3)
        out.append(words)
    return out


def _ours(words: list[str]) -> tuple[dict, dict]:
    from spacy.strings import hash_string

    ids = np.array([hash_string(w) for w in words], dtype=np.uint64)
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    joined = "".join(words)
    cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    prefix, inv_pow = repetition.prefix_hash(cp)
    return (repetition.top_ngram_chars_all(ids, lengths, (2, 3, 4)),
            repetition.dup_ngram_chars_all(joined, cp, starts, prefix, inv_pow, (2, 3, 5, 6, 10)))


def _datatrove(words: list[str]) -> tuple[dict, dict]:
    top = {n: find_top_duplicate(get_n_grams(words, n)) if len(words) >= n else None for n in (2, 3, 4)}
    return top, {n: find_all_duplicate(words, n) for n in (2, 3, 5, 6, 10)}


def test_kernels_count_what_datatrove_counts():
    lists = _word_lists()
    for words in lists:
        assert _ours(words) == _datatrove(words), words
    # the cases are not trivial: ties, repeats and "".join collisions ("ab c" vs "a bc") occur
    assert sum(1 for w in lists if _datatrove(w)[1][2] > 0) > 50


@pytest.mark.parametrize("kernel", ["top_ngram", "duplicated_ngram_chars"])
def test_a_hash_collision_hands_over_to_the_exact_count(monkeypatch, kernel):
    monkeypatch.setattr(ngram_kernels, kernel, lambda *a: COLLISION)
    for words in _word_lists(60):
        ours, theirs = _ours(words), _datatrove(words)
        part = 0 if kernel == "top_ngram" else 1
        assert ours[part] == theirs[part], words


def test_character_counts_for_the_chinese_family():
    text = "今天天气很好今天天气很好，我们去公园。今天天气很好"
    chars = list(text)
    assert repetition.dup_ngram_chars_exact(text, 4) == find_all_duplicate(chars, 4)
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    assert repetition.top_ngram_chars(cps, np.ones(len(cps), np.int64), 2, separator=0) == find_top_duplicate(
        ["".join(chars[i:i + 2]) for i in range(len(chars) - 1)])
