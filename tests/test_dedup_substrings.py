"""Suffix-array substring dedup on real code and on CJK/emoji text, over bytes and over int32 Qwen3 tokens:
the first occurrence of a repeated span stays, later ones are cut on character boundaries."""

import os
import sysconfig

import pytest
from datatrove.data import Document

from dedup.substrings import SubstringDeduplicator, byte_ranges_to_chars
from pipeline.core.assets import QWEN3_TOKENIZER
from pipeline.core.documents import REMOVED_REASON
from tests.corpora import code_files
from tests.realdata import need


def _stdlib(name: str) -> str:
    return open(os.path.join(sysconfig.get_paths()["stdlib"], name), encoding="utf-8").read()


def _run(docs, **kw):
    step = SubstringDeduplicator(["code", "web"], **kw)
    return {d.id: d for d in step.run(iter(docs))}


@pytest.mark.parametrize("unit", ["bytes", "tokens"])
def test_a_function_pasted_into_another_file_is_cut_from_the_later_file(unit):
    a, b = _stdlib("textwrap.py"), _stdlib("shlex.py")
    start = a.index("def dedent(")
    block = a[start : a.index("\ndef ", start + 10)]  # one real function, ~1.5 KB
    assert len(block) > 1000
    pasted = b[:3000] + "\n\n" + block + "\n\n" + b[3000:6000]
    docs = [Document(id="a", text=a, metadata={"domain": "code"}), Document(id="b", text=pasted, metadata={"domain": "code"}),
            Document(id="other", text=pasted, metadata={"domain": "book"})]  # a domain not selected: untouched
    length = 100 if unit == "bytes" else 30
    out = _run(docs, unit=unit, min_length=length, tokenizer_path=QWEN3_TOKENIZER)
    assert block in out["a"].text  # the first occurrence stays (textwrap.py's own internal repeats may go)
    assert block[200:-200] not in out["b"].text and b[:2000] in out["b"].text and b[3500:6000] in out["b"].text
    assert 0 < len(pasted) - len(out["b"].text) <= len(block) + 10
    assert out["other"].text == pasted


def test_real_c_headers_lose_only_their_repeated_boilerplate():
    headers = [h for h in need(code_files, "c") if f"{os.sep}linux{os.sep}" in h][:60]
    assert len(headers) == 60
    docs = [Document(id=h, text=open(h, encoding="utf-8", errors="replace").read(), metadata={"domain": "code"}) for h in headers]
    original = {d.id: d.text for d in docs}
    out = _run(docs, min_length=120)
    changed = [i for i, d in out.items() if d.text != original[i] or d.metadata.get(REMOVED_REASON)]
    assert changed  # licence lines repeat across kernel headers
    for i in changed:  # what is left is a subsequence of the original, in order
        it = iter(original[i])
        assert all(ch in it for ch in out[i].text)


@pytest.mark.parametrize("unit", ["bytes", "tokens"])
def test_cuts_keep_cjk_and_emoji_intact(unit):
    span = "数据去重是预训练语料处理中最重要的步骤之一🙂，重复的段落会让模型记住噪声😀而不是学到知识。" * 3
    first = "第一篇文章：" + span + "结束。"
    second = "第二篇🚀文章的开头完全不同，讨论的是别的话题。" + span + "这里是第二篇的结尾，也不一样。"
    out = _run([Document(id="1", text=first, metadata={"domain": "web"}), Document(id="2", text=second, metadata={"domain": "web"})],
               unit=unit, min_length=60 if unit == "bytes" else 20, min_doc_fraction=0.1, tokenizer_path=QWEN3_TOKENIZER)
    assert out["1"].text == first
    cut = out["2"].text
    assert cut.startswith("第二篇🚀文章的开头完全不同") and cut.endswith("这里是第二篇的结尾，也不一样。")
    assert span not in cut and len(cut) < len(second) - len(span) // 2
    cut.encode("utf-8")  # no broken surrogate or partial character


def test_a_document_that_is_almost_all_repeat_is_removed():
    text = _stdlib("textwrap.py")[:5000]
    out = _run([Document(id="x", text=text, metadata={"domain": "code"}),
                Document(id="y", text=text + "\n# end", metadata={"domain": "code"})])
    assert out["y"].metadata[REMOVED_REASON] == "substring_duplicate"
    assert REMOVED_REASON not in out["x"].metadata


def test_byte_ranges_snap_to_whole_characters():
    data = "a😀b中c".encode()
    assert byte_ranges_to_chars(data, [(0, len(data))]) == [(0, 5)]
    assert byte_ranges_to_chars(data, [(2, 6)]) == [(2, 3)]  # the tail of the emoji is skipped, "b" is whole
    assert byte_ranges_to_chars(data, [(1, 5)]) == [(1, 2)]  # exactly the emoji
    assert byte_ranges_to_chars(data, [(2, 5)]) == []  # only part of it: nothing


def test_intervals_merged_in_numpy_equal_the_merged_ranges_per_document():
    import random

    import numpy as np

    from dedup.substrings import merge_intervals
    from pipeline.core.ranges import merge_ranges

    rng = random.Random(0)
    for _ in range(200):
        n = rng.randrange(0, 60)
        group = np.array([rng.randrange(4) for _ in range(n)], np.int64)
        start = np.array([rng.randrange(1000) for _ in range(n)], np.int64)
        end = start + np.array([rng.randrange(1, 80) for _ in range(n)], np.int64)
        got, want = {}, {}
        for g, s, e in zip(*(a.tolist() for a in merge_intervals(group, start, end))):
            got.setdefault(g, []).append((s, e))
        for g, s, e in zip(group.tolist(), start.tolist(), end.tolist()):
            want.setdefault(g, []).append((s, e))
        assert got == {g: merge_ranges(r) for g, r in want.items()}
