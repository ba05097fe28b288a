"""FineWeb's quality filter (Penedo et al., 2024) on the text C4 leaves: terminal punctuation, short lines,
duplicated lines and newline density, stored once and thresholded by ``fineweb_reason``."""

from __future__ import annotations

from datatrove.utils.text import TERMINAL_PUNCTUATION

from filters.repetition import find_duplicates
from filters.thresholds import Check, first_failure

CHECKS = (
    Check("short_line_thr", "fw_short_line_ratio", ">", "short_line_ratio", off_when_zero=False),
    Check("char_duplicates_ratio", "fw_char_dup_ratio", ">", "char_dup_ratio", off_when_zero=False),
    Check("new_line_ratio", "fw_list_ratio", ">", "list_ratio", off_when_zero=False),
)


def fineweb_signals(text: str, n_words: int, short_line_length: int) -> dict:
    lines = [ln for ln in text.split("\n") if ln.strip() != ""]
    if not lines:
        return {"fw_empty": True}
    return {
        "fw_empty": False,
        "fw_line_punct_ratio": sum(1 for ln in lines if ln[-1] in TERMINAL_PUNCTUATION) / len(lines),
        "fw_short_line_ratio": sum(1 for ln in lines if len(ln) <= short_line_length) / len(lines),
        "fw_char_dup_ratio": find_duplicates(lines)[1] / len(text.replace("\n", "")),
        "fw_list_ratio": text.count("\n") / n_words if n_words else None,
    }


def fineweb_reason(sig: dict, cfg) -> str | None:
    if sig.get("empty") or sig["fw_empty"]:
        return "empty"
    r = sig["fw_line_punct_ratio"]
    if r < cfg.line_punct_thr and not (r == 0 and cfg.line_punct_exclude_zero):
        return "line_punct_ratio"
    return first_failure(sig, cfg, CHECKS, "fineweb")
