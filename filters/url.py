"""URL block lists: datatrove's ``URLFilter`` with its bundled lists (domains, URLs, banned words and
subwords) on ``metadata.url``, with tldextract pinned to its bundled public-suffix snapshot (no network at
run time). A document without a url passes."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4)
def _url_filter(soft_word_threshold: int, extra_domains: tuple[str, ...]):
    from datatrove.pipeline.filters import URLFilter
    from tldextract import TLDExtract

    flt = URLFilter(soft_word_threshold=soft_word_threshold, extra_domains=extra_domains or None)
    # the bundled public-suffix snapshot: TLDExtract() would try to download the list first
    flt.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
    return flt


def url_signals(url: str | None, soft_word_threshold: int, extra_domains: list[str]) -> dict:
    if not url:
        return {"verdict": None}
    from datatrove.data import Document
    from datatrove.pipeline.filters.base_filter import get_filter_result

    keep, reason = get_filter_result(_url_filter(soft_word_threshold, tuple(extra_domains)).filter(Document(text="", id="url", metadata={"url": url})))
    return {"verdict": "ok" if keep else reason}


def url_reason(sig: dict, cfg) -> str | None:
    return None if sig["verdict"] in (None, "ok") else sig["verdict"]
