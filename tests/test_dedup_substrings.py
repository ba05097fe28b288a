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


@pytest.mark.parametrize("dtype", ["uint8", "int32"])
def test_repeated_ranges_equal_a_naive_suffix_sort_of_the_shard(dtype):
    """The chunked coverage fold gives the ranges of the definition: for each pair of suffixes adjacent in
    sorted order sharing >= min_length units, the later one's span (clipped to its document), merged per
    document; on small shards with planted repeats, empty documents and chunks of a few positions."""
    import random

    import numpy as np

    from dedup.substrings import repeated_ranges
    from pipeline.core.ranges import merge_ranges

    rng = random.Random(0)
    for trial in range(150):
        alphabet = rng.choice([2, 4, 300 if dtype == "int32" else 200])
        docs = []
        for _ in range(rng.randrange(1, 7)):
            doc = [rng.randrange(alphabet) for _ in range(rng.randrange(0, 40))]
            if docs and rng.random() < 0.6:  # a piece of an earlier document pasted in
                src = rng.choice(docs)
                a = rng.randrange(len(src) + 1)
                doc[rng.randrange(len(doc) + 1):0] = src[a : a + rng.randrange(1, 25)]
            docs.append(doc)
        seq = np.array([u for d in docs for u in d], dtype)
        starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
        min_length = rng.randrange(2, 9)
        units = seq.tolist()
        sa = sorted(range(len(units)), key=lambda i: units[i:])
        want = [[] for _ in docs]
        for x, y in zip(sa, sa[1:]):
            common = 0
            while max(x, y) + common < len(units) and units[x + common] == units[y + common]:
                common += 1
            later = max(x, y)
            d = int(np.searchsorted(starts, later, side="right")) - 1
            end = min(later + common, int(starts[d + 1]))
            if common >= min_length and end - later >= min_length:
                want[d].append((later - int(starts[d]), end - int(starts[d])))
        got = repeated_ranges(seq, starts, min_length, chunk=rng.choice([1, 3, 7, 1 << 20]))
        assert got == [merge_ranges(r) for r in want], trial
