"""Gopher quality and Gopher repetition (Rae et al., 2021) as datatrove computes them, from the shared token
table: signals stored once, thresholds applied by the tables below in datatrove's order.

The values stored are the same floats datatrove compares (same operands, same operations), so the
tables with datatrove's parameters make datatrove's decisions (tests/test_filter_heuristics.py).
"""

from __future__ import annotations

import re

import numpy as np

from filters.repetition import dup_ngram_chars_all, find_duplicates, prefix_hash, top_ngram_chars_all
from filters.spacy_tokens import Tokens, char_tables, in_sorted, stop_word_hashes
from filters.thresholds import Check, first_failure, first_ngram_failure

_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")


def repetition_signals(text: str, cp: np.ndarray, w_orth: np.ndarray, w_len: np.ndarray, top_n, dup_n) -> dict:
    """Duplicated paragraphs and lines, top n-grams and duplicated n-grams of the words (original text)."""
    sig: dict = {}
    paragraphs = _PARAGRAPHS.split(text.strip())
    dup, dup_chars = find_duplicates(paragraphs)
    sig["para_dup_frac"] = dup / len(paragraphs)
    sig["para_dup_char_frac"] = dup_chars / len(text)
    lines = _LINES.split(text)
    dup, dup_chars = find_duplicates(lines)
    sig["line_dup_frac"] = dup / len(lines)
    sig["line_dup_char_frac"] = dup_chars / len(text)
    tops = top_ngram_chars_all(w_orth, w_len, top_n)
    for n in top_n:
        sig[f"top_{n}_gram_frac"] = None if tops[n] is None else tops[n] / len(text)
    if dup_n:
        joined_cp = cp[~char_tables()[2][cp]]  # the words concatenated: tokens cover every non-space character
        joined = joined_cp.tobytes().decode("utf-32-le", "surrogatepass")
        starts = np.concatenate(([0], np.cumsum(w_len)))
        prefix, inv_pow = prefix_hash(joined_cp)
        dups = dup_ngram_chars_all(joined, joined_cp, starts, prefix, inv_pow, dup_n)
        for n in dup_n:
            sig[f"dup_{n}_gram_frac"] = dups[n] / len(text)
    return sig


def quality_signals(text: str, cp: np.ndarray, tok: Tokens, split_lines: list[str], language: str,
                    stop_words: tuple[str, ...]) -> dict:
    """Word counts and lengths, symbol and line-shape ratios, distinct stop words (original text)."""
    punct_t, alpha_t, _ = char_tables()
    word = ~tok.space
    w_idx, w_len, w_orth = tok.idx[word], tok.length[word], tok.orth[word]
    n_words = len(w_idx)
    nonpunct = np.concatenate(([0], np.cumsum(~punct_t[cp])))
    alpha = np.concatenate(([0], np.cumsum(alpha_t[cp])))
    ends = w_idx + w_len
    non_symbol = (nonpunct[ends] - nonpunct[w_idx]) > 0
    sig: dict = {
        "n_words": n_words,
        "n_non_symbol_words": int(non_symbol.sum()),
        "avg_word_length": float(np.mean(w_len[non_symbol])) if non_symbol.any() else None,
        "hash_ratio": text.count("#") / n_words if n_words else None,
        "ellipsis_ratio": (text.count("...") + text.count("…")) / n_words if n_words else None,
    }
    if split_lines:
        sig["bullet_lines_ratio"] = sum(ln.lstrip().startswith(("•", "-")) for ln in split_lines) / len(split_lines)
        sig["end_ellipsis_lines_ratio"] = sum(ln.rstrip().endswith(("...", "…")) for ln in split_lines) / len(split_lines)
    else:
        sig["bullet_lines_ratio"] = sig["end_ellipsis_lines_ratio"] = None
    sig["alpha_words_ratio"] = int(((alpha[ends] - alpha[w_idx]) > 0).sum()) / n_words if n_words else None
    hits = np.flatnonzero(in_sorted(w_orth, stop_word_hashes(language, stop_words)))
    spans = zip(w_idx[hits].tolist(), (w_idx[hits] + w_len[hits]).tolist())  # Python ints: no numpy scalar per word
    sig["stop_words"] = len({text[a:b] for a, b in spans} & set(stop_words))
    return sig


# ----------------------------------------------------------------------------------- decisions
REPETITION_CHECKS = (
    Check("dup_para_frac", "para_dup_frac", ">", "dup_para_frac"),
    Check("dup_para_char_frac", "para_dup_char_frac", ">", "dup_para_char_frac"),
    Check("dup_line_frac", "line_dup_frac", ">", "dup_line_frac"),
    Check("dup_line_char_frac", "line_dup_char_frac", ">", "dup_line_char_frac"),
)

QUALITY_CHECKS = (
    Check("min_doc_words", "n_non_symbol_words", "<", "gopher_short_doc"),
    Check("max_doc_words", "n_non_symbol_words", ">", "gopher_long_doc"),
    Check("min_avg_word_length", "avg_word_length", "<", "gopher_below_avg_threshold"),
    Check("max_avg_word_length", "avg_word_length", ">", "gopher_above_avg_threshold"),
    Check("max_symbol_word_ratio", "hash_ratio", ">", "gopher_too_many_hashes"),
    Check("max_symbol_word_ratio", "ellipsis_ratio", ">", "gopher_too_many_ellipsis"),
    Check("max_bullet_lines_ratio", "bullet_lines_ratio", ">", "gopher_too_many_bullets"),
    Check("max_ellipsis_lines_ratio", "end_ellipsis_lines_ratio", ">", "gopher_too_many_end_ellipsis"),
    Check("max_non_alpha_words_ratio", "alpha_words_ratio", "<", "gopher_below_alpha_threshold"),
    Check("min_stop_words", "stop_words", "<", "gopher_enough_stop_words"),
)


def gopher_repetition_reason(sig: dict, cfg) -> str | None:
    if sig.get("empty"):
        return "empty"
    return (first_failure(sig, cfg, REPETITION_CHECKS, "gopher_repetition")
            or first_ngram_failure(sig, cfg.top_n_grams, "top_{n}_gram_frac", "top_{n}_gram", "gopher_repetition")
            or first_ngram_failure(sig, cfg.dup_n_grams, "dup_{n}_gram_frac", "duplicated_{n}_n_grams", "gopher_repetition"))


def gopher_quality_reason(sig: dict, cfg) -> str | None:
    if sig.get("empty"):
        return "gopher_short_doc"
    return first_failure(sig, cfg, QUALITY_CHECKS, "gopher_quality")
