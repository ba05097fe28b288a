"""Decontamination on the hard cases found by bench/decontam_quality_speed.py: Chinese exam pages (option
labels, Traditional script), corpus boilerplate shared by an item, and a famous passage quoted by an item."""

import csv
import re

from datatrove.data import Document

from decontam.benchmarks import load_benchmark
from decontam.build import apply_corpus_counts, build_index
from decontam.config import DecontamConfig
from decontam.corpus_common import CorpusNgramCounter
from decontam.filter import NgramDecontaminationTagger
from decontam.ngrams import NgramIndex, normalized_words
from tests.corpora import chinese_manpages, english_quotations

BOILERPLATE = "本页面中文版由中文 man 手册页计划提供。"  # the translation credit at the end of most zh_CN pages


def _ceval_folder(tmp_path, question: str, explanation: str = "") -> str:
    """One item in C-Eval's public layout, read back through the project's loader."""
    root = tmp_path / "benchmarks"
    (root / "ceval" / "val").mkdir(parents=True)
    with open(root / "ceval" / "val" / "manual_val.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "question", "A", "B", "C", "D", "answer", "explanation"])
        w.writeheader()
        w.writerow({"id": 0, "question": question, "A": "登录时间", "B": "退出时间", "C": "连接时间", "D": "审计文件",
                    "answer": "C", "explanation": explanation})
    return str(root)


def _ac_sentence() -> str:
    page = next(d for d in chinese_manpages(locale="zh_CN") if d["id"].endswith("man1/ac.1.gz"))
    return re.search(r"基于当前的[^。]+。", page["text"]).group()


def _flagged(index_path, texts, tmp_path, **kw) -> list[set]:
    tagger = NgramDecontaminationTagger(index_path, str(tmp_path / "matches"), default_action="flag", **kw)
    docs = list(tagger.run(iter(Document(id=str(i), text=t) for i, t in enumerate(texts))))
    return [{(m["benchmark"], m["item"]) for m in d.metadata.get("decontam_matches", [])} for d in docs]


def test_chinese_option_labels_are_blanked_like_ascii_ones():
    plain = "下列哪个是审计文件\n登录时间\n退出时间"
    for labelled in ("下列哪个是审计文件\nA、登录时间\nB、退出时间", "下列哪个是审计文件 （A）登录时间 （B）退出时间",
                     "下列哪个是审计文件\nＡ．登录时间\nＢ．退出时间", "下列哪个是审计文件 A：登录时间 B)退出时间"):
        assert normalized_words(labelled) == normalized_words(plain), labelled
    assert normalized_words("P(A) 与 AB、CD") == ["p", "与", "ab", "cd"]  # only labels go, not names or formulas


def test_a_chinese_item_is_found_in_a_traditional_script_copy_with_chinese_labels(tmp_path):
    from opencc_purepy import OpenCC

    question = _ac_sentence()
    folder = _ceval_folder(tmp_path, question)
    [item] = load_benchmark("ceval", folder)
    index = NgramIndex.build([item], 13, cjk_n=15, min_n=8)
    page = OpenCC("s2t").convert(f"習題一：{question}\nA、登录时间  B、退出时间  C、连接时间  D、审计文件")
    assert page != question and "連接" in page  # really in Traditional characters
    assert {index.items[i] for _, _, i in index.lookup_all(normalized_words(page))} == {("ceval", "manual/val/0")}


def test_corpus_boilerplate_in_an_item_stops_flagging_every_page_but_the_leak_is_still_found(tmp_path):
    pages = [d["text"] for d in chinese_manpages(locale="zh_CN")]
    question = _ac_sentence()
    clean = [p for p in pages if question not in p]
    with_credit = sum(BOILERPLATE in p for p in clean)
    assert with_credit > 100  # real boilerplate: the credit closes most pages
    leak = f"{clean[0][:2000]}\n\n{question}\nA. 登录时间\nB. 退出时间\nC. 连接时间\nD. 审计文件\n答案：C\n解析：{BOILERPLATE}"
    corpus = [leak, *clean]
    cfg = DecontamConfig(benchmarks=["ceval"], benchmark_dir=_ceval_folder(tmp_path, question, explanation=BOILERPLATE))
    index_path, stats = build_index(cfg, str(tmp_path / "index"))
    before = _flagged(index_path, corpus, tmp_path / "before")
    assert sum(bool(f) for f in before) > 100  # without the pass, every page with the credit is "contaminated"

    counts = str(tmp_path / "counts")
    half = len(corpus) // 2
    for rank, part in enumerate((corpus[:half], corpus[half:])):  # two tasks, merged as the stage merges them
        list(CorpusNgramCounter(index_path, counts).run(iter(Document(id=str(i), text=t) for i, t in enumerate(part)), rank, 2))
    index_path, stats = apply_corpus_counts(cfg, index_path, counts, stats)
    cc = stats["corpus_common"]
    assert cc["documents"] == len(corpus) and cc["threshold"] == 50 and cc["excluded"] > 0
    assert any("手 册 页 计 划" in e["ngram"] for e in cc["examples"])
    after = _flagged(index_path, corpus, tmp_path / "after")
    assert after[0] == {("ceval", "manual/val/0")}  # the leaked item, found by its own n-grams
    assert not any(after[1:])


def test_min_item_coverage_drops_a_quoted_passage_and_would_drop_a_short_problem(tmp_path):
    # a quotation page that holds the same Thomas Paine passage an MMLU history item quotes
    item = next(it for it in load_benchmark("mmlu") if it.item_id == "high_school_european_history/123")
    page = next(d["text"] for d in english_quotations() if "creed professed by the Jewish Church" in d["text"])
    math = next(it for it in load_benchmark("math") if it.item_id == "algebra/38")  # its problem: 9% of the item
    problem = math.text.split("\n")[0]  # the problem without its worked solution
    index = NgramIndex.build([item, math], 13, min_n=8)
    path = index.save(str(tmp_path / "index"))
    assert index.coverage(index.lookup_all(normalized_words(page)))[0] < 0.2
    texts = [page, f"Homework.\n{problem}\nShow your work."]
    assert _flagged(path, texts, tmp_path / "any") == [{("mmlu", item.item_id)}, {("math", "algebra/38")}]
    assert _flagged(path, texts, tmp_path / "cov", min_item_coverage=0.2) == [set(), set()]


def test_a_short_problem_leaked_without_its_solution_is_found(tmp_path):
    # MATH intermediate_algebra/53: the problem is 10 tokens, under one 13-gram; the item (with its worked
    # solution) is far longer, so only the problem indexed whole finds a problem set without answers
    item = next(it for it in load_benchmark("math") if it.item_id == "intermediate_algebra/53")
    assert item.prompt and len(normalized_words(item.prompt)) < 13 < len(normalized_words(item.text))
    index = NgramIndex.build([item], 13, min_n=8, split_n=8)
    page = f"Homework for Monday.\n\n{item.prompt}\n\nHand it in on Friday."
    assert {index.items[i] for _, _, i in index.lookup_all(normalized_words(page))} == {("math", item.item_id)}
    assert index.stats["benchmarks"]["math"]["prompt_indexed_whole"] == 1
