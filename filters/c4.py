"""C4's quality filter (Raffel et al., 2020) as datatrove applies it: a line edit (or, with
``split_paragraph: false``, a sentence edit) plus document tests, without a spaCy pipeline call per line.

Sentences are counted with spaCy's Sentencizer rule on the document's token table (``sentence_openers``):
a line of a document tokenizes exactly as the line alone, because spaCy splits on whitespace first and
tokenizes each chunk on its own. The kept units are stored with the signals (line index runs, or
character spans in sentence mode, since a sentence cut needs the tokenizer to find again), so
``c4_edit`` re-applies the edit without any tokenizer.
"""

from __future__ import annotations

from collections import Counter
from itertools import accumulate

import numpy as np
from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS

from filters.spacy_tokens import Tokens, sentence_cuts, sentence_openers
from pipeline.core.ranges import expand_runs, index_runs, range_rows


def c4_edit(text: str, sig: dict, remove_citations: bool) -> str:
    """The text C4 keeps from the stored signals: its kept lines (ranges of line indices), stripped and
    without citations, joined by newlines; in sentence mode its kept sentences (character spans, as a
    sentence cut needs the tokenizer to find again) joined by spaces."""
    if sig.get("c4_unit") == "sentence":
        units, sep = [text[a:b] for a, b in sig["c4_kept"]], " "
    else:
        lines = text.splitlines()
        units, sep = [lines[i] for i in expand_runs(sig["c4_kept"])], "\n"
    out = []
    for unit in units:
        line = unit.strip()
        out.append(CITATION_REGEX.sub("", line) if remove_citations else line)
    return sep.join(out).strip()


def c4_signals(text: str, tok: Tokens, lines: list[str], s, sig: dict, stats: Counter) -> tuple[int, str]:
    """(words kept, edited text); ``s`` holds the tag-time C4 settings (``HeuristicSettings``).

    C4QualityFilter's line loop without its spaCy calls. Lorem ipsum and curly brackets are recorded
    as the first line that reaches their test, so either switch can be retuned; the kept lines are the
    ones kept with both switches off (either switch on with a hit drops the whole document anyway).
    In sentence mode the units are the document's sentences, each kept one counts as one sentence."""
    by_line = s.c4_split_paragraph
    if by_line:
        units = lines
        starts = [0, *accumulate(len(x) for x in text.splitlines(keepends=True))]  # Python ints: used one by one
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
        sig["c4_kept"] = index_runs(kept)
    else:
        edited = " ".join(kept_text).strip()
        # a sentence cut can fall inside a whitespace-free chunk, which then tokenizes on its own: count the
        # words of the edited text as FineWeb will (the chunk memo makes the known chunks free)
        n_words = int((~Tokens(edited, s.language).space).sum()) if edited else 0
        n_sentences = len(kept_text)
        sig["c4_unit"] = "sentence"
        sig["c4_kept"] = [[int(starts[i]), int(starts[i + 1])] for i in kept]
    sig["c4_sentences"] = n_sentences
    sig["c4_lorem_line"] = lorem_line
    sig["c4_curly_line"] = curly_line
    return n_words, edited


def _kept_line_counts(kept_text: list[str], bounds: list[tuple], retokenize: list[int], tok: Tokens,
                      language: str) -> tuple[int, int]:
    """(words, sentences) of C4's kept lines, from the document's tokens where the line is unchanged
    (``bounds``: kept index, start, end) and from a new tokenization where a citation was cut out."""
    n_sentences = len(kept_text)
    n_words = 0
    if bounds:
        b = np.array(bounds, dtype=np.int64)
        lo = np.searchsorted(tok.idx, b[:, 1])
        hi = np.searchsorted(tok.idx, b[:, 2])
        sel = range_rows(lo, hi - lo)  # the tokens of every kept line, in order
        group = np.repeat(np.arange(len(b)), hi - lo)
        n_words += int((~tok.space[sel]).sum())
        n_sentences += len(sentence_openers(tok.sentence_codes(language)[sel], group))
    for j in retokenize:
        t = Tokens(kept_text[j], language)
        n_words += int((~t.space).sum())
        n_sentences += len(sentence_openers(t.sentence_codes(language)))
    return n_words, n_sentences


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
