"""spaCy's rule-based tokenization as numpy arrays, computed once per document and shared by the
Gopher, C4 and FineWeb signals (the fused pass in ``heuristics.py``).

datatrove tokenizes a document again in every filter; here it is tokenized once (``Language.tokenizer``,
no pipeline) and every rule reads the same token table: orth hash, is_punct, is_space, offset, length.
Chunks between whitespace are memoised, because spaCy tokenizes each chunk on its own. spaCy's
Sentencizer rule is applied to the token table directly (``sentence_openers``), so C4's sentence counts
need no pipeline call per line.
"""

from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np
from datatrove.utils.text import PUNCTUATION_SET

from pipeline.core.ranges import range_rows


def import_spacy():
    """spaCy, imported without torch: thinc (spaCy's ML layer) imports torch whenever it is installed, which
    costs a filter worker ~180 MiB and ~0.8 CPU seconds for nothing (rule-based tokenization never touches it,
    and on a GPU node it would also probe CUDA). While ``sys.modules["torch"]`` is None an ``import torch``
    raises ImportError (the import system's documented switch), which thinc takes as torch being absent; the
    entry is removed right after, so torch imports normally later in the same process. Nothing changes if
    spaCy or torch is already imported."""
    if "spacy" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]
        try:
            import spacy  # noqa: F401
        finally:
            if sys.modules.get("torch", 0) is None:
                del sys.modules["torch"]
    import spacy

    return spacy


@lru_cache(maxsize=1)
def char_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code point: in datatrove's PUNCTUATION_SET, str.isalpha(), str.isspace() (built once per process)."""
    every = "".join(map(chr, range(0x110000)))
    alpha = np.fromiter((c.isalpha() for c in every), dtype=bool, count=len(every))
    space = np.fromiter((c.isspace() for c in every), dtype=bool, count=len(every))
    punct = np.zeros(0x110000, dtype=bool)
    punct[[ord(c) for c in PUNCTUATION_SET]] = True
    return punct, alpha, space


@lru_cache(maxsize=8)
def spacy_tokenizer(language: str):
    spacy = import_spacy()
    if language != "zh":
        return spacy.blank(language).tokenizer
    # Chinese words as datatrove's Chinese tokenizer segments them (spaCy with jieba): jieba set up first, with
    # its cache in a private folder, and the tokenizer given our segmenter, which cuts as jieba does and shares
    # each document's words with the Chinese family
    from filters.segmenter import segmenter

    seg = segmenter()  # before spaCy, which initialises jieba itself otherwise (with the cache in /tmp)
    tokenizer = spacy.blank(language, config={"nlp": {"tokenizer": {"segmenter": "jieba"}}}).tokenizer
    tokenizer.jieba_seg = seg
    return tokenizer


@lru_cache(maxsize=8)
def sentencizer_punct_hashes(language: str) -> np.ndarray:
    import_spacy()
    from spacy.pipeline import Sentencizer

    strings = spacy_tokenizer(language).vocab.strings
    return np.array(sorted(strings.add(c) for c in Sentencizer.default_punct_chars), dtype=np.uint64)


_JOINER = " \n "  # between pieces of a batch: a whitespace token, which no special case contains


class SpecialCaseEdges:
    """Where a special case could run across chunks: spaCy matches each special case's affix tokens (``):``
    is ``)`` ``:``) over the whole document, across single spaces too, and such a match can suppress a
    special case inside a chunk (``file): ((x``: ``:(`` takes the ``:`` of ``):``). For every pattern and
    every way a chunk boundary can cut a run of its tokens, the texts on both sides; two chunks one space
    apart whose texts end and begin so (a pair of last and first characters filters them first) are checked
    by tokenizing the chunks around them together, and a document where that differs from the chunks alone
    is tokenized whole."""

    def __init__(self, language: str):
        nlp = import_spacy().blank(language)
        specials = list(nlp.tokenizer.rules)
        nlp.tokenizer.rules = {}  # affixes only: the token sequences spaCy's special-case matcher looks for
        # left text -> (right text, the pattern's tokens, left is a whole chunk, right is a whole chunk): a part
        # of the pattern that continues into a further chunk must be the whole of its chunk
        cuts: dict[str, set[tuple[str, int, bool, bool]]] = {}
        for special in specials:
            parts = [t.text for t in nlp.tokenizer(special)]
            for j in range(1, len(parts)):
                for a in range(j):
                    for b in range(j + 1, len(parts) + 1):
                        cuts.setdefault("".join(parts[a:j]), set()).add(("".join(parts[j:b]), len(parts), a > 0, b < len(parts)))
        self.cuts = {left: tuple(sorted(rights)) for left, rights in cuts.items()}
        self.left_lengths = sorted({len(left) for left in cuts}, reverse=True)
        self.char_pair_set = {(ord(left[-1]) << 21) | ord(r[0][0]) for left, rights in cuts.items() for r in rights}
        self.char_pairs = np.array(sorted(self.char_pair_set), dtype=np.int64)

    def candidates(self, pieces: list[str], cp: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   word: np.ndarray) -> list[tuple[int, int]]:
        """(i, the pattern's tokens) where pieces i and i + 1 (both words, one space apart) could hold a cut
        pattern."""
        adjacent = np.flatnonzero(word[:-1] & word[1:])
        if not len(adjacent):
            return []
        pairs = (cp[ends[adjacent] - 1].astype(np.int64) << 21) | cp[starts[adjacent + 1]].astype(np.int64)
        out = []
        for i in adjacent[in_sorted(pairs, self.char_pairs)].tolist():
            left, right = pieces[i], pieces[i + 1]
            width = max((size for n in self.left_lengths if len(left) >= n
                         for r, size, left_whole, right_whole in self.cuts.get(left[-n:], ())
                         if (not left_whole or len(left) == n) and (right == r if right_whole else right.startswith(r))),
                        default=0)
            if width:
                out.append((i, width))
        return out


@lru_cache(maxsize=8)
def special_case_edges(language: str) -> SpecialCaseEdges:
    return SpecialCaseEdges(language)


# memoised tokenizations of whitespace-free chunks; cleared when full, so worker memory stays bounded
MAX_MEMO_CHUNKS = 1 << 18  # ~640 bytes each, mostly spaCy's lexeme (measured): ~160 MiB per worker and language


def _grown(column: np.ndarray, size: int) -> np.ndarray:
    """``column`` with room for at least ``size`` rows (doubling, so appends cost amortised constant time)."""
    if size <= len(column):
        return column
    bigger = np.zeros(max(2 * len(column), size), column.dtype)
    bigger[:len(column)] = column
    return bigger


class _TokenTable:
    """The memo's tokens in flat arrays (orth hash, is_punct, length, is_space), appended chunk by chunk:
    a chunk is a row range, so a document's tokens are one gather instead of one small array per chunk
    (per-chunk arrays cost ~850 bytes each and a concatenation of hundreds of them per document)."""

    def __init__(self, capacity: int = 1 << 16):
        self.size = 0
        self.orth = np.zeros(capacity, np.uint64)
        self.punct = np.zeros(capacity, bool)
        self.length = np.zeros(capacity, np.int64)
        self.space = np.zeros(capacity, bool)

    def append(self, orth: np.ndarray, punct: np.ndarray, length: np.ndarray, space: np.ndarray) -> int:
        """Append rows; returns the first row's index."""
        first, n = self.size, len(orth)
        for name in ("orth", "punct", "length", "space"):
            setattr(self, name, _grown(getattr(self, name), first + n))
        self.orth[first:first + n], self.punct[first:first + n] = orth, punct
        self.length[first:first + n], self.space[first:first + n] = length, space
        self.size = first + n
        return first


class _ChunkMemo:
    """spaCy's rule-based tokenizer splits text on whitespace first and tokenizes each chunk on its own
    (affixes, infixes, special cases); whitespace runs become tokens unless they are one space after a
    chunk. Each distinct chunk is tokenized once and reused (spaCy's own cache only holds words its
    vocabulary keeps, and its special-case matcher reruns over every document); bench/
    filter_heuristics_speed.py measures the fused pass that relies on it. When the memo is full it is
    dropped together with the spaCy vocabulary, so a worker's memory stays bounded."""

    def __init__(self, language: str):
        spacy = import_spacy()
        from spacy.attrs import IS_PUNCT

        self.language = language
        self.nlp = spacy.blank(language)
        # tokenizing never reads lexeme attributes: compute only is_punct for a new word
        getters = self.nlp.vocab.lex_attr_getters
        self.nlp.vocab.lex_attr_getters = {IS_PUNCT: getters[IS_PUNCT]}
        # English: a chunk of ASCII letters that is not a special case ("cannot", "gonna", ...) is one token, as
        # no prefix, suffix, infix or URL rule of spaCy's English tokenizer matches letters alone (checked against
        # spaCy on every such word of the test corpora, tests/test_filter_heuristics.py); other languages' rules
        # are not assumed
        self.plain_words = language == "en"
        self.special_cases = frozenset(self.nlp.tokenizer.rules)
        self.ids: dict[str, int] = {}  # chunk -> its number; its tokens are rows start[id]:start[id] + count[id]
        self.start = np.zeros(1 << 12, np.int64)
        self.count = np.zeros(1 << 12, np.int64)
        self.table = _TokenTable()

    def _remember(self, pieces: list[str], counts: np.ndarray, orth: np.ndarray, punct: np.ndarray,
                  length: np.ndarray, space: np.ndarray) -> None:
        """Chunks whose tokens, in order, are the given rows (``counts`` tokens each)."""
        first = self.table.append(orth, punct, length, space)
        n, k = len(self.ids), len(pieces)
        self.start, self.count = _grown(self.start, n + k), _grown(self.count, n + k)
        self.start[n:n + k] = first + np.cumsum(counts) - counts
        self.count[n:n + k] = counts
        self.ids.update(zip(pieces, range(n, n + k)))

    def chunk_orth(self, piece: str) -> np.ndarray:
        """The orth hashes of a memoised chunk's tokens."""
        i = self.ids[piece]
        return self.table.orth[self.start[i]:self.start[i] + self.count[i]]

    def _tokenize_new(self, pieces: list[str]) -> None:
        """Tokenize chunks not seen before in one spaCy call, each as if alone. They are joined by single
        spaces, except where two neighbours could hold a special case cut in two (``SpecialCaseEdges``): spaCy's
        special-case matcher reads token sequences across spaces, and ``:(`` across the joiner suppressed the
        emoticon ``):`` of ``file):``. There the joiner holds a whitespace token (" \n "), which no special case
        contains. Should a batch still not align with its pieces, they go one by one."""
        from spacy.attrs import IDX, IS_PUNCT, LENGTH, ORTH

        blocking = special_case_edges(self.language).char_pair_set
        joiners = [_JOINER if (ord(a[-1]) << 21) | ord(b[0]) in blocking else " " for a, b in zip(pieces, pieces[1:])]
        joined = "".join(p + j for p, j in zip(pieces, joiners)) + pieces[-1]
        arr = self.nlp.tokenizer(joined).to_array([ORTH, IS_PUNCT, IDX, LENGTH])
        starts = np.cumsum([0] + [len(p) + len(j) for p, j in zip(pieces, joiners)])
        stops = starts + np.array([len(p) for p in pieces])
        lo = np.searchsorted(arr[:, 2], starts)
        hi = np.searchsorted(arr[:, 2], stops)
        ends = arr[:, 2] + arr[:, 3]
        aligned = (
            len(arr) > 0
            and bool((hi > lo).all())
            and np.array_equal(arr[lo, 2], starts)  # lo < hi <= len(arr) by the test before
            and np.array_equal(ends[hi - 1], stops)
            # the rest: one whitespace token in each blocking joiner
            and int((hi - lo).sum()) + joiners.count(_JOINER) == len(arr)
        )
        if not aligned:
            for piece in pieces:
                a = self.nlp.tokenizer(piece).to_array([ORTH, IS_PUNCT, LENGTH])
                self._remember([piece], np.array([len(a)]), a[:, 0], a[:, 1].astype(bool), a[:, 2].astype(np.int64),
                               np.zeros(len(a), bool))
            return
        counts = hi - lo
        rows = range_rows(lo, counts)  # the pieces' tokens, without the whitespace tokens of blocking joiners
        self._remember(pieces, counts, arr[rows, 0], arr[rows, 1].astype(bool), arr[rows, 3].astype(np.int64),
                       np.zeros(len(rows), bool))

    def tokens(self, text: str, cp: np.ndarray) -> tuple[np.ndarray, ...]:
        if not len(cp):
            return (np.zeros(0, np.uint64), np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.int64))
        sp = char_tables()[2][cp]
        change = np.flatnonzero(sp[1:] != sp[:-1]) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [len(cp)]))
        # a whitespace run after a chunk loses its first character if that is a plain space
        starts = starts + (sp[starts] & (starts > 0) & (cp[starts] == 32))
        keep = starts < ends
        starts, ends = starts[keep], ends[keep]
        pieces = [text[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
        edges = special_case_edges(self.language)
        for i, width in edges.candidates(pieces, cp, starts, ends, ~sp[starts]):
            a, b = max(0, i - width + 1), min(len(pieces), i + width + 1)
            if self._interact(text[starts[a]:ends[b - 1]], pieces[a:b]):
                return self._whole(text)
        get = self.ids.get
        ids = [get(p, -1) for p in pieces]
        if -1 in ids:
            new = list(dict.fromkeys(p for p, i in zip(pieces, ids) if i < 0))
            words = [p for p in new if not p.isspace()]
            if self.plain_words and words:
                plain = [p for p in words if p.isascii() and p.isalpha() and p not in self.special_cases]
                if plain:  # one token each, spaCy's id of the word (a hash, or a symbol's id): no tokenizer call
                    from spacy.strings import get_string_id

                    self._remember(plain, np.ones(len(plain), np.int64), np.fromiter(map(get_string_id, plain), np.uint64, len(plain)),
                                   np.zeros(len(plain), bool), np.array([len(p) for p in plain], np.int64),
                                   np.zeros(len(plain), bool))
                    words = [p for p in words if p not in self.ids]
            if words:
                self._tokenize_new(words)
            blanks = [p for p in new if p.isspace()]
            if blanks:  # a whitespace run is one token, no hash kept
                self._remember(blanks, np.ones(len(blanks), np.int64), np.zeros(len(blanks), np.uint64),
                               np.zeros(len(blanks), bool), np.array([len(p) for p in blanks], np.int64),
                               np.ones(len(blanks), bool))
            ids = [get(p) for p in pieces]
        chunk = np.array(ids, dtype=np.int64)
        counts = self.count[chunk]
        first = np.cumsum(counts) - counts  # each chunk's first token in the document
        rows = range_rows(self.start[chunk], counts)
        t = self.table
        orth, punct, length, space = t.orth[rows], t.punct[rows], t.length[rows], t.space[rows]
        if len(self.ids) > MAX_MEMO_CHUNKS:
            # bounded worker memory: forget the chunks and spaCy's vocabulary (new lexemes stay in it)
            self.__init__(self.language)
        # a chunk's tokens are contiguous: offset = chunk start + lengths of the tokens before it in the chunk
        csum = np.cumsum(length) - length
        idx = np.repeat(starts.astype(np.int64) - csum[first], counts) + csum
        return orth, punct, space, idx, length

    def _interact(self, span: str, pieces: list[str]) -> bool:
        """Whether spaCy tokenizes the chunks of ``span`` differently together than each alone."""
        tokenizer = spacy_tokenizer(self.language)
        together = [t.text for t in tokenizer(span) if not t.is_space]
        return together != [t.text for p in pieces if not p.isspace() for t in tokenizer(p) if not t.is_space]

    def _whole(self, text: str) -> tuple[np.ndarray, ...]:
        """spaCy on the whole document (the rare one where chunks interact), in the memo's form."""
        from spacy.attrs import IDX, IS_PUNCT, IS_SPACE, LENGTH, ORTH

        # the shared tokenizer: the memo's own computes no is_space for new words
        arr = spacy_tokenizer(self.language)(text).to_array([ORTH, IS_PUNCT, IS_SPACE, IDX, LENGTH])
        space = arr[:, 2].astype(bool)
        orth = np.where(space, np.uint64(0), arr[:, 0])  # the memo keeps no hash for whitespace
        return orth, arr[:, 1].astype(bool), space, arr[:, 3].astype(np.int64), arr[:, 4].astype(np.int64)


@lru_cache(maxsize=8)
def chunk_memo(language: str) -> _ChunkMemo:
    return _ChunkMemo(language)


class Tokens:
    """One spaCy tokenization of a text, as arrays (orth hash, is_punct, is_space, offset, length)."""

    __slots__ = ("orth", "punct", "space", "idx", "length")

    def __init__(self, text: str, language: str, cp: np.ndarray | None = None):
        if language != "zh":
            if cp is None:
                cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            self.orth, self.punct, self.space, self.idx, self.length = chunk_memo(language).tokens(text, cp)
            return
        from filters.chinese_tokens import chinese_tokens

        self.orth, self.punct, self.space, self.idx, self.length = chinese_tokens(text, cp)

    def sentence_codes(self, language: str) -> np.ndarray:
        """spaCy's Sentencizer reads each token as: 1 a sentence-final mark, 2 a token that may open a
        sentence after one (neither punctuation nor a mark), 0 other punctuation."""
        final = in_sorted(self.orth, sentencizer_punct_hashes(language)) & ~self.space
        return np.where(final, 1, np.where(~self.punct, 2, 0)).astype(np.int8)


def in_sorted(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """np.isin(values, table) for a sorted ``table``: one binary search per value, without the sort of both
    arrays that isin does on every call (a page's tokens against a few dozen hashes)."""
    if not len(table):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[at] == values


def sentence_openers(codes: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
    """Token indices where spaCy's Sentencizer opens a sentence after the first: a token that may open one
    following a sentence-final mark (other punctuation in between skipped); with ``group``, only within a
    group (each group then holds one sentence plus one per opener in it)."""
    k = np.flatnonzero(codes != 0)
    c = codes[k]
    opens = (c[1:] == 2) & (c[:-1] == 1)
    if group is not None:
        opens &= group[k[1:]] == group[k[:-1]]
    return k[1:][opens]


def sentence_cuts(tok: Tokens, language: str) -> list[int]:
    """Where datatrove's ``split_into_sentences`` cuts a text: after the token before each opener."""
    last = sentence_openers(tok.sentence_codes(language)) - 1
    return (tok.idx[last] + tok.length[last]).tolist()



@lru_cache(maxsize=16)
def stop_word_hashes(language: str, stop_words: tuple[str, ...]) -> np.ndarray:
    strings = spacy_tokenizer(language).vocab.strings
    return np.array(sorted(strings.add(w) for w in stop_words), dtype=np.uint64)