import json
import textwrap

import numpy as np

from decontam.benchmarks import BenchmarkItem, load_benchmark
from decontam.ngrams import NgramIndex, ngram_hashes, normalized_words, token_spans


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


def _real_text(module) -> str:
    """Real English prose: a stdlib module's docstrings."""
    import inspect

    return "\n\n".join(inspect.getdoc(o) or "" for _, o in inspect.getmembers(module) if callable(o))


def test_cjk_items_match_by_characters_through_spacing_and_full_width_forms():
    from decontam.benchmarks import BenchmarkItem

    q = "在中国古代，科举制度中殿试的主持者通常是下列哪一位？\n礼部尚书\n皇帝\n宰相\n翰林学士"
    index = NgramIndex.build([BenchmarkItem("cmmlu", "history/0", q, language="zh")], 13, cjk_n=15, min_n=8)
    assert index.lengths == [15]
    # re-typed with spaces, full-width digits and different punctuation, inside unrelated Chinese prose
    doc = "今天复习历史。题目：在 中国 古代, 科举制度中殿试的主持者通常是下列哪一位? 答案是皇帝。２０２６年。"
    assert {index.items[i] for _, _, i in index.lookup_all(normalized_words(doc))} == {("cmmlu", "history/0")}
    other = "中国古代的科举制度始于隋朝，殿试由皇帝亲自主持，考中者称为进士，这是常识。"
    assert index.lookup_all(normalized_words(other)) == []


def test_latex_spacing_and_choice_labels_do_not_hide_an_item():
    assert normalized_words(r"$\left( \dfrac{1}{2} \right)\,\quad x$") == normalized_words(r"$(\frac{1}{2}) x$")
    plain = "Which gas do plants absorb?\nOxygen\nCarbon dioxide\nNitrogen\nHelium"
    labelled = "Which gas do plants absorb?\nA. Oxygen\n(B) Carbon dioxide\nC) Nitrogen\n D. Helium"
    assert normalized_words(plain) == normalized_words(labelled)
    assert normalized_words("Turn left. A man (B) stood.") == ["turn", "left", "a", "man", "stood"]  # only labels and macros go


def test_short_items_are_indexed_whole_and_templates_are_excluded():
    template = "Answer the following question with only the letter of the correct option please now."
    items = [BenchmarkItem("b", str(i), f"{template} Question {w} " * 1) for i, w in enumerate(
        "red green blue cyan magenta yellow black white grey brown orange pink".split())]
    items.append(BenchmarkItem("b", "short", "What is the boiling point of water at sea level"))
    index = NgramIndex.build(items, 13, min_n=8, max_items_per_ngram=10)
    assert index.stats["excluded_template"] >= 1 and index.stats["benchmarks"]["b"]["indexed_whole"] == 1
    assert index.lookup_all(normalized_words(template)) == []  # the shared prompt alone flags nothing
    hits = index.lookup_all(normalized_words(f"Quiz: {template} Question magenta. Done."))
    assert {index.items[i] for _, _, i in hits} == {("b", "4")}
    hits = index.lookup_all(normalized_words("Trivia night: what is the boiling point of water at sea level? 100 C."))
    assert {index.items[i] for _, _, i in hits} == {("b", "short")}


def test_ngrams_common_in_clean_reference_text_are_excluded():
    from decontam.reference import exclude_common_ngrams

    quote = "to be or not to be that is the question whether tis nobler in the mind to suffer"
    item = BenchmarkItem("mmlu", "lit/0", f"Who wrote the line '{quote}'?\nMarlowe\nShakespeare\nJonson\nKyd")
    index = NgramIndex.build([item], 13)
    n_before = len(index.hashes)
    reference = [f"Act III. {quote} the slings and arrows", f"A famous soliloquy: {quote}.", "unrelated prose " * 20]
    info = exclude_common_ngrams(index, reference, min_docs=2)
    assert info["documents"] == 3 and info["excluded"] == 6 == n_before - len(index.hashes)
    assert index.lookup_all(normalized_words(f"Hamlet says: {quote}.")) == []
    assert index.lookup_all(normalized_words(item.text))  # the question itself still matches


def test_cut_removes_the_item_with_margin_and_keeps_unicode_text_intact(tmp_path):
    import json as _json

    from datatrove.data import Document

    from decontam.filter import NgramDecontaminationTagger
    from pipeline.core.documents import REMOVED_REASON

    item = load_benchmark("gsm8k")[5]
    index = NgramIndex.build([item], 13)
    path = index.save(str(tmp_path / "index"))
    before = "Notes 📚 — 今天的数学作业。Café résumé naïve. " + _real_text(json)[:3000]
    after = "Next section 🚀: " + _real_text(textwrap)[:3000] + " 结束。"
    original = f"{before}\n\n{item.text}\n\n{after}"
    long_doc = Document(id="long", text=original, metadata={"domain": "web", "source": "s"})
    short_doc = Document(id="short", text=f"See: {item.text} Thanks!", metadata={"domain": "web", "source": "s"})
    code_doc = Document(id="code", text=f"{before}\n{item.text}\n{after}", metadata={"domain": "code", "source": "s"})
    tagger = NgramDecontaminationTagger(path, str(tmp_path / "m"), "cut", {"code": "drop"}, cut_margin_tokens=5, cut_min_tokens=64)
    out = {d.id: d for d in tagger.run(iter([long_doc, short_doc, code_doc]))}
    cut = out["long"].text
    assert REMOVED_REASON not in out["long"].metadata
    assert index.lookup_all(normalized_words(cut)) == []
    assert cut.startswith("Notes 📚 — 今天的数学作业。Café résumé naïve.") and cut.endswith(" 结束。")
    kept_words = normalized_words(cut)
    assert len(kept_words) >= len(normalized_words(before)) + len(normalized_words(after)) - 10  # only the margin went
    assert out["short"].metadata[REMOVED_REASON] == "contaminated_after_cut:gsm8k"
    assert out["code"].metadata[REMOVED_REASON] == "contaminated:gsm8k"
    log = [_json.loads(x) for x in open(tmp_path / "m" / "00000.jsonl")]
    assert [r["action"] for r in log] == ["cut", "drop", "drop"]
    assert log[0]["matches"][0]["item"] == item.item_id and log[0]["matches"][0]["text"] in original


def test_a_hyphen_broken_line_end_is_joined_so_typeset_items_still_match():
    item = load_benchmark("gsm8k")[3]
    index = NgramIndex.build([item], 13)
    # re-wrapped at 40 columns with every long word at a line end split by a hyphen, as typeset pages are
    lines, line = [], ""
    for w in item.text.split():
        if len(line) + len(w) > 40 and len(w) >= 6 and w.isalpha() and line:
            lines.append(f"{line} {w[:3]}-")
            line = w[3:]
        else:
            line = f"{line} {w}".strip()
    wrapped = "\n".join([*lines, line])
    assert "-\n" in wrapped and normalized_words(wrapped) == normalized_words(item.text)
    assert index.lookup_all(normalized_words(f"Worksheet 3.\n{wrapped}\nEnd."))
    assert normalized_words("an X-\nRay, a well-\nknown case") == ["an", "x", "ray", "a", "wellknown", "case"]


def test_runs_of_one_letter_symbols_and_numbers_are_not_indexed():
    """A MATH solution's polynomial ("x 11 x 10 x 9 ...") also occurs in JavaScript and TeX manuals: such
    n-grams carry no words and are left out, while the item's prose still matches."""
    item = next(i for i in load_benchmark("math") if i.item_id == "intermediate_algebra/804")
    index = NgramIndex.build([item], 13)
    assert index.lookup_all(normalized_words("const v = [x**11, x**10, x**9, x**8, x**7, x**6, x**5, x**4, x**3, x**2, x**1]")) == []
    assert index.lookup_all(normalized_words(item.text[:400]))


def test_split_n_grams_find_a_short_item_split_across_paragraphs():
    item = next(i for i in load_benchmark("arc_challenge") if 18 <= len(normalized_words(i.text)) < 26)
    mid = token_spans(item.text)[len(normalized_words(item.text)) // 2][0]  # halves of under 13 tokens each
    doc = item.text[:mid] + "\n\nAn unrelated paragraph about the weather in spring.\n\n" + item.text[mid:]
    assert NgramIndex.build([item], 13).lookup_all(normalized_words(doc)) == []  # each half is under 13 tokens
    split = NgramIndex.build([item], 13, split_n=8)
    assert {split.items[i] for _, _, i in split.lookup_all(normalized_words(doc))} == {(item.benchmark, item.item_id)}
    assert split.stats["benchmarks"]["arc_challenge"]["split_indexed"] == 1
