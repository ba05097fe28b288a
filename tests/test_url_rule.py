"""The URL rule with its domain list memory-mapped (filters/domain_set.py): datatrove's URLFilter verdicts on
blocked domains, their subdomains, blocked URLs, banned words and clean URLs, and exact membership."""

from __future__ import annotations

import os
import random

import pytest

from filters.domain_set import DomainSet
from filters.url import _url_filter, url_signals


@pytest.fixture(scope="module")
def lists():
    flt = _url_filter(2, ())
    flt.download_data()
    from datatrove.pipeline.filters import url_filter as dt

    folder = dt.cached_assets_path(library_name="datatrove", namespace="filters", subfolder="url_filter")
    with open(os.path.join(folder, "domains")) as f:
        domains = sorted({x.strip() for x in f if x[0] != "#"})
    with open(os.path.join(folder, "urls")) as f:
        urls = sorted({x.strip() for x in f if x[0] != "#"})
    return flt, domains, urls


def test_membership_is_exact(lists, tmp_path):
    flt, domains, _ = lists
    compact = flt.block_listed_domains
    assert isinstance(compact, DomainSet) and len(compact) == len(domains) > 4_000_000
    rng = random.Random(0)
    sample = rng.sample(domains, 20_000)
    assert all(d in compact for d in sample)
    every = set(domains)
    probes = [p for d in sample[:2000] for p in (d + "x", "x" + d, d.upper(), d[1:])]
    assert [p in compact for p in probes] == [p in every for p in probes] and not all(p in every for p in probes)
    assert None not in compact and "" not in compact
    # a small list with a hostile entry and a comment
    path = tmp_path / "list"
    path.write_text("# comment\nexample.com\n  spaced.org  \n\u00e9t\u00e9.fr\n[red]x[/red]\n")
    small = DomainSet(str(path), ["extra.net"])
    assert {"example.com", "spaced.org", "\u00e9t\u00e9.fr", "[red]x[/red]", "extra.net"} == {d for d in
            ["example.com", "spaced.org", "\u00e9t\u00e9.fr", "[red]x[/red]", "extra.net", "# comment", "other.com"] if d in small}
    assert "\ud800.com" not in small  # a lone surrogate is looked up, not a crash


def test_hash_collisions_cost_a_comparison_not_a_wrong_answer(tmp_path, monkeypatch):
    from filters import domain_set

    monkeypatch.setattr(domain_set, "_hash", lambda b: len(b) % 3)  # nearly everything collides
    words = [f"d{i}.com" for i in range(200)]
    path = tmp_path / "collide"
    path.write_text("\n".join(words[::2]) + "\n")
    small = DomainSet(str(path))
    assert [w in small for w in words] == [i % 2 == 0 for i in range(200)]


def test_verdicts_equal_datatrove_urlfilter(lists):
    from datatrove.data import Document
    from datatrove.pipeline.filters import URLFilter
    from datatrove.pipeline.filters.base_filter import get_filter_result
    from tldextract import TLDExtract

    _, domains, urls = lists
    reference = URLFilter(soft_word_threshold=2)
    reference.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
    rng = random.Random(1)
    cases = [f"https://{d}/page" for d in rng.sample(domains, 1500)]
    cases += [f"http://news.{d}/a?b=c" for d in rng.sample(domains, 500)]
    cases += rng.sample(urls, 500)
    cases += [f"https://site{i}.example.org/articles/{rng.randrange(10**6)}" for i in range(500)]
    cases += ["https://some-shop.example/sex-videos-xxx", "https://www.wikipedia.org/wiki/Cat", "not a url", "http://[::1]/x"]
    verdicts = []
    for url in cases:
        keep, reason = get_filter_result(reference.filter(Document(text="", id="u", metadata={"url": url})))
        expected = "ok" if keep else reason
        assert url_signals(url, 2, [])["verdict"] == expected, url
        verdicts.append(expected)
    assert {"domain", "subdomain", "url", "ok"} <= set(verdicts)


def test_with_caching_off_the_arrays_leave_nothing_behind(tmp_path, monkeypatch):
    """RUYI2_CACHE=off: each process builds the arrays in a temporary folder of its own, removed once they are
    mapped (a worker must not leave ~185 MB in /tmp per process)."""
    import glob
    import tempfile

    monkeypatch.setenv("RUYI2_CACHE", "off")
    pattern = os.path.join(tempfile.gettempdir(), "ruyi2-domain_sets-*")
    before = set(glob.glob(pattern))
    path = tmp_path / "list"
    path.write_text("a.example\nb.example\n")
    small = DomainSet(str(path))
    assert "a.example" in small and "c.example" not in small and len(small) == 2
    assert set(glob.glob(pattern)) == before
