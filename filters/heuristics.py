"""The fused web-quality pass: Gopher quality, Gopher repetition, C4 and FineWeb signals from one tokenization.

datatrove chains four filters that each walk the document again: spaCy tokenizes it for the Gopher rules,
the C4 filter runs the spaCy pipeline once per kept line to count sentences, FineWeb tokenizes the edited
text again, and every n-gram rule joins Python strings. Here the document is tokenized once
(``Language.tokenizer``, no pipeline), the token table comes out as one numpy array, and every rule reads it:

* words are the non-space tokens (what ``split_into_words`` returns);
* per-character tables (punctuation, alphabetic) give the per-word Gopher tests by prefix sums;
* top n-grams are grouped on token ids, duplicate n-grams on a rolling hash of their characters (datatrove
  joins them without a separator), confirmed on the real strings;
* C4 sentences come from spaCy's sentencizer rule applied to the line's tokens (a line of a document
  tokenizes exactly as the line alone: spaCy splits on whitespace first and tokenizes each chunk on its own);
  in sentence mode (``split_paragraph: false``) the same rule on the document's tokens gives C4's units.

The values stored are the same floats datatrove compares (same operands, same operations), so
``decide_*`` with datatrove's parameters makes datatrove's decisions; tests/test_filter_heuristics.py checks
this on thousands of real documents. Thresholds live in ``decide_*``: signals are computed once and stored.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS
from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS
from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION

_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")
# rolling hash over code points, modulo 2**64 (numpy's uint64 wraps); equal strings always hash equal and
# every hash match is confirmed on the strings, so the weakness of a 2**64 modulus costs time, never truth
_BASE = np.uint64(0x9E3779B97F4A7C15)
_BASE_INV = np.uint64(pow(int(_BASE), -1, 2**64))
_MIX = np.uint64(0xBF58476D1CE4E5B9)


@lru_cache(maxsize=1)
def _char_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code point: in datatrove's PUNCTUATION_SET, str.isalpha(), str.isspace() (built once per process)."""
    every = "".join(map(chr, range(0x110000)))
    alpha = np.fromiter((c.isalpha() for c in every), dtype=bool, count=len(every))
    space = np.fromiter((c.isspace() for c in every), dtype=bool, count=len(every))
    punct = np.zeros(0x110000, dtype=bool)
    punct[[ord(c) for c in PUNCTUATION_SET]] = True
    return punct, alpha, space


@lru_cache(maxsize=8)
def _tokenizer(language: str):
    import spacy

    # Chinese words as datatrove's Chinese tokenizer segments them (spaCy with jieba)
    config = {"nlp": {"tokenizer": {"segmenter": "jieba"}}} if language == "zh" else None
    return (spacy.blank(language, config=config) if config else spacy.blank(language)).tokenizer


@lru_cache(maxsize=8)
def _sentencizer_punct_hashes(language: str) -> np.ndarray:
    from spacy.pipeline import Sentencizer

    strings = _tokenizer(language).vocab.strings
    return np.array(sorted(strings.add(c) for c in Sentencizer.default_punct_chars), dtype=np.uint64)


@dataclass(frozen=True)
class HeuristicSettings:
    """What the tagger must know to compute the signals (changing any of these needs a re-tag)."""

    language: str = "en"
    top_n: tuple[int, ...] = (2, 3, 4)
    dup_n: tuple[int, ...] = (5, 6, 7, 8, 9, 10)
    stop_words: tuple[str, ...] = tuple(STOP_WORDS)
    c4: bool = True  # C4's line edit runs, and FineWeb sees the edited text
    c4_split_paragraph: bool = True  # C4's units are lines; False: spaCy sentences of the whole document
    c4_remove_citations: bool = True
    c4_filter_no_terminal_punct: bool = True
    c4_min_words_per_line: int = 3
    c4_max_word_length: int = 1000
    c4_filter_javascript: bool = True
    c4_filter_policy: bool = True
    fineweb_short_line_length: int = 30


# memoised tokenizations of whitespace-free chunks; cleared when full, so worker memory stays bounded
MAX_MEMO_CHUNKS = 1 << 20


class _ChunkMemo:
    """spaCy's rule-based tokenizer splits text on whitespace first and tokenizes each chunk on its own
    (affixes, infixes, special cases); whitespace runs become tokens unless they are one space after a
    chunk. Tokenizing each distinct chunk once and reusing it is 3-4x faster than tokenizing documents
    (spaCy's own cache only holds words its vocabulary keeps, and its special-case matcher reruns over
    every document). New chunks are tokenized inside a memory zone so spaCy's vocabulary does not grow."""

    def __init__(self, language: str):
        import spacy
        from spacy.attrs import IS_PUNCT

        self.language = language
        self.nlp = spacy.blank(language)
        # tokenizing never reads lexeme attributes; computing only is_punct makes a new word ~5x cheaper
        getters = self.nlp.vocab.lex_attr_getters
        self.nlp.vocab.lex_attr_getters = {IS_PUNCT: getters[IS_PUNCT]}
        self.memo: dict[str, tuple] = {}

    def _tokenize_new(self, pieces: list[str]) -> None:
        """Tokenize chunks not seen before in one spaCy call, joined by single spaces (which make no
        token); a special case matched across two chunks would cross a boundary: those go one by one."""
        from spacy.attrs import IDX, IS_PUNCT, LENGTH, ORTH

        joined = " ".join(pieces)
        arr = self.nlp.tokenizer(joined).to_array([ORTH, IS_PUNCT, IDX, LENGTH])
        offsets = np.cumsum([0] + [len(p) + 1 for p in pieces])
        lo = np.searchsorted(arr[:, 2], offsets[:-1])
        hi = np.searchsorted(arr[:, 2], offsets[1:] - 1)
        ends = arr[:, 2] + arr[:, 3]
        aligned = (
            len(arr) > 0
            and np.array_equal(arr[lo, 2], offsets[:-1])
            and np.array_equal(ends[hi - 1], offsets[1:] - 1)
            and bool((hi > lo).all())
            and int((hi - lo).sum()) == len(arr)
        )
        if not aligned:
            for piece in pieces:
                a = self.nlp.tokenizer(piece).to_array([ORTH, IS_PUNCT, LENGTH])
                self.memo[piece] = (a[:, 0].copy(), np.stack([a[:, 1], a[:, 2], np.zeros(len(a), np.uint64)], 1).astype(np.int64))
            return
        attrs = np.stack([arr[:, 1], arr[:, 3], np.zeros(len(arr), np.uint64)], 1).astype(np.int64)
        orth = arr[:, 0].copy()
        for piece, a, b in zip(pieces, lo.tolist(), hi.tolist()):
            self.memo[piece] = (orth[a:b], attrs[a:b])

    def tokens(self, text: str, cp: np.ndarray) -> tuple[np.ndarray, ...]:
        if not len(cp):
            return (np.zeros(0, np.uint64), np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.int64))
        sp = _char_tables()[2][cp]
        change = np.flatnonzero(sp[1:] != sp[:-1]) + 1
        starts = np.concatenate(([0], change))
        ends = np.concatenate((change, [len(cp)]))
        # a whitespace run after a chunk loses its first character if that is a plain space
        starts = starts + (sp[starts] & (starts > 0) & (cp[starts] == 32))
        keep = starts < ends
        starts, ends = starts[keep].tolist(), ends[keep].tolist()
        pieces = [text[a:b] for a, b in zip(starts, ends)]
        memo = self.memo
        new = [p for p in dict.fromkeys(pieces) if p not in memo]
        if new:
            words = [p for p in new if not p.isspace()]
            if words:
                self._tokenize_new(words)
            for p in new:
                if p.isspace():
                    memo[p] = (np.zeros(1, np.uint64), np.array([[0, len(p), 1]], dtype=np.int64))
        entries = [memo[p] for p in pieces]
        if len(memo) > MAX_MEMO_CHUNKS:
            # bounded worker memory: forget the chunks and spaCy's vocabulary (new lexemes stay in it)
            memo.clear()
            self.__init__(self.language)
        orth = np.concatenate([e[0] for e in entries])
        attrs = np.concatenate([e[1] for e in entries])
        punct, length, space = attrs[:, 0].astype(bool), attrs[:, 1], attrs[:, 2].astype(bool)
        counts = np.fromiter(map(len, (e[0] for e in entries)), dtype=np.int64, count=len(entries))
        # a chunk's tokens are contiguous: offset = chunk start + lengths of the tokens before it in the chunk
        csum = np.cumsum(length) - length
        first = np.cumsum(counts) - counts
        idx = np.repeat(np.array(starts, dtype=np.int64) - csum[first], counts) + csum
        return orth, punct, space, idx, length


@lru_cache(maxsize=8)
def _chunk_memo(language: str) -> _ChunkMemo:
    return _ChunkMemo(language)


class _Tokens:
    """One spaCy tokenization of a text, as arrays (orth hash, is_punct, is_space, offset, length)."""

    __slots__ = ("orth", "punct", "space", "idx", "length")

    def __init__(self, text: str, language: str, cp: np.ndarray | None = None):
        if language != "zh":
            if cp is None:
                cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
            self.orth, self.punct, self.space, self.idx, self.length = _chunk_memo(language).tokens(text, cp)
            return
        from spacy.attrs import IDX, IS_PUNCT, IS_SPACE, LENGTH, ORTH

        # jieba segments whole runs of text: tokenize the document as one
        doc = _tokenizer(language)(text)
        arr = doc.to_array([ORTH, IS_PUNCT, IS_SPACE, IDX, LENGTH]) if len(doc) else np.zeros((0, 5), np.uint64)
        self.orth = arr[:, 0]
        self.punct = arr[:, 1].astype(bool)
        self.space = arr[:, 2].astype(bool)
        self.idx = arr[:, 3].astype(np.int64)
        self.length = arr[:, 4].astype(np.int64)

    def sentence_codes(self, language: str) -> np.ndarray:
        """spaCy's Sentencizer reads each token as: 1 a sentence-final mark, 2 a token that may open a
        sentence after one (neither punctuation nor a mark), 0 other punctuation."""
        final = np.isin(self.orth, _sentencizer_punct_hashes(language)) & ~self.space
        return np.where(final, 1, np.where(~self.punct, 2, 0)).astype(np.int8)


def _sentence_openers(codes: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
    """Token indices where spaCy's Sentencizer opens a sentence after the first: a token that may open one
    following a sentence-final mark (other punctuation in between skipped); with ``group``, only within a
    group (each group then holds one sentence plus one per opener in it)."""
    k = np.flatnonzero(codes != 0)
    c = codes[k]
    opens = (c[1:] == 2) & (c[:-1] == 1)
    if group is not None:
        opens &= group[k[1:]] == group[k[:-1]]
    return k[1:][opens]


def sentence_cuts(tok: _Tokens, language: str) -> list[int]:
    """Where datatrove's ``split_into_sentences`` cuts a text: after the token before each opener."""
    last = _sentence_openers(tok.sentence_codes(language)) - 1
    return (tok.idx[last] + tok.length[last]).tolist()


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """datatrove's gopher_repetition_filter.find_duplicates (duplicate count and their characters)."""
    seen: set[str] = set()
    dup = dup_chars = 0
    for x in items:
        if x in seen:
            dup += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup, dup_chars


def _window_keys(ids: np.ndarray, n: int) -> np.ndarray:
    windows = np.lib.stride_tricks.sliding_window_view(ids, n)
    key = np.zeros(len(windows), dtype=np.uint64)
    for k in range(n):
        key = key * _MIX + windows[:, k]
    return key


def top_ngram_chars(ids: np.ndarray, lengths: np.ndarray, n: int, separator: int = 1) -> int | None:
    """len(most common n-gram, joined with ``separator`` characters) * its count, ties to the first seen
    (what Counter.most_common(1) picks)."""
    m = len(ids) - n + 1
    if m <= 0:
        return None
    windows = np.lib.stride_tricks.sliding_window_view(ids, n)
    key = _window_keys(ids, n)
    order = np.argsort(key, kind="stable")
    sk = key[order]
    same = sk[1:] == sk[:-1]
    if same.any() and not (windows[order[1:][same]] == windows[order[:-1][same]]).all():
        # a key collision between different n-grams: group on the n-gram rows themselves
        _, first, counts = np.unique(windows, axis=0, return_index=True, return_counts=True)
    else:
        group_starts = np.concatenate(([0], np.flatnonzero(~same) + 1))
        counts = np.diff(np.append(group_starts, m))
        first = order[group_starts]  # a stable sort keeps each group's first occurrence first
    best = counts.max()
    pos = first[counts == best].min()
    chars = int(lengths[pos : pos + n].sum()) + separator * (n - 1)
    return chars * int(best)


def top_ngram_chars_all(ids: np.ndarray, lengths: np.ndarray, ns, separator: int = 1) -> dict[int, int | None]:
    """top_ngram_chars for several n with one sort: keys of every n, salted by n, sorted together."""
    ns = list(ns)
    L = len(ids)
    out: dict[int, int | None] = {n: None for n in ns if L - n + 1 <= 0}
    todo = [n for n in ns if L - n + 1 > 0]
    if not todo:
        return out
    keys = np.concatenate([_window_keys(ids, n) ^ np.uint64((n * 0x632BE59BD9B4E019) % 2**64) for n in todo])
    sizes = np.array([L - n + 1 for n in todo])
    nn = np.repeat(np.array(todo), sizes)
    pos = np.arange(len(keys)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    same = sk[1:] == sk[:-1]
    if same.any():
        a, b = order[:-1][same], order[1:][same]
        width = max(todo)
        padded = np.concatenate((ids, np.zeros(width, dtype=ids.dtype)))
        win = np.lib.stride_tricks.sliding_window_view(padded, width)
        cols = np.arange(width)[None, :] >= nn[a][:, None]
        if not ((nn[a] == nn[b]) & ((win[pos[a]] == win[pos[b]]) | cols).all(axis=1)).all():
            # a key collision between different n-grams: exact grouping, one n at a time
            return out | {n: top_ngram_chars(ids, lengths, n, separator) for n in todo}
    group_starts = np.concatenate(([0], np.flatnonzero(~same) + 1))
    counts = np.diff(np.append(group_starts, len(keys)))
    g_n, g_first = nn[order[group_starts]], pos[order[group_starts]]
    for n in todo:
        sel = g_n == n
        c = counts[sel]
        best = c.max()
        p = int(g_first[sel][c == best].min())
        out[n] = (int(lengths[p : p + n].sum()) + separator * (n - 1)) * int(best)
    return out


def _prefix_hash(cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums of c_k * B^k and the powers B^-k, so any substring's hash is one subtraction and product."""
    m = len(cp)
    powers = np.ones(m, dtype=np.uint64)
    if m > 1:
        powers[1:] = np.cumprod(np.full(m - 1, _BASE, dtype=np.uint64))
    inv_pow = np.ones(m + 1, dtype=np.uint64)
    inv_pow[1:] = np.cumprod(np.full(m, _BASE_INV, dtype=np.uint64))
    prefix = np.zeros(m + 1, dtype=np.uint64)
    prefix[1:] = np.cumsum(cp.astype(np.uint64) * powers, dtype=np.uint64)
    return prefix, inv_pow


def dup_ngram_chars_exact(text: str, n: int) -> int:
    """find_all_duplicate over the characters of ``text`` (each character a word)."""
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    prefix, inv_pow = _prefix_hash(cp)
    return _dup_ngram_chars(text, np.arange(len(cp) + 1), prefix, inv_pow, n)


def _dup_ngram_chars_all(joined: str, starts: np.ndarray, prefix: np.ndarray, inv_pow: np.ndarray, ns) -> dict[int, int]:
    """_dup_ngram_chars for several n: the hashes of every n, salted by n, sorted together once."""
    words = len(starts) - 1
    todo = [n for n in ns if words - n + 1 > 0]
    out = {n: 0 for n in ns}
    if not todo:
        return out
    parts = []
    for n in todo:
        m = words - n + 1
        a, b = starts[:m], starts[n : n + m]
        parts.append(((prefix[b] - prefix[a]) * inv_pow[a]) ^ np.uint64((n * 0x632BE59BD9B4E019) % 2**64))
    h = np.concatenate(parts)
    order = np.argsort(h)
    sh = h[order]
    eq = sh[1:] == sh[:-1]
    if not eq.any():
        return out
    mark = np.zeros(len(h), dtype=bool)
    mark[order[1:][eq]] = True
    mark[order[:-1][eq]] = True
    offset = 0
    for n, part in zip(todo, parts):
        cand = np.flatnonzero(mark[offset : offset + len(part)])
        offset += len(part)
        if len(cand):
            out[n] = _walk_repeats(joined, starts, cand, n)
    return out


def _walk_repeats(joined: str, starts: np.ndarray, candidates: np.ndarray, n: int) -> int:
    # only n-grams that occur twice can repeat; the walk's skips decide which occurrences count
    seen: set[str] = set()
    repeated, cur = 0, 0
    for p in candidates.tolist():
        if p < cur:
            continue
        s = joined[starts[p] : starts[p + n]]
        if s in seen:
            repeated += len(s)
            cur = p + n
        else:
            seen.add(s)
    return repeated


def _dup_ngram_chars(joined: str, starts: np.ndarray, prefix: np.ndarray, inv_pow: np.ndarray, n: int) -> int:
    """datatrove's find_all_duplicate: walk the ''-joined n-grams, skipping n words after each repeat."""
    m = len(starts) - 1 - n + 1
    if m <= 0:
        return 0
    a, b = starts[:m], starts[n : n + m]
    h = (prefix[b] - prefix[a]) * inv_pow[a]
    order = np.argsort(h)
    sh = h[order]
    eq = sh[1:] == sh[:-1]
    if not eq.any():
        return 0
    mark = np.zeros(m, dtype=bool)
    mark[order[1:][eq]] = True
    mark[order[:-1][eq]] = True
    return _walk_repeats(joined, starts, np.flatnonzero(mark), n)


def kept_ranges(indices: list[int]) -> list[list[int]]:
    """Line indices as [start, end) ranges: what an edit keeps, stored compactly with the signals."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def expand_ranges(ranges: list[list[int]]) -> list[int]:
    return [i for a, b in ranges for i in range(a, b)]


def c4_edit(text: str, sig: dict, remove_citations: bool) -> str:
    """The text C4 keeps from the stored signals: its kept lines (ranges of line indices), stripped and
    without citations, joined by newlines; in sentence mode its kept sentences (character spans, as a
    sentence cut needs the tokenizer to find again) joined by spaces."""
    if sig.get("c4_unit") == "sentence":
        units, sep = [text[a:b] for a, b in sig["c4_kept"]], " "
    else:
        lines = text.splitlines()
        units, sep = [lines[i] for i in expand_ranges(sig["c4_kept"])], "\n"
    out = []
    for unit in units:
        line = unit.strip()
        out.append(CITATION_REGEX.sub("", line) if remove_citations else line)
    return sep.join(out).strip()


def compute_signals(text: str, s: HeuristicSettings) -> tuple[dict, dict]:
    """(signals, stats) for one document. ``stats`` holds C4's per-line counters."""
    sig: dict = {}
    stats: Counter = Counter()
    if not text:
        return {"empty": True}, stats
    punct_t, alpha_t, space_t = _char_tables()
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    tok = _Tokens(text, s.language, cp)
    word = ~tok.space
    w_idx, w_len, w_orth = tok.idx[word], tok.length[word], tok.orth[word]
    n_words = len(w_idx)

    # ---- Gopher repetition (original text)
    paragraphs = _PARAGRAPHS.split(text.strip())
    dup, dup_chars = find_duplicates(paragraphs)
    sig["para_dup_frac"] = dup / len(paragraphs)
    sig["para_dup_char_frac"] = dup_chars / len(text)
    lines = _LINES.split(text)
    dup, dup_chars = find_duplicates(lines)
    sig["line_dup_frac"] = dup / len(lines)
    sig["line_dup_char_frac"] = dup_chars / len(text)
    tops = top_ngram_chars_all(w_orth, w_len, s.top_n)
    for n in s.top_n:
        chars = tops[n]
        sig[f"top_{n}_gram_frac"] = None if chars is None else chars / len(text)
    if s.dup_n:
        joined_cp = cp[~space_t[cp]]  # the words concatenated: tokens cover every non-space character
        joined = joined_cp.tobytes().decode("utf-32-le", "surrogatepass")
        starts = np.concatenate(([0], np.cumsum(w_len)))
        prefix, inv_pow = _prefix_hash(joined_cp)
        dups = _dup_ngram_chars_all(joined, starts, prefix, inv_pow, s.dup_n)
        for n in s.dup_n:
            sig[f"dup_{n}_gram_frac"] = dups[n] / len(text)

    # ---- Gopher quality (original text)
    nonpunct = np.concatenate(([0], np.cumsum(~punct_t[cp])))
    alpha = np.concatenate(([0], np.cumsum(alpha_t[cp])))
    ends = w_idx + w_len
    non_symbol = (nonpunct[ends] - nonpunct[w_idx]) > 0
    sig["n_words"] = n_words
    sig["n_non_symbol_words"] = int(non_symbol.sum())
    sig["avg_word_length"] = float(np.mean(w_len[non_symbol])) if non_symbol.any() else None
    sig["hash_ratio"] = text.count("#") / n_words if n_words else None
    sig["ellipsis_ratio"] = (text.count("...") + text.count("…")) / n_words if n_words else None
    split_lines = text.splitlines()
    if split_lines:
        sig["bullet_lines_ratio"] = sum(ln.lstrip().startswith(("•", "-")) for ln in split_lines) / len(split_lines)
        sig["end_ellipsis_lines_ratio"] = sum(ln.rstrip().endswith(("...", "…")) for ln in split_lines) / len(split_lines)
    else:
        sig["bullet_lines_ratio"] = sig["end_ellipsis_lines_ratio"] = None
    sig["alpha_words_ratio"] = int(((alpha[ends] - alpha[w_idx]) > 0).sum()) / n_words if n_words else None
    sig["stop_words"] = _distinct_stop_words(text, w_idx, w_len, w_orth, s)

    # ---- C4 (line edit and document tests), then FineWeb on the text C4 leaves
    if s.c4:
        kept_words, edited = _c4(text, tok, split_lines, s, sig, stats)
        fineweb_text, fineweb_words = edited, kept_words
    else:
        fineweb_text, fineweb_words = text, n_words
    _fineweb(fineweb_text, fineweb_words, s, sig)
    return sig, stats


@lru_cache(maxsize=16)
def _stop_hashes(language: str, stop_words: tuple[str, ...]) -> np.ndarray:
    strings = _tokenizer(language).vocab.strings
    return np.array(sorted(strings.add(w) for w in stop_words), dtype=np.uint64)


def _distinct_stop_words(text, w_idx, w_len, w_orth, s: HeuristicSettings) -> int:
    stop_hashes = _stop_hashes(s.language, s.stop_words)
    hits = np.flatnonzero(np.isin(w_orth, stop_hashes))
    return len({text[w_idx[i] : w_idx[i] + w_len[i]] for i in hits.tolist()} & set(s.stop_words))


def _c4(text: str, tok: _Tokens, lines: list[str], s: HeuristicSettings, sig: dict, stats: Counter) -> tuple[int, str]:
    """C4QualityFilter's line loop without its spaCy calls. Lorem ipsum and curly brackets are recorded
    as the first line that reaches their test, so either switch can be retuned; the kept lines are the
    ones kept with both switches off (either switch on with a hit drops the whole document anyway).
    In sentence mode the units are the document's sentences, each kept one counts as one sentence."""
    by_line = s.c4_split_paragraph
    if by_line:
        units = lines
        starts = np.concatenate(([0], np.cumsum([len(x) for x in text.splitlines(keepends=True)])))
    else:
        starts = np.array([0] + sentence_cuts(tok, s.language) + [len(text)], dtype=np.int64)
        units = [text[a:b] for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())]
    kept, kept_text, bounds, retokenize = [], [], [], []
    lorem_line = curly_line = -1
    for i, raw in enumerate(units):
        line = raw.strip()
        words = line.split()
        stats["line-total"] += 1
        if s.c4_max_word_length != -1 and len(line) > s.c4_max_word_length and any(len(w) > s.c4_max_word_length for w in words):
            stats["line-filter-too_long_word"] += 1
            continue
        cited = False
        if s.c4_remove_citations and "[" in line:
            new = CITATION_REGEX.sub("", line)
            cited, line = new != line, new
        if s.c4_filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
            stats["line-filter-no_terminal_punc"] += 1
            continue
        if len(words) < s.c4_min_words_per_line:
            stats["line-filter-too_few_words"] += 1
            continue
        line_l = line.lower()
        if lorem_line < 0 and "lorem ipsum" in line_l:
            lorem_line = i
        if s.c4_filter_javascript and "javascript" in line_l:
            stats["line-filter-javascript"] += 1
            continue
        if curly_line < 0 and "{" in line:
            curly_line = i
        if s.c4_filter_policy and any(p in line_l for p in POLICY_SUBSTRINGS):
            stats["line-filter-policy"] += 1
            continue
        kept.append(i)
        kept_text.append(line)
        stats["line-kept"] += 1
        if not by_line:
            continue
        if cited:
            retokenize.append(len(kept_text) - 1)
        else:
            lead = len(raw) - len(raw.lstrip())
            bounds.append((len(kept_text) - 1, starts[i] + lead, starts[i] + lead + len(line)))
    if by_line:
        n_words, n_sentences = _kept_line_counts(kept_text, bounds, retokenize, tok, s.language)
        edited = "\n".join(kept_text).strip()
        sig["c4_kept"] = kept_ranges(kept)
    else:
        edited = " ".join(kept_text).strip()
        # a sentence cut can fall inside a whitespace-free chunk, which then tokenizes on its own: count the
        # words of the edited text as FineWeb will (the chunk memo makes the known chunks free)
        n_words = int((~_Tokens(edited, s.language).space).sum()) if edited else 0
        n_sentences = len(kept_text)
        sig["c4_unit"] = "sentence"
        sig["c4_kept"] = [[int(starts[i]), int(starts[i + 1])] for i in kept]
    sig["c4_sentences"] = n_sentences
    sig["c4_lorem_line"] = lorem_line
    sig["c4_curly_line"] = curly_line
    return n_words, edited


def _kept_line_counts(kept_text: list[str], bounds: list[tuple], retokenize: list[int], tok: _Tokens,
                      language: str) -> tuple[int, int]:
    """(words, sentences) of C4's kept lines, from the document's tokens where the line is unchanged
    (``bounds``: kept index, start, end) and from a new tokenization where a citation was cut out."""
    n_sentences = len(kept_text)
    n_words = 0
    if bounds:
        b = np.array(bounds, dtype=np.int64)
        lo = np.searchsorted(tok.idx, b[:, 1])
        hi = np.searchsorted(tok.idx, b[:, 2])
        sel = np.concatenate([np.arange(x, y) for x, y in zip(lo, hi)]) if len(b) else np.zeros(0, np.int64)
        group = np.repeat(np.arange(len(b)), hi - lo)
        n_words += int((~tok.space[sel]).sum())
        n_sentences += len(_sentence_openers(tok.sentence_codes(language)[sel], group))
    for j in retokenize:
        t = _Tokens(kept_text[j], language)
        n_words += int((~t.space).sum())
        n_sentences += len(_sentence_openers(t.sentence_codes(language)))
    return n_words, n_sentences


def _fineweb(text: str, n_words: int, s: HeuristicSettings, sig: dict) -> None:
    lines = [ln for ln in text.split("\n") if ln.strip() != ""]
    if not lines:
        sig["fw_empty"] = True
        return
    sig["fw_empty"] = False
    sig["fw_line_punct_ratio"] = sum(1 for ln in lines if ln[-1] in TERMINAL_PUNCTUATION) / len(lines)
    sig["fw_short_line_ratio"] = sum(1 for ln in lines if len(ln) <= s.fineweb_short_line_length) / len(lines)
    sig["fw_char_dup_ratio"] = find_duplicates(lines)[1] / len(text.replace("\n", ""))
    sig["fw_list_ratio"] = text.count("\n") / n_words if n_words else None


# ----------------------------------------------------------------------------------- decisions
# datatrove's tests, in datatrove's order, on the stored signals. A falsy threshold switches a test off
# where datatrove's does (``if self.x and ...``); a missing value (no words) passes, as NaN does there.
def _gt(v, thr) -> bool:
    return v is not None and v > thr


def _lt(v, thr) -> bool:
    return v is not None and v < thr


def gopher_repetition_reason(sig: dict, cfg) -> str | None:
    from filters.signals import require

    if sig.get("empty"):
        return "empty"
    checks = (("dup_para_frac", "para_dup_frac"), ("dup_para_char_frac", "para_dup_char_frac"),
              ("dup_line_frac", "line_dup_frac"), ("dup_line_char_frac", "line_dup_char_frac"))
    for param, key in checks:
        thr = getattr(cfg, param)
        if thr and sig[key] > thr:
            return param
    for n, frac in cfg.top_n_grams:
        if _gt(require(sig, f"top_{n}_gram_frac", "gopher_repetition"), frac):
            return f"top_{n}_gram"
    for n, frac in cfg.dup_n_grams:
        if require(sig, f"dup_{n}_gram_frac", "gopher_repetition") > frac:
            return f"duplicated_{n}_n_grams"
    return None


def gopher_quality_reason(sig: dict, cfg) -> str | None:
    if sig.get("empty"):
        return "gopher_short_doc"
    n = sig["n_non_symbol_words"]
    if cfg.min_doc_words and n < cfg.min_doc_words:
        return "gopher_short_doc"
    if cfg.max_doc_words and n > cfg.max_doc_words:
        return "gopher_long_doc"
    if cfg.min_avg_word_length and _lt(sig["avg_word_length"], cfg.min_avg_word_length):
        return "gopher_below_avg_threshold"
    if cfg.max_avg_word_length and _gt(sig["avg_word_length"], cfg.max_avg_word_length):
        return "gopher_above_avg_threshold"
    if cfg.max_symbol_word_ratio and _gt(sig["hash_ratio"], cfg.max_symbol_word_ratio):
        return "gopher_too_many_hashes"
    if cfg.max_symbol_word_ratio and _gt(sig["ellipsis_ratio"], cfg.max_symbol_word_ratio):
        return "gopher_too_many_ellipsis"
    if cfg.max_bullet_lines_ratio and _gt(sig["bullet_lines_ratio"], cfg.max_bullet_lines_ratio):
        return "gopher_too_many_bullets"
    if cfg.max_ellipsis_lines_ratio and _gt(sig["end_ellipsis_lines_ratio"], cfg.max_ellipsis_lines_ratio):
        return "gopher_too_many_end_ellipsis"
    if cfg.max_non_alpha_words_ratio and _lt(sig["alpha_words_ratio"], cfg.max_non_alpha_words_ratio):
        return "gopher_below_alpha_threshold"
    if cfg.min_stop_words and sig["stop_words"] < cfg.min_stop_words:
        return "gopher_enough_stop_words"
    return None


def c4_reason(sig: dict, cfg) -> str | None:
    if sig.get("empty"):
        return "too_few_sentences" if cfg.min_num_sentences > 0 else None
    hits = []
    if cfg.filter_lorem_ipsum and sig["c4_lorem_line"] >= 0:
        hits.append((sig["c4_lorem_line"], 0, "lorem_ipsum"))
    if cfg.filter_curly_bracket and sig["c4_curly_line"] >= 0:
        hits.append((sig["c4_curly_line"], 1, "curly_bracket"))
    if hits:
        return min(hits)[2]  # the first line that reaches either test decides, lorem ipsum first on a tie
    if cfg.min_num_sentences != -1 and sig["c4_sentences"] < cfg.min_num_sentences:
        return "too_few_sentences"
    return None


def fineweb_reason(sig: dict, cfg) -> str | None:
    if sig.get("empty") or sig["fw_empty"]:
        return "empty"
    r = sig["fw_line_punct_ratio"]
    if r < cfg.line_punct_thr and not (r == 0 and cfg.line_punct_exclude_zero):
        return "line_punct_ratio"
    if sig["fw_short_line_ratio"] > cfg.short_line_thr:
        return "short_line_ratio"
    if sig["fw_char_dup_ratio"] > cfg.char_duplicates_ratio:
        return "char_dup_ratio"
    if _gt(sig["fw_list_ratio"], cfg.new_line_ratio):
        return "list_ratio"
    return None
