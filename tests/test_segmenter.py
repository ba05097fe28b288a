"""filters/segmenter.py: jieba's segmentation word for word, with Han-only blocks cut by rjieba, shared by the
heuristic pass and the Chinese family."""

from __future__ import annotations

import numpy as np
import pytest

from filters import segmenter as segmenter_module
from filters.segmenter import JiebaSegmenter, jieba_module
from tests.corpora import chinese_fortunes, chinese_manpages
from tests.realdata import need

EDGE_CASES = [
    "",
    "   ",
    "北京大学的图书馆",  # one Han-only block
    "ChatGPT是OpenAI开发的模型, version 3.5 价格 100元。",
    "s-1ADDR 与 SESSION_USER 和 masi.ibp.fr",  # where rjieba alone differs from jieba
    "第一行\r\n第二行\t第三行\n\n",
    "㐀㐁𠀀𠀁 漢字 emoji 😀 中文",  # CJK extension A/B, outside jieba's Han range
    "这是一个很长的句子" * 500,
    "<b>[red]富文本[/red]</b>\x1b[31m红色\x1b[0m",
]


def _corpus() -> list[str]:
    docs = need(chinese_manpages, locale="zh_CN") + need(chinese_manpages, locale="zh_TW") + need(chinese_fortunes)
    return [d["text"] for d in docs]


def test_segmenter_cuts_every_document_as_jieba_does():
    """Every Chinese test document (Simplified and Traditional manpages, classical fortunes) and the edge cases
    come out word for word as ``jieba.lcut``; without the block split (rjieba on whole texts) they would not."""
    import rjieba

    jieba = jieba_module()
    texts = EDGE_CASES + _corpus()
    ours = JiebaSegmenter()
    assert all(ours.lcut(t) == jieba.lcut(t) for t in texts)
    assert any(rjieba.cut(t) != jieba.lcut(t) for t in texts)  # the case the block split is there for


def test_segmenter_memo_is_bounded_and_gives_the_same_words(monkeypatch):
    texts = _corpus()[:80]
    unbounded = [list(JiebaSegmenter().lcut(t)) for t in texts]
    monkeypatch.setattr(segmenter_module, "MAX_MEMO_BLOCKS", 50)
    ours = JiebaSegmenter()
    sizes = []
    for t, expected in zip(texts, unbounded):
        assert ours.lcut(t) == expected
        sizes.append(len(ours._memo))
    assert max(sizes) <= 50 and sizes != sorted(sizes)  # dropped along the way


def test_one_segmentation_serves_the_heuristic_pass_and_the_chinese_family(monkeypatch):
    """The fused pass (spaCy's Chinese tokenizer) and the Chinese family segment a document once between them,
    and spaCy's tokens with our segmenter are the tokens of spaCy's own jieba tokenizer."""
    import spacy
    from spacy.attrs import IDX, ORTH

    from filters import spacy_tokens
    from filters.chinese import chinese_signals
    from filters.segmenter import segmenter

    text = next(t for t in _corpus() if len(t) > 2000)
    stock = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}}).tokenizer
    spacy_tokens.spacy_tokenizer.cache_clear()
    cuts = []
    shared = segmenter()
    monkeypatch.setattr(shared, "_rust_cut", lambda block, real=shared._rust_cut: cuts.append(block) or real(block))
    shared._last = ("", [])
    tok = spacy_tokens.Tokens(text, "zh")
    blocks = len(cuts)
    chinese_signals(text, [2], [5])
    assert blocks > 0 and len(cuts) == blocks  # the second family segmented nothing again
    expected = stock(text).to_array([ORTH, IDX])
    assert np.array_equal(tok.orth, expected[:, 0]) and np.array_equal(tok.idx, expected[:, 1].astype(np.int64))
    spacy_tokens.spacy_tokenizer.cache_clear()


def test_segmenter_refuses_full_mode():
    with pytest.raises(ValueError, match="accurate mode"):
        JiebaSegmenter().cut("中文", cut_all=True)
