"""Bad input: empty, whitespace-only, binary-looking and gigantic documents, each with its own reason.

Computed first and with C-speed string operations only, so a 50 MB one-line document costs a few linear
scans; a document that fails here gets no other signal (that is what bounds the tagger's time and memory).
"""

from __future__ import annotations

import re

# control characters other than tab, newline, vertical tab, form feed and carriage return; U+FFFD is what
# a lossy decode of binary data leaves behind
_BINARY = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufffd]")


def sanity_signals(text: str, max_chars: int) -> dict:
    sig = {"n_chars": len(text), "whitespace_only": not text.strip()}
    if len(text) > max_chars or sig["whitespace_only"]:
        return sig  # nothing else is read from a document that is removed anyway
    sig["binary_fraction"] = (len(text) - len(_BINARY.sub("", text))) / len(text)
    sig["longest_line"] = max(map(len, text.splitlines()), default=0)
    return sig


def sanity_reason(sig: dict, cfg) -> str | None:
    if sig["whitespace_only"]:
        return "whitespace_only"
    if sig["n_chars"] > cfg.max_chars:
        return "too_large"
    if sig["binary_fraction"] > cfg.max_binary_fraction:
        return "binary"
    if sig["longest_line"] > cfg.max_line_chars:
        return "giant_line"
    return None
