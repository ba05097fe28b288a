"""Corpus-derived strings made safe to show on a terminal: nothing a document holds is interpreted.

Ids, snippets, file names and matched spans come from web text. Printed as rich markup, ``[/quote]`` raises
``MarkupError`` (a forum post stopped ``ruyi2 run`` after the filter) and ``[link=...]`` becomes a live link;
printed raw, ESC sequences move the cursor or recolour the terminal, a carriage return overwrites the line,
and bidirectional controls reorder what is shown. ``printable`` writes every control, bidi and zero-width
character as its escape (``\\x1b``, ``\\u202e``), so the user sees that it is there; ``cell`` and ``line`` hand
the result to rich as plain ``Text``, which is neither markup nor emoji codes.
"""

from __future__ import annotations

import re

# C0 and C1 controls (tab and newline handled apart), the bidi marks, embeddings, overrides and isolates,
# zero-width characters, the word joiner and invisible operators, and the byte-order mark
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(value, limit: int | None = None, one_line: bool = True) -> str:
    """``str(value)`` with every control, bidi and zero-width character escaped; tabs and newlines become
    spaces when ``one_line``. ``limit`` cuts the text (not the escapes) to that many characters first."""
    s = str(value)
    if limit is not None:
        s = s[:limit]
    if one_line:
        s = s.replace("\n", " ").replace("\t", " ")
    return _UNSAFE.sub(_escape, s)


def cell(value, limit: int | None = None):
    """A table cell that rich shows as it is (no markup, no emoji codes)."""
    from rich.text import Text

    return Text(printable(value, limit))


def cells(*values) -> list:
    """Table cells: strings and numbers shown as they are (``cell``); rich objects (styled text) passed on."""
    return [v if hasattr(v, "__rich_console__") or hasattr(v, "__rich__") else cell(v) for v in values]


def line(*parts):
    """A line of text assembled from parts, each shown as it is (see ``cell``)."""
    from rich.text import Text

    return Text("".join(printable(p, one_line=False) for p in parts))
