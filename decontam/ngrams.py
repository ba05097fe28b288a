"""Normalised tokens, n-gram hashing and the benchmark n-gram index.

Tokens: every run of letters/digits is a word and every CJK ideograph or kana is a token of its own (so
Chinese gets character n-grams while English gets word n-grams from one token stream). Case,
punctuation, whitespace, full-width forms (NFKC) and the Traditional/Simplified script difference vanish; LaTeX spacing and sizing macros (``\\quad``,
``\\left``, ``\\,`` ...) and multiple-choice labels (``A.``, ``(B)``, ``C)`` at a line start; Chinese ``A、``, ``（B）``, ``Ｃ．``) are blanked
before tokenising, so reformatted math or choices still match. The blanking keeps string length, so each
token's span in the original text is known: contaminated spans can be cut for any Unicode.

Hashes: ``pipeline.text`` (xxh64 per token, polynomial n-gram hashes in numpy). Written by hand because datatrove's n-gram decontamination needs lighteval and the hub to build its index, keeps no
item ids, tokenises with spaCy (slow) and cannot cut spans.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from pipeline.core.ranges import merge_ranges
from pipeline.core.text import TOKEN, rolling_hashes, token_hashes

_BLANK = re.compile(
    r"\\(?:q?quad|left|right|[dt]?displaystyle|textstyle|scriptstyle|[bB]igg?[lr]?|[,;:!> ])(?![A-Za-z])"  # LaTeX spacing
    r"|(?m:^[ \t]*\(?[A-Ja-j][).:](?=\s))"  # "A." / "(b)" / "C)" choice label at a line start
    r"|\([A-J]\)(?=\s)"  # "(A) " inline choice label
    # Chinese exam labels: "A、" anywhere, full-width "Ａ．" / "（A）", or "A：" / "(A)" before a Chinese character
    r"|(?<![A-Za-z0-9])[A-JＡ-Ｊ][、．]|（[A-JＡ-Ｊ]）|(?<![A-Za-z0-9])[(]?[A-JＡ-Ｊ][)）.:：](?=[\u3400-\u9fff])"
    r"|\\[dt](?=frac\b)"  # \dfrac, \tfrac -> \frac
)
MIN_WORDS = 3


def _is_word(tok: str) -> bool:
    """A word carries meaning: two or more characters not all digits, or one CJK character."""
    return (len(tok) >= 2 and not tok.isdigit()) or (len(tok) == 1 and ord(tok) >= 0x3040)


def _blank(text: str) -> str:
    return _BLANK.sub(lambda m: " " * len(m.group()), text)


def _traditional_to_simplified() -> dict[int, str]:
    """OpenCC's Traditional -> Simplified character table (the ``opencc-purepy`` wheel's TSCharacters.txt,
    first candidate of each entry), so an item in one script matches a copy in the other."""
    table = {}
    with resources.files("opencc_purepy").joinpath("dicts/TSCharacters.txt").open(encoding="utf-8") as f:
        for line in f:
            trad, _, simp = line.rstrip("\n").partition("\t")
            simp = simp.split(" ")[0]
            if len(trad) == 1 and len(simp) == 1 and trad != simp:
                table[ord(trad)] = simp
    return table


_TO_SIMPLIFIED = _traditional_to_simplified()


def _norm(tok: str) -> str:
    return tok.lower() if tok.isascii() else unicodedata.normalize("NFKC", tok).lower().translate(_TO_SIMPLIFIED)


# a word split at a line end by typesetting or OCR ("contami-\nnation"): joined back into one token
_HYPHEN_BREAK = re.compile(r"[a-z]-[ \t]*\r?\n[ \t]*[a-z]")
_BREAK_GAP = re.compile(r"-[ \t]*\r?\n[ \t]*")


def _joined(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens and spans with hyphen-broken words joined (the rare path: only texts holding such a break)."""
    toks, spans = [], []
    for m in TOKEN.finditer(text):
        t = _norm(m.group())
        if spans and _BREAK_GAP.fullmatch(text, spans[-1][1], m.start()) and text[spans[-1][1] - 1].islower() and m.group()[:1].islower():
            toks[-1] += t
            spans[-1] = (spans[-1][0], m.end())
        else:
            toks.append(t)
            spans.append(m.span())
    return toks, spans


def normalized_words(text: str) -> list[str]:
    """The normalised tokens of ``text`` (words, and single CJK characters)."""
    blanked = _blank(text)
    if _HYPHEN_BREAK.search(blanked):
        return _joined(blanked)[0]
    if blanked.isascii():  # the common case, without a Python call per token
        return TOKEN.findall(blanked.lower())
    # the script is folded on the whole text (one character for one: tokens stay where they were); a unified
    # ideograph needs nothing more, so only the other tokens take the per-token NFKC
    return [t if "\u3400" <= t <= "\u9fff" else _norm(t) for t in TOKEN.findall(blanked.translate(_TO_SIMPLIFIED))]


def token_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) character span in ``text`` of each token of ``normalized_words(text)``."""
    blanked = _blank(text)
    if _HYPHEN_BREAK.search(blanked):
        return _joined(blanked)[1]
    return [m.span() for m in TOKEN.finditer(blanked)]


def ngram_hashes(words: list[str], n: int) -> np.ndarray:
    """uint64 hash of every n-gram of ``words`` (none if shorter than n)."""
    return rolling_hashes(token_hashes(words), [n]).get(n, np.empty(0, dtype=np.uint64))


@dataclass
class NgramIndex:
    """Sorted unique n-gram hashes with, for each, the first benchmark item that contains it.

    English items are indexed with ``n``-grams of words, Chinese items with ``cjk_n``-grams of characters;
    an item shorter than that but at least ``min_n`` tokens long is indexed whole (one n-gram of its own
    length), so short questions are not invisible. ``lengths`` lists every n-gram length in the index."""

    n: int
    hashes: np.ndarray  # uint64, sorted, unique
    item_of_hash: np.ndarray  # int32 index into items
    items: list[tuple[str, str]]  # (benchmark, item_id)
    lengths: list[int]
    item_tokens: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))  # normalised tokens per item
    stats: dict = field(default_factory=dict)
    _bits: np.ndarray | None = field(default=None, repr=False)
    _shift: np.uint64 = field(default=np.uint64(0), repr=False)

    @classmethod
    def build(cls, items, n: int, cjk_n: int | None = None, min_n: int | None = None, max_items_per_ngram: int = 0,
              split_n: int | None = None) -> "NgramIndex":
        """``split_n``: items shorter than twice their n-gram length are also indexed with ``split_n``-grams,
        so each half of such an item, split across paragraphs, still holds an indexed n-gram."""
        cjk_n, min_n = cjk_n or n, min(min_n or n, n, cjk_n or n)
        all_h, all_i, names, lengths, item_tokens = [], [], [], set(), []
        per_bench: dict[str, dict] = {}
        for idx, item in enumerate(items):
            names.append((item.benchmark, item.item_id))
            b = per_bench.setdefault(item.benchmark, {"items": 0, "indexed_whole": 0, "too_short": 0})
            b["items"] += 1
            toks = normalized_words(item.text)
            item_tokens.append(len(toks))
            full = cjk_n if item.language == "zh" else n
            want = full
            units = []  # (tokens, n-gram lengths) to index for this item
            if len(toks) < want:
                if len(toks) < min_n:
                    b["too_short"] += 1
                else:
                    b["indexed_whole"] += 1
                    want = len(toks)
            if len(toks) >= min_n:
                sizes = [want]
                if split_n and split_n < want <= len(toks) < 2 * want:
                    sizes.append(split_n)
                    b["split_indexed"] = b.get("split_indexed", 0) + 1
                units.append((toks, sizes))
            if item.prompt:
                # a problem leaked without its worked solution: a short problem holds no full n-gram of the
                # item, so it is indexed whole (the prompt is the start of the item's text)
                ptoks = normalized_words(item.prompt)
                if min_n <= len(ptoks) < full and len(ptoks) < len(toks):
                    units.append((ptoks, [len(ptoks)]))
                    b["prompt_indexed_whole"] = b.get("prompt_indexed_whole", 0) + 1
            for utoks, sizes in units:
                is_word = np.fromiter(map(_is_word, utoks), dtype=np.int32, count=len(utoks))
                for size, h in rolling_hashes(token_hashes(utoks), sizes).items():
                    lengths.add(size)
                    # an n-gram with fewer than MIN_WORDS words is a run of numbers or one-letter symbols ("1 2 3
                    # 4 ..." of a Pascal triangle, "x 11 x 10 x 9 ..." of a polynomial), found in clean text
                    # (JavaScript, TeX manuals) far too often to mean contamination
                    words = np.convolve(is_word, np.ones(size, dtype=np.int32), mode="valid")
                    b["numeric_ngrams"] = b.get("numeric_ngrams", 0) + int((words < MIN_WORDS).sum())
                    h = np.unique(h[words >= MIN_WORDS])
                    all_h.append(h)
                    all_i.append(np.full(len(h), idx, dtype=np.int32))
        hashes = np.concatenate(all_h) if all_h else np.empty(0, np.uint64)
        owners = np.concatenate(all_i) if all_i else np.empty(0, np.int32)
        # keep the first item of each hash: a stable sort then unique's first occurrence
        order = np.argsort(hashes, kind="stable")
        uniq, first, counts = np.unique(hashes[order], return_index=True, return_counts=True)
        owner = owners[order][first]
        stats = {"benchmarks": per_bench, "ngrams": int(len(uniq)), "excluded_template": 0, "excluded_common": 0}
        if max_items_per_ngram:
            # an n-gram shared by many items is a prompt template ("Answer with only ..."), not evidence of one item
            keep = counts <= max_items_per_ngram
            stats["excluded_template"] = int((~keep).sum())
            uniq, owner = uniq[keep], owner[keep]
        return cls(n=n, hashes=uniq, item_of_hash=owner, items=names, lengths=sorted(lengths),
                   item_tokens=np.array(item_tokens, dtype=np.int32), stats=stats)

    def find(self, tokens: list[str]) -> list[tuple[int, int, int]]:
        """Every (position, length, slot in ``hashes``) where an indexed n-gram occurs in ``tokens``, sorted."""
        if len(self.hashes) == 0 or len(tokens) < self.lengths[0]:
            return []
        hits = []
        for length, hs in rolling_hashes(token_hashes(tokens), self.lengths).items():
            pos, slots = self._slots(hs)
            hits.extend(zip(pos.tolist(), [length] * len(pos), slots.tolist()))
        hits.sort()
        return hits

    def lookup_all(self, tokens: list[str]) -> list[tuple[int, int, int]]:
        """Every (position, length, item index) where an indexed n-gram occurs in ``tokens``."""
        return [(p, n, int(self.item_of_hash[s])) for p, n, s in self.find(tokens)]

    def coverage(self, hits: list[tuple[int, int, int]]) -> dict[int, float]:
        """For each item among ``hits`` (from ``lookup_all``), the share of its tokens the document's matched
        n-grams of that item cover (capped at 1)."""
        spans: dict[int, list[tuple[int, int]]] = {}
        for p, n, item in hits:
            spans.setdefault(item, []).append((p, p + n))
        return {item: min(1.0, sum(b - a for a, b in merge_ranges(r)) / max(1, int(self.item_tokens[item])))
                for item, r in spans.items()}

    def _prefilter(self) -> tuple[np.ndarray, np.uint64]:
        """A one-hash Bloom filter (>= 32 bits per n-gram, top bits of the hash): almost every n-gram of a
        clean document is rejected with one memory access instead of a binary search over the index, which
        with unsorted queries is cache-miss bound."""
        if self._bits is None:
            k = max(10, int(np.ceil(np.log2(max(1, len(self.hashes)) * 32))))
            shift = np.uint64(64 - k)
            slot = (self.hashes >> shift).astype(np.int64)
            bits = np.zeros(2 ** k // 8, dtype=np.uint8)
            np.bitwise_or.at(bits, slot >> 3, (1 << (slot & 7)).astype(np.uint8))
            self._bits, self._shift = bits, shift
        return self._bits, self._shift

    def _slots(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``hashes`` that are in the index, their slots in ``self.hashes``)."""
        none = np.empty(0, np.int64), np.empty(0, np.int64)
        if len(self.hashes) == 0 or len(hashes) == 0:
            return none
        bits, shift = self._prefilter()
        slot = (hashes >> shift).astype(np.int64)
        maybe = np.nonzero((bits[slot >> 3] >> (slot & 7)) & 1)[0]
        if len(maybe) == 0:
            return none
        pos = np.minimum(np.searchsorted(self.hashes, hashes[maybe]), len(self.hashes) - 1)
        found = self.hashes[pos] == hashes[maybe]
        return maybe[found], pos[found]

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``hashes`` that are in the index, the item index of each)."""
        pos, slots = self._slots(hashes)
        return pos, self.item_of_hash[slots]

    def exclude(self, mask: np.ndarray, reason: str) -> None:
        """Drop the hashes where ``mask`` is true, counting them under ``excluded_<reason>``."""
        self.stats[f"excluded_{reason}"] = self.stats.get(f"excluded_{reason}", 0) + int(mask.sum())
        self.hashes, self.item_of_hash = self.hashes[~mask], self.item_of_hash[~mask]
        self._bits = None

    @property
    def nbytes(self) -> int:
        """Memory of the loaded index: hashes, owners and the prefilter bitmap."""
        return int(self.hashes.nbytes + self.item_of_hash.nbytes + self._prefilter()[0].nbytes)

    @staticmethod
    def file_name(n: int) -> str:
        return f"ngrams_{n}.npz"

    def save(self, folder: str) -> str:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, self.file_name(self.n))
        bench = np.array([b for b, _ in self.items])
        ids = np.array([i for _, i in self.items])
        np.savez(path, n=np.int64(self.n), hashes=self.hashes, item_of_hash=self.item_of_hash, bench=bench, ids=ids,
                 item_tokens=self.item_tokens,
                 lengths=np.array(self.lengths, dtype=np.int64), stats=np.array(json.dumps(self.stats, sort_keys=True)))
        return path

    @classmethod
    def load(cls, path: str) -> "NgramIndex":
        with np.load(path) as z:
            items = list(zip(z["bench"].tolist(), z["ids"].tolist()))
            return cls(n=int(z["n"]), hashes=z["hashes"], item_of_hash=z["item_of_hash"], items=items, item_tokens=z["item_tokens"],
                       lengths=z["lengths"].tolist(), stats=json.loads(str(z["stats"])))
