"""The fused heuristic pass makes datatrove's decisions: the same documents kept, the same reason for each
removed one, the same text after C4's line edit, on thousands of real documents."""

from __future__ import annotations

import os

import numpy as np
import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters.base_filter import get_filter_result

from filters.c4 import c4_edit, c4_reason
from filters.config import RuleSet
from filters.fineweb import fineweb_reason
from filters.gopher import gopher_quality_reason, gopher_repetition_reason
from filters.heuristics import HeuristicSettings, compute_signals
from filters.spacy_tokens import Tokens, sentence_cuts
from tests.corpora import shakespeare_speeches, spam_assassin
from tests.realdata import need

FAMILIES = (("gopher_repetition", gopher_repetition_reason), ("gopher_quality", gopher_quality_reason),
            ("c4", c4_reason), ("fineweb", fineweb_reason))


def _datatrove(text: str, params: dict) -> tuple[str | None, str]:
    chain = [("gopher_repetition", GopherRepetitionFilter(**params.get("gopher_repetition", {}))),
             ("gopher_quality", GopherQualityFilter(**params.get("gopher_quality", {}))),
             ("c4", C4QualityFilter(**params.get("c4", {}))),
             ("fineweb", FineWebQualityFilter(**params.get("fineweb", {})))]
    doc = Document(text=text, id="d")
    for name, flt in chain:
        keep, reason = get_filter_result(flt.filter(doc))
        if not keep:
            return f"{name}:{reason}", text
    return None, doc.text


def _fused(text: str, rules: RuleSet, settings: HeuristicSettings) -> tuple[str | None, str]:
    sig, _ = compute_signals(text, settings)
    for name, decide in FAMILIES:
        reason = decide(sig, getattr(rules, name))
        if reason:
            return f"{name}:{reason}", text
    return None, c4_edit(text, sig, rules.c4.remove_citations)


@pytest.fixture(scope="module")
def real_docs():
    mails = need(spam_assassin, limit=900)  # 900 per folder kind: easy ham, hard ham (250), spam
    return [d["text"] for d in mails] + [d["text"] for d in shakespeare_speeches(300)]


@pytest.mark.slow  # datatrove's four chained filters over 2,000+ documents
def test_same_decisions_as_datatrove_on_real_documents(real_docs):
    assert len(real_docs) >= 2000
    rules, settings = RuleSet(), HeuristicSettings()
    mismatches = []
    outcomes = set()
    for i, text in enumerate(real_docs):
        theirs, ours = _datatrove(text, {}), _fused(text, rules, settings)
        outcomes.add(theirs[0])
        if theirs != ours:
            mismatches.append((i, theirs[0], ours[0]))
    assert not mismatches, mismatches[:5]
    # the corpus exercises every family: keeps, and removals by each of the four
    assert None in outcomes
    assert {o.split(":")[0] for o in outcomes if o} == {"gopher_repetition", "gopher_quality", "c4", "fineweb"}


def test_same_decisions_with_other_thresholds(real_docs):
    """Different parameters (retuned thresholds, switches off) still match datatrove document by document."""
    params = {
        "gopher_repetition": {"dup_line_frac": 0.5, "top_n_grams": ((2, 0.3), (3, 0.25), (4, 0.2)), "dup_para_frac": 0},
        "gopher_quality": {"min_doc_words": 20, "max_non_alpha_words_ratio": 0.6, "min_stop_words": 1},
        "c4": {"min_num_sentences": 2, "filter_curly_bracket": False, "filter_lorem_ipsum": False},
        "fineweb": {"line_punct_thr": 0.05, "line_punct_exclude_zero": True, "char_duplicates_ratio": 0.05},
    }
    rules = RuleSet.model_validate({k: {kk: (list(map(list, vv)) if isinstance(vv, tuple) else vv) for kk, vv in v.items()}
                                    for k, v in params.items()})
    settings = HeuristicSettings()
    sample = real_docs[::3]
    bad = [i for i, t in enumerate(sample) if _datatrove(t, params) != _fused(t, rules, settings)]
    assert not bad, bad[:5]


def test_tokens_equal_spacy_on_real_documents(real_docs):
    """The memoised chunk tokenizer gives spaCy's tokens: offsets, lengths, texts and whitespace tokens."""
    import spacy

    nlp = spacy.blank("en")
    for text in real_docs[:400] + ["  leading space", "tabs\tand\u00a0nbsp  double  spaces ", "(don't) U.S.A. e.g. :-)"]:
        doc = nlp.tokenizer(text)
        ours = Tokens(text, "en")
        assert list(ours.idx) == [t.idx for t in doc]
        assert list(ours.length) == [len(t) for t in doc]
        assert list(ours.space) == [t.is_space for t in doc]
        assert list(ours.punct[~ours.space]) == [t.is_punct for t in doc if not t.is_space]


def test_plain_english_words_are_one_token_as_spacy_makes_them(real_docs):
    """The memo's shortcut for English (an ASCII-letter chunk that is no special case is one token, hashed
    without a tokenizer call) gives spaCy's tokens for every such word of the corpus, for the special cases
    made of letters ("cannot", "gonna", which the shortcut must leave to spaCy), and across their cases."""
    import spacy

    from filters import spacy_tokens

    tokenizer = spacy.blank("en").tokenizer
    specials = [w for w in tokenizer.rules if w.isascii() and w.isalpha()]
    words = sorted({w for text in real_docs for w in text.split() if w.isascii() and w.isalpha()})
    words += [v for w in specials for v in (w, w.upper(), w.capitalize())] + ["cannot", "Cannot", "gonna", "Im"]
    words += ["NOUN", "PERSON", "ORTH", "nsubj", "DATE"]  # spaCy's symbol names: their orth is the symbol's id
    assert len(words) > 10_000 and len(specials) > 100
    memo = spacy_tokens._ChunkMemo("en")
    for start in range(0, len(words), 500):  # chunks met for the first time, as in a document
        batch = words[start:start + 500]
        orth, punct, space, idx, length = memo.tokens(" ".join(batch), np.frombuffer(" ".join(batch).encode("utf-32-le"), np.uint32))
        doc = tokenizer(" ".join(batch))
        assert list(orth) == [t.orth for t in doc] and list(length) == [len(t) for t in doc]
        assert not punct.any() and not space.any()
    assert [memo.nlp.vocab.strings[int(h)] for h in memo.chunk_orth("cannot")] == ["can", "not"]
    assert memo.plain_words and len(memo.chunk_orth("Hello")) == 1


def test_memoised_chunks_do_not_depend_on_their_batch_or_the_memos_history(real_docs, monkeypatch):
    """spaCy's special-case matcher reads token sequences across single spaces: in a batch joined by spaces,
    ``:(`` across the joiner would suppress the emoticon ``):`` of ``file):``. Chunks are tokenized as if alone,
    and a document where two chunks could form a special case is tokenized whole, so the tokens are spaCy's on
    the document whatever the memo held before (here reset every 500 chunks)."""
    import spacy

    from filters import spacy_tokens

    nlp = spacy.blank("en")
    memo = spacy_tokens._ChunkMemo("en")
    memo._tokenize_new(["file):", "((Udhay", "x"])
    assert [memo.nlp.vocab.strings[int(h)] for h in memo.chunk_orth("file):")] == ["file", "):"]
    monkeypatch.setattr(spacy_tokens, "MAX_MEMO_CHUNKS", 500)
    spacy_tokens.chunk_memo.cache_clear()
    crafted = ["see file): ((Udhay Shankar N))", "He said :( and left):", "Mr. Smith met Dr. Who at 5 p.m. today."]
    for text in crafted + real_docs[:300] + crafted:
        doc = nlp.tokenizer(text)
        ours = Tokens(text, "en")
        assert list(ours.idx) == [t.idx for t in doc] and list(ours.length) == [len(t) for t in doc], text[:80]
    spacy_tokens.chunk_memo.cache_clear()


def test_chinese_tokens_are_spacys_chinese_tokenizer():
    """Chinese tokens are built from the segmenter's words without spaCy's Doc: the same tokens, offsets,
    lengths, orth ids (symbol names such as "NOUN" get spaCy's symbol id, not a hash), is_punct and is_space
    as spaCy's Chinese tokenizer gives, on real Chinese pages and on whitespace and punctuation edge cases;
    and no vocabulary grows with the words met."""
    from spacy.attrs import IDX, IS_PUNCT, IS_SPACE, LENGTH, ORTH

    from filters import spacy_tokens
    from tests.corpora import chinese_manpages

    crafted = ["", " ", "  \n\t ", " 开头有空格", "结尾有空格 ", "中文  两个空格\n\n换行\t制表", "NOUN 和 PERSON，ORTH。",
               "标点……！？——“引号”（括号）", "混合 English words, 123.45 和 e-mail a@b.cn", "\u3000全角空格\u3000", "a\r\nb"]
    texts = crafted + [d["text"] for d in need(chinese_manpages, 200)]
    tokenizer = spacy_tokens.spacy_tokenizer("zh")
    strings_before = len(tokenizer.vocab.strings)
    ours = [Tokens(t, "zh") for t in texts]
    assert len(tokenizer.vocab.strings) == strings_before  # built without spaCy's vocabulary
    for text, tok in zip(texts, ours):
        doc = tokenizer(text)
        arr = doc.to_array([ORTH, IS_PUNCT, IS_SPACE, IDX, LENGTH]) if len(doc) else np.zeros((0, 5), np.uint64)
        assert tok.orth.tolist() == arr[:, 0].tolist(), text[:60]
        assert tok.punct.tolist() == arr[:, 1].astype(bool).tolist(), text[:60]
        assert tok.space.tolist() == arr[:, 2].astype(bool).tolist(), text[:60]
        assert tok.idx.tolist() == arr[:, 3].tolist() and tok.length.tolist() == arr[:, 4].tolist(), text[:60]
    assert sum(len(t.orth) for t in ours) > 50_000 and ours[6].orth[0] == 92  # spaCy's symbol id of NOUN


def test_c4_lorem_and_curly_order_and_citations():
    text = ("This line is fine and long enough to stay.\n"
            "Some code {x} here and there, not allowed.\n"
            "Lorem ipsum dolor sit amet, consectetur.\n"
            "A citation[1] ends this sentence with more words.\n") * 2
    for lorem in (True, False):
        for curly in (True, False):
            params = {"c4": {"filter_lorem_ipsum": lorem, "filter_curly_bracket": curly, "min_num_sentences": 1}}
            rules = RuleSet.model_validate(params)
            assert _datatrove(text, params) == _fused(text, rules, HeuristicSettings())


def test_empty_and_degenerate_texts_do_not_crash():
    settings = HeuristicSettings()
    for text in ("", " ", "\n\n", "...", "#", "a", "word " * 3):
        sig, _ = compute_signals(text, settings)
        assert isinstance(sig, dict)
    assert np.isfinite(compute_signals("one two three. " * 20, settings)[0]["avg_word_length"])


@pytest.mark.slow  # datatrove sentence mode: a spaCy pipeline call per document
def test_c4_sentence_mode_matches_datatrove(real_docs):
    """``split_paragraph: false``: C4 judges spaCy sentences of the whole document and joins the kept ones
    with spaces; decisions and edited text match datatrove's, and FineWeb reads that edited text."""
    params = {"c4": {"split_paragraph": False, "min_num_sentences": 3}}
    rules = RuleSet.model_validate(params)
    settings = HeuristicSettings(c4_split_paragraph=False)
    sample = real_docs[::4] + [
        "Hello.World is glued. Then a second one! And a third? \"Quoted.\" Fine words here.",
        "no final mark at all but many words here\nand a second line with words",
        "First sentence [1] with a citation. Second one {braces} here. Third, with javascript in it.",
    ]
    outcomes, bad = set(), []
    for i, text in enumerate(sample):
        theirs, ours = _datatrove(text, params), _fused(text, rules, settings)
        outcomes.add(theirs[0])
        if theirs != ours:
            bad.append((i, theirs[0], ours[0]))
    assert not bad, bad[:5]
    assert None in outcomes and "c4:too_few_sentences" in outcomes
    kept = [t for t in sample if _datatrove(t, params)[0] is None]
    assert any("\n" not in _fused(t, rules, settings)[1] and ". " in _fused(t, rules, settings)[1] for t in kept)


def test_sentence_cuts_are_datatrove_splits(real_docs):
    from datatrove.utils.text import split_into_sentences


    for text in real_docs[:300] + ["A. B. c? (D!) e", "Mr. Smith went. U.S.A. is big.\n\nNew para", "..."]:
        tok = Tokens(text, "en")
        cuts = [0] + sentence_cuts(tok, "en") + [len(text)]
        assert [text[a:b] for a, b in zip(cuts[:-1], cuts[1:])] == split_into_sentences(text, "en")


def test_spacy_tokenization_does_not_import_torch():
    """A filter worker tokenizes with spaCy without importing torch (thinc would, at ~180 MiB per worker), and
    torch still imports afterwards in the same process."""
    import subprocess
    import sys

    code = ("import sys; from filters.spacy_tokens import Tokens; Tokens('Hello, world.', 'en'); Tokens('中文分词', 'zh');"
            "print('torch' in sys.modules); import torch; print(torch.tensor([1]).item())")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == ["False", "1"]
