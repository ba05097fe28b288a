"""JSON Lines files read strictly: a malformed line is an error naming ``path:line``, never skipped."""

from __future__ import annotations

import gzip
import json
from typing import Iterator


def open_text(path: str):
    """UTF-8 text, gunzipped when the name ends in ``.gz``."""
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def records(path: str, error: type[Exception] = ValueError) -> Iterator[tuple[str, object]]:
    """(``path:line``, parsed value) for every non-blank line; ``error`` is raised for one that is not JSON."""
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{n}: not valid JSON ({e.msg})") from None
            yield f"{path}:{n}", rec
