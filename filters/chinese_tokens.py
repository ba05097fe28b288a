"""Chinese tokens as spaCy's Chinese tokenizer (jieba segmenter) gives them, built from the segmenter's words
without spaCy's Doc or vocabulary (``Tokens(text, "zh")`` in ``spacy_tokens.py``)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from filters.spacy_tokens import char_tables, import_spacy


@lru_cache(maxsize=1)
def unicode_punct_table() -> np.ndarray:
    """Per code point: its Unicode category is punctuation (P*), spaCy's ``is_punct`` for one character."""
    import unicodedata

    every = map(chr, range(0x110000))
    return np.fromiter((unicodedata.category(c)[0] == "P" for c in every), dtype=bool, count=0x110000)


def chinese_tokens(text: str, cp: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """What spaCy's Chinese tokenizer (jieba segmenter) gives, without building its Doc: the segmenter's words
    placed in the text as ``spacy.util.get_words_and_spaces`` places them (a whitespace gap before a word is a
    token, one space after a word is absorbed, the rest of the text is a last token), orth = spaCy's id of the
    token's text (its hash, or a symbol's id), is_punct = every character's category is punctuation (spaCy's lexeme getter), is_space =
    ``str.isspace``. Half of a Chinese document's heuristic pass was spaCy aligning words and making lexemes;
    here no vocabulary is kept either, so a worker's memory does not grow with the words it meets."""
    import_spacy()  # without torch (thinc would import it)
    from spacy.strings import get_string_id  # spaCy's orth: a symbol's id for its names ("NOUN"), else the hash

    from filters.segmenter import segmenter

    if cp is None:
        cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    n = len(text)
    # the segmenter's words are whitespace runs or whitespace-free, and the latter cover the text's other
    # characters in order (spaCy checks as much): word k starts at the non-space character after the ones
    # the words before it cover
    words = [w for w in segmenter().lcut(text) if w and not w.isspace()]
    sizes = np.fromiter(map(len, words), np.int64, len(words))
    solid = np.flatnonzero(~char_tables()[2][cp])
    if int(sizes.sum()) != len(solid):
        raise ValueError(f"the segmenter's words do not cover the text's non-space characters: {text[:80]!r}")
    w_start = solid[np.cumsum(sizes) - sizes] if len(words) else np.zeros(0, np.int64)
    w_end = w_start + sizes
    # one space after a word is absorbed (spaCy's ``spaces``); any other whitespace before a word is a token
    after = w_end + ((w_end < n) & (cp[np.minimum(w_end, max(n - 1, 0))] == 32)) if n else w_end
    before = np.concatenate(([0], after[:-1])) if len(words) else np.zeros(0, np.int64)
    tail = int(after[-1]) if len(words) else 0
    gap = w_start > before
    idx = np.empty(2 * len(words) + 1, np.int64)  # gap k, word k, ..., the rest of the text
    length = np.empty_like(idx)
    idx[0:-1:2], length[0:-1:2] = before, w_start - before
    idx[1:-1:2], length[1:-1:2] = w_start, sizes
    idx[-1], length[-1] = tail, n - tail
    is_word = np.zeros(len(idx), bool)
    is_word[1:-1:2] = True
    keep = np.concatenate((np.stack((gap, np.ones(len(words), bool)), 1).ravel(), [n > tail]))
    idx, length, is_word = idx[keep], length[keep], is_word[keep]
    spans = zip(idx[~is_word].tolist(), (idx + length)[~is_word].tolist())
    blanks = [text[a:b] for a, b in spans]  # whitespace runs (or a text without words)
    orth = np.empty(len(idx), np.uint64)
    orth[is_word] = np.fromiter(map(get_string_id, words), np.uint64, len(words))
    orth[~is_word] = np.fromiter(map(get_string_id, blanks), np.uint64, len(blanks))
    space = np.zeros(len(idx), bool)
    space[~is_word] = np.fromiter(map(str.isspace, blanks), bool, len(blanks))
    other = np.concatenate(([0], np.cumsum(~unicode_punct_table()[cp])))
    punct = (other[idx + length] - other[idx]) == 0
    return orth, punct, space, idx, length
