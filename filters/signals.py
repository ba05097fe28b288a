"""Stored signals: the error raised when a threshold needs a signal the tagger did not compute."""

from __future__ import annotations


class SignalMissing(KeyError):
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
