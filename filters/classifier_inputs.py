"""The documents a quality classifier is trained on: JSONL (.gz) records, Parquet rows, or one document per
file (raw RFC 822 messages with ``email``: their bodies, HTML stripped).

Files come through the project's path helper (files, folders, globs that match either). Inside a folder
only document files are read (``DOCUMENT_PATTERNS`` or the caller's patterns); every other file found there
is counted by extension in ``skipped`` (e.g. the ``.json`` metadata sidecars of a mail corpus), never read as
a document and never dropped without a trace.
"""

from __future__ import annotations

import email
import email.policy
import html
import os
import re
from dataclasses import dataclass, field

from pipeline.core.paths import match_files
from pipeline.core.records import MAX_RECORD_BYTES, parquet_rows, read_text_file, records

DOCUMENT_PATTERNS = ("*.jsonl", "*.jsonl.gz", "*.parquet", "*.txt", "*.eml", "*.md", "*.html", "*.htm")
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)


class ClassifierInputError(ValueError):
    pass


def email_body(raw: str) -> str:
    """The text/plain and text/html parts of a raw message (HTML tags stripped), joined."""
    msg = email.message_from_string(raw, policy=email.policy.compat32)
    parts = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", "replace")
        except LookupError:  # a charset name Python does not know
            text = payload.decode("latin-1")
        parts.append(html.unescape(_TAGS.sub(" ", text)) if ctype == "text/html" else text)
    return "\n".join(parts).strip()


@dataclass
class ClassifierDocuments:
    documents: list[tuple[str, str]]  # (origin, text); empty texts included, the trainer counts them
    files: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # extension -> files in folders that are not documents


def read_documents(paths: list[str], text_key: str = "text", email_mode: bool = False,
                   patterns: tuple[str, ...] = DOCUMENT_PATTERNS) -> ClassifierDocuments:
    try:
        files = match_files(paths, patterns, what="classifier input")
        everything = match_files(paths, ("*",), require=False)
    except FileNotFoundError as e:
        raise ClassifierInputError(str(e)) from None
    out = ClassifierDocuments([], files=len(files))
    for f in sorted(set(everything) - set(files)):
        ext = os.path.splitext(f)[1] or "(none)"
        out.skipped[ext] = out.skipped.get(ext, 0) + 1
    for f in files:
        if f.endswith((".jsonl", ".jsonl.gz")):
            for where, rec in records(f, ClassifierInputError):
                if not isinstance(rec.get(text_key), str):
                    raise ClassifierInputError(f"{where}: no string field {text_key!r}")
                out.documents.append((where, rec[text_key]))
        elif f.endswith(".parquet"):
            try:
                rows = list(parquet_rows(f, columns=[text_key], error=ClassifierInputError))
            except KeyError as e:
                raise ClassifierInputError(e.args[0]) from None
            for row, rec in rows:
                if not isinstance(rec[text_key], str):
                    raise ClassifierInputError(f"{f} row {row}: {text_key!r} is {type(rec[text_key]).__name__}, not a string")
                out.documents.append((f"{f} row {row}", rec[text_key]))
        else:
            raw, size = read_text_file(f)
            if size is not None:
                raise ClassifierInputError(f"{f}: {size:,} bytes, over the bound of {MAX_RECORD_BYTES:,} for one document")
            text = raw.decode("latin-1") if email_mode else raw.decode("utf-8", "replace")
            out.documents.append((f, email_body(text) if email_mode else text))
    return out
