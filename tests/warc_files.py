"""WARC and WET files as Common Crawl writes them, built with warcio from real HTML pages (tests/corpora.py):
responses with HTTP headers, the requests and metadata records a crawl writes beside them, and the text
conversions of a WET file. Record ids and dates are fixed, so a file's bytes are the same on every build."""

from __future__ import annotations

import io

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

DATE = "2026-11-30T12:00:00Z"


def record_id(n: int) -> str:
    return f"<urn:uuid:00000000-0000-4000-8000-{n:012d}>"


def _headers(n: int) -> dict:
    return {"WARC-Record-ID": record_id(n), "WARC-Date": DATE}


def write_warc(path: str, pages: list[dict]) -> None:
    """``pages``: {url, body (bytes), status ("200 OK"), content_type, [record: response|request|metadata]};
    every response is preceded by its request record, as a crawler writes them."""
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        writer.write_record(writer.create_warcinfo_record("crawl.warc.gz", {"software": "ruyi2 tests"}))
        for n, page in enumerate(pages, 1):
            request = StatusAndHeaders("GET / HTTP/1.1", [("Host", "example.org")], is_http_request=True)
            writer.write_record(writer.create_warc_record(page["url"], "request", payload=io.BytesIO(b""),
                                                          http_headers=request, warc_headers_dict=_headers(10_000 + n)))
            http = StatusAndHeaders(page.get("status", "200 OK"), [("Content-Type", page["content_type"])],
                                    protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(page["url"], "response", payload=io.BytesIO(page["body"]),
                                                          http_headers=http, warc_headers_dict=_headers(n)))


def write_wet(path: str, texts: list[tuple[str, str]]) -> None:
    """(url, extracted text) pairs as a WET file's conversion records."""
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        writer.write_record(writer.create_warcinfo_record("crawl.warc.wet.gz", {"software": "ruyi2 tests"}))
        for n, (url, text) in enumerate(texts, 1):
            writer.write_record(writer.create_warc_record(url, "conversion", payload=io.BytesIO(text.encode("utf-8")),
                                                          warc_content_type="text/plain", warc_headers_dict=_headers(n)))
