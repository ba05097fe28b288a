import numpy as np

from decontam.benchmarks import BenchmarkItem, load_benchmark
from decontam.ngrams import NgramIndex, ngram_hashes, normalized_words


def test_normalisation_ignores_case_punctuation_and_spacing():
    a = normalized_words("Janet’s ducks lay 16 eggs per day.  She eats THREE for breakfast!")
    b = normalized_words("janet s   ducks lay 16 eggs, per day -- she eats three for\nbreakfast")
    assert a == b
    assert normalized_words(r"$x^2+x-6=(x-2)(x+3)$") == normalized_words(r"$ x^2 + x - 6 = ( x - 2 ) ( x + 3 ) $")


def test_index_finds_items_inside_longer_text_and_nothing_else(tmp_path):
    items = load_benchmark("gsm8k")[:50] + load_benchmark("humaneval")[:20]
    index = NgramIndex.build(items, 13)
    path = index.save(str(tmp_path))
    index = NgramIndex.load(path)
    target = items[7]
    doc = "Some unrelated preamble about farming in spring. " + target.text.upper() + " and a closing remark."
    words = normalized_words(doc)
    pos, owners = index.lookup(ngram_hashes(words, 13))
    assert len(pos) > 0 and {index.items[i] for i in owners} == {(target.benchmark, target.item_id)}
    clean = normalized_words(open(np.__file__.replace("__init__.py", "_globals.py")).read())
    assert len(index.lookup(ngram_hashes(clean, 13))[0]) == 0


def test_short_text_has_no_ngrams():
    assert len(ngram_hashes(["a"] * 12, 13)) == 0
    assert len(ngram_hashes(["a"] * 13, 13)) == 1
    idx = NgramIndex.build([BenchmarkItem("b", "1", "too short")], 13)
    assert len(idx.hashes) == 0
