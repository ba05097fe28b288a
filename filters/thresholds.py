"""Thresholds applied to stored signals ("filter many"): the error for a signal that was never computed,
and threshold tables, one row per test in the order a family applies them.

A row compares one stored signal with one setting of the family. ``off_when_zero`` follows datatrove's
``if self.threshold and ...``: a falsy setting switches the test off. A signal stored as ``None`` (nothing
to measure, e.g. no words) passes, as a NaN does in datatrove.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from pipeline.core.errors import StageError


class SignalMissing(StageError, KeyError):
    """A rule asks for a signal that was not stored (an n-gram size or a family not tagged)."""

    def __str__(self) -> str:
        return self.args[0]


def require(sig: dict, key: str, family: str):
    try:
        return sig[key]
    except KeyError:
        raise SignalMissing(
            f"filter rule {family!r} needs the signal {key!r}, which was not computed when the documents were "
            "tagged (a new n-gram size or family): run `ruyi2 filter` without --retune"
        ) from None


@dataclass(frozen=True)
class Check:
    setting: str  # the family's setting holding the threshold
    signal: str  # the stored signal compared with it
    fails_when: str  # ">": the signal above the threshold fails; "<": below
    reason: str
    off_when_zero: bool = True


def above(value, threshold) -> bool:
    return value is not None and value > threshold


def below(value, threshold) -> bool:
    return value is not None and value < threshold


def first_failure(sig: dict, cfg, checks: Iterable[Check], family: str) -> str | None:
    """The reason of the first failing row of ``checks``, or None."""
    for c in checks:
        threshold = getattr(cfg, c.setting)
        if c.off_when_zero and not threshold:
            continue
        value = require(sig, c.signal, family)
        if (above if c.fails_when == ">" else below)(value, threshold):
            return c.reason
    return None


def first_ngram_failure(sig: dict, pairs: Iterable[tuple[int, float]], signal: str, reason: str, family: str) -> str | None:
    """For (n, fraction) settings: the first n whose signal (``signal`` with ``{n}``) is above its fraction."""
    for n, frac in pairs:
        if above(require(sig, signal.format(n=n), family), frac):
            return reason.format(n=n)
    return None
