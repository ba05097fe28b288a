"""URL block lists: datatrove's ``URLFilter`` with its bundled lists (domains, URLs, banned words and
subwords) on ``metadata.url``, with tldextract pinned to its bundled public-suffix snapshot (no network at
run time), and the domain list memory-mapped (``domain_set.py``). A document without a url passes."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _compact_url_filter_class():
    import os

    from datatrove.pipeline.filters import URLFilter
    from datatrove.pipeline.filters import url_filter as dt

    class CompactURLFilter(URLFilter):
        """datatrove's URLFilter, its 4.56M-domain list held as a memory-mapped ``DomainSet`` instead of a
        ~670 MiB Python set in every worker; its other lists (19,586 URLs, the words) stay datatrove's sets.
        ``download_data`` is datatrove's own (0.10.1) but for that one list."""

        def download_data(self):
            if self._downloaded or not self.use_integrated_lists:
                return
            from filters.domain_set import DomainSet

            folder = dt.cached_assets_path(library_name="datatrove", namespace="filters", subfolder="url_filter")
            archive = "url_filterblacklistsv0_3_0.tar.gz"

            def extract():
                import tarfile

                with tarfile.open(os.path.join(dt.ASSETS_PATH, archive), "r:gz") as tar:
                    tar.extractall(folder)

            dt.safely_create_file(os.path.join(folder, archive), extract)
            self.block_listed_domains = DomainSet(os.path.join(folder, "domains"), self.block_listed_domains)
            self.block_listed_url = dt.get_list(folder, "urls", self.block_listed_url, do_normalize=False)
            self.banned_words = dt.get_list(dt.ASSETS_PATH, "banned_words.txt", self.banned_words)
            self.banned_subwords = dt.get_list(dt.ASSETS_PATH, "banned_subwords.txt", self.banned_subwords)
            self.soft_banned_words = dt.get_list(dt.ASSETS_PATH, "soft_banned_words.txt", self.soft_banned_words)
            for word in self.banned_subwords:
                self.banned_subwords_automaton.add_word(word, len(self.banned_subwords_automaton))
            self.banned_subwords_automaton.make_automaton()
            self._downloaded = True

    return CompactURLFilter


@lru_cache(maxsize=4)
def _url_filter(soft_word_threshold: int, extra_domains: tuple[str, ...]):
    from tldextract import TLDExtract

    flt = _compact_url_filter_class()(soft_word_threshold=soft_word_threshold, extra_domains=extra_domains or None)
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
