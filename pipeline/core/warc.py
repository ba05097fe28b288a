"""Common Crawl's raw files as records: WARC responses (HTML pages, to be extracted by the filter stage) and WET
conversions (text Common Crawl already extracted), read as a stream of gzip members by warcio.

A WARC file holds more than pages: requests, metadata, redirects, errors, images. Only HTTP 200 responses with
an HTML content type become records; every other WARC record is counted by why it is not a page
(``warc_skipped_<why>`` through ``notes``), never silently passed over. A page's bytes are decoded with the
charset its HTTP header names, else the one its ``<meta>`` declares, else the one ``charset_normalizer``
detects (latin-1 and ASCII labels as windows-1252, as browsers read them); a page none of them decodes is read
as UTF-8 with replacement characters and counted. A page over ``max_record_bytes`` is a ``BadRecord``
(``oversized_record``) read no further than the bound. Each record keeps the page's URL, WARC record id and
date, so the URL rule and provenance work on them. A file cut inside a record (warcio reads it to the cut
without complaint) raises ``TruncatedWarc`` at that record: the pages before it are kept, the file is named.
"""

from __future__ import annotations

import codecs
import re
from typing import Iterator

from pipeline.core.records import BAD_PREVIEW_BYTES, BadRecord, Notes
from pipeline.core.storage import open_input

HTML_TYPES = ("text/html", "application/xhtml+xml")
# the WARC 1.1 record types; any other value a file holds is counted as "other" (a stat key is not file content)
RECORD_TYPES = {"warcinfo", "response", "resource", "request", "metadata", "revisit", "conversion", "continuation"}


def _kind(value) -> str:
    return value if value in RECORD_TYPES else "other"


def _status(value) -> str:
    return value if isinstance(value, str) and len(value) == 3 and value.isdigit() else "invalid"
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]+)", re.IGNORECASE)
DETECT_BYTES = 1 << 16  # what charset detection reads of a page
# WHATWG's encoding standard reads these labels as windows-1252, and so do browsers
_AS_WINDOWS_1252 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1", "ascii", "us-ascii", "iso_8859-1"}


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().lower()
    label = "cp1252" if label in _AS_WINDOWS_1252 else label
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_page(body: bytes, header_charset: str | None) -> tuple[str, str, str]:
    """(text, codec, how: header | meta | detected | replaced)."""
    meta = _META_CHARSET.search(body[:4096])
    for label, how in ((header_charset, "header"), (meta.group(1).decode("ascii", "replace") if meta else None, "meta")):
        codec = _codec(label)
        if codec:
            try:
                return body.decode(codec), codec, how
            except UnicodeDecodeError:
                pass
    from charset_normalizer import from_bytes

    best = from_bytes(body[:DETECT_BYTES]).best()
    codec = _codec(best.encoding) if best is not None else None
    if codec:
        try:
            return body.decode(codec), codec, "detected"
        except UnicodeDecodeError:
            pass
    return body.decode("utf-8", "replace"), "utf-8", "replaced"


def _read_bounded(stream, bound: int) -> tuple[bytes, int | None]:
    """(content, None), or (its first ``bound`` bytes, its full size) for a larger one; the rest is skipped."""
    body = stream.read(bound + 1)
    if len(body) <= bound:
        return body, None
    size = len(body)
    while chunk := stream.read(1 << 20):
        size += len(chunk)
    return body[:bound], size


class TruncatedWarc(ValueError):
    """A WARC record whose block ends before its declared length: warcio reads such a file to its cut without a
    word, so the pages before it would be kept and the cut one kept half; the source reader quarantines the file's
    rest as ``unreadable_file`` with this message."""


def _check_complete(path: str, n: int, rec) -> None:
    """Reads what is left of the record's block; raises ``TruncatedWarc`` if the file ends inside it."""
    raw = rec.raw_stream
    while raw.read(1 << 16):
        pass
    if getattr(raw, "limit", 0) > 0:
        raise TruncatedWarc(f"{path}: WARC record {n} ({rec.rec_type}) ends {raw.limit:,} bytes short of its declared "
                            "length: the file is truncated")


def warc_records(path: str, kind: str, max_record_bytes: int, notes: Notes | None = None,
                 storage: dict | None = None) -> Iterator[tuple[int, dict | BadRecord]]:
    """(WARC record number from 1, record) for every page (``kind`` warc: HTML responses; wet: conversions).
    A record is ``{"text", "id", "url", "date", "content_type"[, "charset", "charset_from"]}``."""
    from warcio.archiveiterator import ArchiveIterator

    note = notes or (lambda what: None)
    wanted = "response" if kind == "warc" else "conversion"
    with open_input(path, storage) as f:
        for n, rec in enumerate(ArchiveIterator(f, arc2warc=True), 1):
            if rec.rec_type != wanted:
                _check_complete(path, n, rec)
                note(f"warc_skipped_{_kind(rec.rec_type)}")
                continue
            headers = rec.rec_headers
            meta = {"id": headers.get_header("WARC-Record-ID"), "url": headers.get_header("WARC-Target-URI"),
                    "date": headers.get_header("WARC-Date")}
            if kind == "warc":
                status = rec.http_headers.get_statuscode() if rec.http_headers else None
                content_type = rec.http_headers.get_header("Content-Type") or "" if rec.http_headers else ""
                skipped = (f"status_{_status(status)}" if status != "200" else
                           "not_html" if content_type.split(";")[0].strip().lower() not in HTML_TYPES else None)
                if skipped:
                    _check_complete(path, n, rec)
                    note(f"warc_skipped_{skipped}")
                    continue
            else:
                content_type = headers.get_header("Content-Type") or "text/plain"
            body, size = _read_bounded(rec.content_stream(), max_record_bytes)
            _check_complete(path, n, rec)  # before the page is yielded: a cut page is no page
            if size is not None:
                yield n, BadRecord(n, "oversized_record", body[:BAD_PREVIEW_BYTES].decode("utf-8", "replace"),
                                   f"{size:,} bytes > the bound of {max_record_bytes:,}", size)
                continue
            if kind == "warc":
                header = _HEADER_CHARSET.search(content_type)
                text, codec, how = decode_page(body, header.group(1) if header else None)
                note(f"charset_{how}")
                meta.update(charset=codec, charset_from=how)
            else:  # WET is UTF-8 by Common Crawl's definition
                text = body.decode("utf-8", "replace")
            yield n, {**meta, "text": text, "content_type": content_type}
