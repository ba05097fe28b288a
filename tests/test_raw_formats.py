"""The raw formats users bring: JSON Lines compressed with zstd (several frames), bzip2 or xz; Hugging Face
dataset folders of Parquet shards; Common Crawl WARC (HTML responses) and WET (text) files, with the pages'
charsets and every skipped WARC record counted, and HTML extraction as a filter step with named removals."""

import bz2
import gzip
import json
import lzma
import os
import re
from html.parser import HTMLParser

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from datatrove.data import Document

from pipeline.core.config import SourceConfig
from pipeline.core.hf_dataset import DatasetFolderError, dataset_files
from pipeline.core.sources import NOTE_STAT, READ_STAT, SourceReader
from tests.conftest import read_docs
from tests.corpora import python_doc_pages
from tests.warc_files import record_id, write_warc, write_wet


def _read(sources, tmp_path):
    reader = SourceReader(sources, str(tmp_path / "quarantine"))
    docs = list(reader.run(None, 0, 1))
    stats = {k: v.total for k, v in reader.stats.stats.items()}
    return docs, read_docs(str(tmp_path / "quarantine")) if os.path.isdir(tmp_path / "quarantine") else [], stats


RECORDS = [{"id": f"d{i}", "text": f"document {i} " + "word " * i} for i in range(300)]


@pytest.mark.parametrize("suffix", ["zst", "bz2", "xz", "gz"])
def test_compressed_json_lines_read_like_plain_ones(tmp_path, suffix):
    """The Pile and SlimPajama ship .jsonl.zst files of several zstd frames: every frame is read."""
    lines = [json.dumps(r).encode() + b"\n" for r in RECORDS]
    plain = b"".join(lines)
    if suffix == "zst":
        cctx = zstandard.ZstdCompressor()
        payload = cctx.compress(b"".join(lines[:100])) + cctx.compress(b"".join(lines[100:]))  # two frames
    else:
        payload = {"bz2": bz2.compress, "xz": lzma.compress, "gz": gzip.compress}[suffix](plain)
    (tmp_path / f"web.jsonl.{suffix}").write_bytes(payload)
    src = SourceConfig(name="web", paths=[str(tmp_path)], format=f"jsonl.{suffix}", domain="web")
    docs, quarantined, _ = _read([src], tmp_path)
    assert [(d.id, d.text) for d in docs] == [(f"web/{r['id']}", r["text"]) for r in RECORDS] and not quarantined


def test_an_oversized_line_in_a_zstd_file_is_quarantined_after_reading_the_bound(tmp_path):
    big = json.dumps({"id": "big", "text": "x" * 3_000_000}).encode() + b"\n"
    (tmp_path / "web.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(big + b'{"id": "ok", "text": "fine"}\n'))
    src = SourceConfig(name="web", paths=[str(tmp_path / "web.jsonl.zst")], format="jsonl", domain="web")
    reader = SourceReader([src], str(tmp_path / "quarantine"), limits=type(SourceReader([src], "q").limits)(max_record_bytes=1 << 20))
    docs = list(reader.run(None, 0, 1))
    assert [d.id for d in docs] == ["web/ok"]
    (q,) = read_docs(str(tmp_path / "quarantine"))
    assert q["metadata"]["quarantine_reason"] == "oversized_record" and q["metadata"]["raw_bytes"] == len(big)


def _shard(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_a_hugging_face_dataset_folder_is_read_by_its_card_and_split(tmp_path):
    ds = tmp_path / "ds"
    _shard(ds / "data" / "train-00000-of-00002.parquet", [{"id": "a", "text": "first shard"}])
    _shard(ds / "data" / "train-00001-of-00002.parquet", [{"id": "b", "text": "second shard"}])
    _shard(ds / "data" / "test-00000-of-00001.parquet", [{"id": "t", "text": "held out"}])
    _shard(ds / "zh" / "part-0.parquet", [{"id": "z", "text": "中文"}])
    # no card: the hub's conventions
    assert [os.path.basename(f) for f in dataset_files(str(ds))] == ["train-00000-of-00002.parquet",
                                                                    "train-00001-of-00002.parquet"]
    assert [os.path.basename(f) for f in dataset_files(str(ds), split="test")] == ["test-00000-of-00001.parquet"]
    (ds / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
                                  "- config_name: zh\n  data_files: zh/*.parquet\n---\n# A dataset card\n")
    src = SourceConfig(name="hf", paths=[str(ds)], format="hf_parquet", domain="web")
    docs, _, _ = _read([src], tmp_path)
    assert [d.text for d in docs] == ["first shard", "second shard"]
    zh = SourceConfig(name="hfzh", paths=[str(ds)], format="hf_parquet", domain="web", language="zh", hf_config="zh")
    assert [d.text for d in _read([zh], tmp_path / "zh")[0]] == ["中文"]
    with pytest.raises(DatasetFolderError, match=r"no config 'fr' \(its configs: \['default', 'zh'\]\)"):
        dataset_files(str(ds), config="fr")
    with pytest.raises(DatasetFolderError, match="config 'default' has no split 'validation'"):
        dataset_files(str(ds), split="validation")


# ------------------------------------------------------------------------------------------------- WARC
class _BodyParagraphs(HTMLParser):
    """The text of the <p> elements inside Sphinx's main content (div.body): what a reader of the page sees."""

    def __init__(self):
        super().__init__()
        self.depth, self.in_p, self.paragraphs = 0, False, []

    def handle_starttag(self, tag, attrs):
        if self.depth:
            self.depth += tag == "div"
        elif tag == "div" and ("class", "body") in attrs:
            self.depth = 1
        if self.depth and tag == "p":
            self.in_p = True
            self.paragraphs.append("")

    def handle_endtag(self, tag):
        if self.depth and tag == "div":
            self.depth -= 1
        if tag == "p":
            self.in_p = False

    def handle_data(self, data):
        if self.depth and self.in_p:
            self.paragraphs[-1] += data


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _visible_paragraphs(html: str, n: int = 3) -> list[str]:
    parser = _BodyParagraphs()
    parser.feed(html)
    return [_words(p) for p in parser.paragraphs if len(p) > 80][:n]


@pytest.fixture(scope="module")
def pages():
    return dict(python_doc_pages())


def _crawl(pages) -> list[dict]:
    """Real pages as a crawl saw them: UTF-8 with the charset in the header, one re-encoded to windows-1252 and
    declared in the header, one declared only in its <meta>, one declared nowhere, and what is not a page."""
    names = ["json.html", "csv.html", "re.html", "os.path.html", "functools.html"]
    html = {n: pages[n] for n in names}
    out = [{"url": f"https://docs.example.org/library/{n}", "body": html[n], "content_type": "text/html; charset=utf-8"}
           for n in names[:2]]
    latin = pages["codecs.html"].decode("utf-8").encode("cp1252", "replace")
    out.append({"url": "https://docs.example.org/library/codecs.html", "body": latin,
                "content_type": "text/html; charset=windows-1252"})
    meta = html["re.html"].decode("utf-8").replace('<meta charset="utf-8"', '<meta charset="windows-1252"')
    out.append({"url": "https://docs.example.org/library/re.html", "body": meta.encode("cp1252", "replace"),
                "content_type": "text/html"})
    bare = re.sub(r'<meta charset="utf-8"\s*/?>', "", html["os.path.html"].decode("utf-8"))
    out.append({"url": "https://docs.example.org/library/os.path.html", "body": bare.encode("cp1252", "replace"),
                "content_type": "text/html"})
    out.append({"url": "https://docs.example.org/missing", "body": b"<html>not here</html>", "status": "404 Not Found",
                "content_type": "text/html"})
    out.append({"url": "https://docs.example.org/logo.png", "body": b"\x89PNG\r\n", "content_type": "image/png"})
    out.append({"url": "https://blocked.example.net/library/functools.html", "body": html["functools.html"],
                "content_type": "text/html; charset=utf-8"})
    return out


def test_warc_pages_are_read_with_their_url_record_id_and_charset(tmp_path, pages):
    write_warc(str(tmp_path / "crawl.warc.gz"), _crawl(pages))
    src = SourceConfig(name="cc", paths=[str(tmp_path)], format="warc", domain="web")
    docs, quarantined, stats = _read([src], tmp_path)
    assert not quarantined
    assert [d.metadata["url"] for d in docs] == [p["url"] for p in _crawl(pages) if p.get("status", "200 OK") == "200 OK"
                                                 and p["content_type"].startswith("text/html")]
    assert docs[0].id == f"cc/{record_id(1)}" and docs[0].metadata["date"] == "2026-11-30T12:00:00Z"
    assert [d.metadata["charset_from"] for d in docs] == ["header", "header", "header", "meta", "detected", "header"]
    assert docs[2].metadata["charset"] == "cp1252" and "¶" in docs[2].text and "\ufffd" not in docs[2].text
    meta = pages["re.html"].decode("utf-8").replace('<meta charset="utf-8"', '<meta charset="windows-1252"')
    assert docs[3].text == meta.encode("cp1252", "replace").decode("cp1252")  # what the page's bytes hold
    assert "\ufffd" not in docs[4].text and "¶" in docs[4].text  # decoded as detected, not replaced
    notes = {k[len(NOTE_STAT) + 3:]: v for k, v in stats.items() if k.startswith(NOTE_STAT + "cc/")}
    assert {k: v for k, v in notes.items() if k.startswith("warc_skipped")} == {
        "warc_skipped_warcinfo": 1, "warc_skipped_request": 8, "warc_skipped_status_404": 1, "warc_skipped_not_html": 1}
    assert stats[READ_STAT + "cc"] == len(docs) == 6


def test_a_truncated_warc_keeps_the_pages_before_the_cut_and_names_the_file(tmp_path, pages):
    write_warc(str(tmp_path / "whole.warc.gz"), _crawl(pages))
    data = (tmp_path / "whole.warc.gz").read_bytes()
    (tmp_path / "whole.warc.gz").unlink()
    (tmp_path / "cut.warc.gz").write_bytes(data[: int(len(data) * 0.6)])
    src = SourceConfig(name="cc", paths=[str(tmp_path)], format="warc", domain="web")
    docs, quarantined, _ = _read([src], tmp_path)
    assert 0 < len(docs) < 6 and all(d.metadata["url"].startswith("https://docs.example.org/") for d in docs)
    assert [q["metadata"]["quarantine_reason"] for q in quarantined] == ["unreadable_file"]
    assert quarantined[0]["metadata"]["file"].endswith("cut.warc.gz")


def test_what_a_hostile_warc_says_in_its_headers_does_not_become_a_stat_name(tmp_path):
    """A record type or HTTP status made up by the file is counted as `other` / `invalid`: stat names (shown in
    reports) come from a fixed set, not from the corpus."""
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(tmp_path / "odd.warc.gz", "wb") as out:
        writer = WARCWriter(out, gzip=True)
        odd = writer.create_warc_record("https://x.example/", "\x1b[31mred" + "t" * 5000, payload=io.BytesIO(b"z"))
        writer.write_record(odd)
        http = StatusAndHeaders("9x9 \x1b[2J", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record("https://x.example/a", "response", payload=io.BytesIO(b"<p>a</p>"),
                                                      http_headers=http))
    src = SourceConfig(name="cc", paths=[str(tmp_path)], format="warc", domain="web")
    docs, quarantined, stats = _read([src], tmp_path)
    assert not docs and not quarantined
    assert {k for k in stats if k.startswith(NOTE_STAT)} == {NOTE_STAT + "cc/warc_skipped_other",
                                                             NOTE_STAT + "cc/warc_skipped_status_invalid"}


def test_wet_conversions_are_read_as_text(tmp_path):
    write_wet(str(tmp_path / "crawl.warc.wet.gz"), [("https://a.example/", "Plain text of page a.\nSecond line."),
                                                     ("https://b.example/", "Texte de la page b, en français.")])
    src = SourceConfig(name="wet", paths=[str(tmp_path)], format="wet", domain="web", file_glob="*.wet.gz")
    docs, _, stats = _read([src], tmp_path)
    assert [(d.text, d.metadata["url"]) for d in docs] == [("Plain text of page a.\nSecond line.", "https://a.example/"),
                                                           ("Texte de la page b, en français.", "https://b.example/")]
    assert stats[NOTE_STAT + "wet/warc_skipped_warcinfo"] == 1


@pytest.mark.parametrize("extractor", ["trafilatura", "resiliparse"])
def test_extraction_keeps_the_pages_text_and_drops_its_navigation(tmp_path, pages, extractor):
    from filters.extract import HtmlExtraction, extracted_file

    names = ["json.html", "csv.html", "functools.html"]
    docs = [Document(text=pages[n].decode("utf-8"), id=f"cc/{n}", metadata={"source": "cc"}) for n in names]
    step = HtmlExtraction(["cc"], extractor, 10.0, str(tmp_path))
    out = list(step.run(iter(docs + [Document(text="plain", id="x", metadata={"source": "other"})]), 0, 1))
    assert out[-1].text == "plain" and "extracted_by" not in out[-1].metadata
    for name, doc in zip(names, out):
        visible = _visible_paragraphs(pages[name].decode("utf-8"))
        assert len(visible) == 3 and all(p in _words(doc.text) for p in visible), name
        for chrome in ("Report a Bug", "Previous topic", "Show Source", "Navigation"):
            assert chrome not in doc.text, (name, chrome)
        assert doc.metadata["extracted_by"] == extractor and "removed_reason" not in doc.metadata
    stored = [json.loads(line) for line in gzip.open(extracted_file(str(tmp_path), 0), "rt")]
    assert [r["id"] for r in stored] == [f"cc/{n}" for n in names] and {r["status"] for r in stored} == {"ok"}


def test_pages_without_text_in_time_are_removed_with_their_reason(tmp_path, pages):
    """A 2.9 MB page (40 real pages' bodies in one) takes trafilatura over a second: with a 0.5 s limit it is
    removed as extract:timeout (its HTML kept for removed/), and the next page still extracts in a fresh
    sandbox; a page of scripts only is extract:empty. The retune path joins the stored outcomes back."""
    from filters.extract import HtmlExtraction, StoredExtraction

    body = "".join(p.decode("utf-8").split("<body", 1)[1].split(">", 1)[1].split("</body>")[0] for _, p in list(pages.items())[:40])
    docs = lambda: [Document(text=t, id=f"cc/{i}", metadata={"source": "cc"}) for i, t in  # noqa: E731
                    enumerate([f"<html><body>{body}</body></html>", pages["json.html"].decode("utf-8"),
                               "<html><head><script>var x = 1;</script></head><body><script>go()</script></body></html>"])]
    out = list(HtmlExtraction(["cc"], "trafilatura", 0.5, str(tmp_path)).run(iter(docs()), 0, 1))
    assert [d.metadata.get("removed_reason") for d in out] == ["extract:timeout", None, "extract:empty"]
    assert out[0].text.startswith("<html><body>") and "JSON" in out[1].text
    again = list(StoredExtraction(["cc"], str(tmp_path)).run(iter(docs()), 0, 1))
    assert [(d.text, d.metadata.get("removed_reason")) for d in again] == [(d.text, d.metadata.get("removed_reason")) for d in out]
    from filters.apply import SignalFileMismatch

    with pytest.raises(SignalFileMismatch, match="no stored extraction of 'cc/9'"):
        list(StoredExtraction(["cc"], str(tmp_path)).run(iter([Document(text="x", id="cc/9", metadata={"source": "cc"})]), 0, 1))


@pytest.mark.slow  # the filter stage over a crawl, then retuned
def test_the_filter_stage_extracts_a_crawl_and_retunes_without_extracting_again(tmp_path, pages, monkeypatch):
    """A WARC and a WET source through `filter`: the pages' extracted text is what is tagged and kept (no
    markup), the URL rule reads the WARC's target URI, the counts add up; --retune joins the stored extraction
    (an extractor that would fail if called is never called) and matches; a changed extractor refuses it."""
    from filters.stage import RetuneError
    from pipeline.core.layout import RunLayout
    from pipeline.recipe import parse_recipe
    from pipeline.runner import run_stages

    crawl = tmp_path / "crawl"
    crawl.mkdir()
    write_warc(str(crawl / "CC-MAIN-00000.warc.gz"), _crawl(pages))
    write_wet(str(crawl / "CC-MAIN-00000.warc.wet.gz"), [
        ("https://wet.example/a", _words(" ".join(_visible_paragraphs(pages["json.html"].decode(), 8)))),
        ("https://wet.example/b", _words(" ".join(_visible_paragraphs(pages["csv.html"].decode(), 8))))])

    def recipe(extractor="trafilatura"):
        return parse_recipe({
            "run_dir": str(tmp_path / "run"),
            "sources": [{"name": "cc", "paths": [str(crawl)], "format": "warc", "domain": "web"},
                        {"name": "ccwet", "paths": [str(crawl)], "format": "wet", "domain": "web"}],
            "executor": {"tasks": 1, "workers": 1},
            # documentation pages are code-heavy: the prose rules would remove most of them, which is not the point here
            "filter": {"extract": {"extractor": extractor},
                       "rules": {"url": {"enabled": True, "extra_domains": ["blocked.example.net"]},
                                 **{family: {"enabled": False} for family in ("gopher_quality", "gopher_repetition",
                                                                                 "fineweb", "c4", "boilerplate")}}},
            "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}]}})

    stats = run_stages(recipe(), ["filter"], quiet=True)["filter"]
    layout = RunLayout(str(tmp_path / "run"))

    def outcome():
        kept = {d["id"]: d["text"] for d in read_docs(layout.output("filter"))}
        removed = {d["id"]: d["metadata"]["removed_reason"] for d in read_docs(layout.removed("filter"))}
        return kept, removed

    kept, removed = outcome()
    assert removed[f"cc/{record_id(8)}"].startswith("url:")  # blocked.example.net, from the WARC-Target-URI
    assert any(k.startswith("cc/") for k in kept) and any(k.startswith("ccwet/") for k in kept)
    assert all("<div" not in text and "</p>" not in text for text in kept.values())
    for src, n in (("cc", 6), ("ccwet", 2)):
        c = stats["sources"][src]
        assert c["in"]["docs"] == n == c["kept"]["docs"] + c["removed"]["docs"] + c["quarantined"]["docs"]
    assert stats["reading"]["cc"]["notes"]["warc_skipped_request"] == 8
    # where the stage's time went (beside stats.json, which reruns write byte for byte)
    profile = json.load(open(os.path.join(layout.stage("filter"), "profile.json")))
    assert set(profile["seconds"]) == {"read", "extract", "signals", "thresholds", "tokens", "write"}
    assert profile["seconds"]["extract"] > profile["seconds"]["thresholds"] > 0
    assert abs(sum(profile["share"].values()) - 1) < 1e-3
    assert {"sanity", "url", "language"} <= set(profile["signals_by_source"]["cc"])
    assert "profile" not in stats

    import filters.extract

    def boom(html):
        raise AssertionError("a page was extracted again during --retune")

    monkeypatch.setitem(filters.extract.EXTRACTORS, "trafilatura", boom)
    run_stages(recipe(), ["filter"], quiet=True, retune=True)
    assert outcome() == (kept, removed)
    with pytest.raises(RetuneError, match="filter.extract changed"):
        run_stages(recipe("resiliparse"), ["filter"], quiet=True, retune=True)
