"""The fused web-quality pass: Gopher quality, Gopher repetition, C4 and FineWeb signals from one
tokenization of the document.

datatrove chains four filters that each walk the document again: spaCy tokenizes it for the Gopher rules,
the C4 filter runs the spaCy pipeline once per kept line to count sentences, FineWeb tokenizes the edited
text again, and every n-gram rule joins Python strings. Here the document is tokenized once
(``spacy_tokens.Tokens``) and every family reads that table: words are the non-space tokens (what
``split_into_words`` returns); per-character tables give the per-word Gopher tests by prefix sums;
n-gram rules run on numpy sorts (``repetition.py``); C4 counts sentences with spaCy's Sentencizer rule on
the same tokens; FineWeb reads the text C4 leaves.

Each family's module holds its signals and its thresholds (``gopher.py``, ``c4.py``, ``fineweb.py``);
``compute_signals`` runs them in datatrove's order on one token table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS

from filters.c4 import c4_signals
from filters.fineweb import fineweb_signals
from filters.gopher import quality_signals, repetition_signals
from filters.spacy_tokens import Tokens


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


def compute_signals(text: str, s: HeuristicSettings) -> tuple[dict, dict]:
    """(signals, stats) for one document. ``stats`` holds C4's per-line counters."""
    stats: Counter = Counter()
    if not text:
        return {"empty": True}, stats
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    tok = Tokens(text, s.language, cp)
    word = ~tok.space
    split_lines = text.splitlines()
    sig = repetition_signals(text, cp, tok.orth[word], tok.length[word], s.top_n, s.dup_n)
    sig |= quality_signals(text, cp, tok, split_lines, s.language, s.stop_words)
    if s.c4:  # C4's edit, then FineWeb on the text C4 leaves
        fineweb_words, fineweb_text = c4_signals(text, tok, split_lines, s, sig, stats)
    else:
        fineweb_text, fineweb_words = text, sig["n_words"]
    sig |= fineweb_signals(fineweb_text, fineweb_words, s.fineweb_short_line_length)
    return sig, stats
