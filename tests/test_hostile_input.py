"""Hostile input at the reader: every record is read, quarantined with a named reason, or refused, never
dropped uncounted; nothing a record holds can reroute it, break the accounting or crash the writer."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datatrove.data import Document

from pipeline.core.accounting import folder_counts
from pipeline.core.config import ReadLimits, SourceConfig
from pipeline.core.documents import (
    DROPPED_FIELDS,
    INPUT_FIELDS,
    REMOVED_REASON,
    REMOVED_TEXT_CHARS,
    TEXT_BYTES,
    DocWriter,
    RemovedDocWriter,
)
from pipeline.core.records import BOM, jsonl_records, parquet_rows, read_json_file
from pipeline.core.routing import StageRouter
from pipeline.core.sources import NOTE_STAT, QUARANTINE_STAT, READ_STAT, SourceReader
from tests.conftest import read_docs

DEEP = "[" * 1000 + "]" * 1000  # 2 KB: past the JSON decoder's recursion limit
HUGE_INT = "9" * 5000  # past Python's 4,300-digit limit on int()


def _read(sources, tmp_path, limits=None):
    reader = SourceReader(sources, str(tmp_path / "quarantine"), limits=limits)
    docs = list(reader.run(None, 0, 1))
    stats = {k: v.total for k, v in reader.stats.stats.items()}
    return docs, read_docs(str(tmp_path / "quarantine")), stats


def _jsonl_source(tmp_path, lines: list[bytes], name="web.jsonl", **kw) -> SourceConfig:
    (tmp_path / name).write_bytes(b"".join(lines))
    return SourceConfig(name="web", paths=[str(tmp_path / name)], format="jsonl", domain="web", **kw)


def test_deep_nesting_and_huge_integers_are_quarantined_and_the_records_after_them_survive(tmp_path):
    src = _jsonl_source(tmp_path, [
        b'{"id": "a", "text": "first"}\n',
        ('{"id": "deep", "text": "x", "x": ' + DEEP + "}\n").encode(),
        b'{"id": "b", "text": "second"}\n',
        ('{"id": "big", "text": "x", "n": ' + HUGE_INT + "}\n").encode(),
        b'{"id": "c", "text": "third"}\n',
    ])
    docs, quarantined, stats = _read([src], tmp_path)
    assert [d.id for d in docs] == ["web/a", "web/b", "web/c"]
    assert {q["id"]: q["metadata"]["quarantine_reason"] for q in quarantined} == {
        "web/web.jsonl:2": "too_deeply_nested", "web/web.jsonl:4": "number_too_large"}
    assert stats[READ_STAT + "web"] == 5 and stats[QUARANTINE_STAT + "web"] == 2


def test_a_byte_order_mark_does_not_cost_the_first_record(tmp_path):
    src = _jsonl_source(tmp_path, [BOM + b'{"id": "first", "text": "kept"}\n', b'{"id": "second", "text": "kept too"}\n'])
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "mod.py").write_bytes(BOM + b"print('hi')\n")
    code = SourceConfig(name="code", paths=[str(tmp_path / "code")], format="text", domain="code", language="python")
    docs, quarantined, stats = _read([src, code], tmp_path)
    assert not quarantined
    assert {d.id: d.text for d in docs} == {"web/first": "kept", "web/second": "kept too", "code/mod.py": "print('hi')\n"}
    assert stats[NOTE_STAT + "web/bom_stripped"] == 1 and stats[NOTE_STAT + "code/bom_stripped"] == 1


def test_an_oversized_line_is_quarantined_with_its_size_and_the_next_line_is_read(tmp_path):
    long = ('{"id": "long", "text": "' + "y" * 5000 + '"}\n').encode()
    src = _jsonl_source(tmp_path, [b'{"id": "a", "text": "short"}\n', long, b'{"id": "b", "text": "after"}\n'])
    docs, quarantined, _ = _read([src], tmp_path, ReadLimits(max_record_bytes=1024))
    assert [d.id for d in docs] == ["web/a", "web/b"]
    (q,) = quarantined
    assert q["metadata"]["quarantine_reason"] == "oversized_record" and q["metadata"]["raw_bytes"] == len(long)
    assert len(q["text"].encode()) <= 1 << 20  # a prefix of it, not the record


def test_an_oversized_text_file_is_quarantined_with_its_size(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "small.txt").write_text("small file")
    (folder / "big.txt").write_text("z" * 3000)
    src = SourceConfig(name="t", paths=[str(folder)], format="text", domain="other")
    docs, quarantined, _ = _read([src], tmp_path, ReadLimits(max_record_bytes=1024))
    assert [d.id for d in docs] == ["t/small.txt"]
    assert [(q["metadata"]["quarantine_reason"], q["metadata"]["raw_bytes"], len(q["text"])) for q in quarantined] == [
        ("oversized_record", 3000, 1024)]


def test_a_parquet_row_group_over_the_bound_is_refused_by_path(tmp_path):
    big = pa.Table.from_pylist([{"id": f"r{i}", "text": os.urandom(2500).hex()} for i in range(400)])  # 2 MB
    pq.write_table(big, tmp_path / "big.parquet", row_group_size=400)
    pq.write_table(pa.Table.from_pylist([{"id": "ok", "text": "fine"}]), tmp_path / "small.parquet")
    src = SourceConfig(name="pq", paths=[str(tmp_path / "*.parquet")], format="parquet", domain="web")
    docs, quarantined, stats = _read([src], tmp_path, ReadLimits(max_row_group_bytes=1 << 20))
    assert [d.id for d in docs] == ["pq/ok"]
    (q,) = quarantined
    md = q["metadata"]
    assert (md["quarantine_reason"], md["rows"], md["file"]) == ("oversized_row_group", 400, str(tmp_path / "big.parquet"))
    assert "big.parquet: row group 0 holds 400 rows" in q["text"]
    # the strict readers refuse it, naming the file
    with pytest.raises(ValueError, match="big.parquet: row group 0"):
        list(parquet_rows(str(tmp_path / "big.parquet"), max_row_group_bytes=1 << 20))


def test_input_fields_named_like_pipeline_keys_cannot_reroute_a_document(tmp_path):
    rec = {"id": "sneaky", "text": "An ordinary page.", "removed_reason": "filter:spam", "quarantine_reason": "x",
           "source": "other", "n_tokens": 10**9, "metadata": {"removed_stage": "filter"}, "url": "https://a.example/"}
    src = _jsonl_source(tmp_path, [json.dumps(rec).encode() + b"\n"])
    (doc,), quarantined, stats = _read([src], tmp_path)
    assert not quarantined
    assert doc.metadata["source"] == "web" and doc.metadata["url"] == "https://a.example/"
    assert doc.metadata[INPUT_FIELDS] == {"removed_reason": "filter:spam", "quarantine_reason": "x", "source": "other",
                                          "n_tokens": 10**9, "removed_stage": "filter"}
    assert REMOVED_REASON not in doc.metadata and stats[NOTE_STAT + "web/reserved_fields_moved"] == 1
    router = StageRouter(str(tmp_path / "out"), str(tmp_path / "removed"), "filter")
    list(router.run(iter([doc]), 0, 1))
    assert [d["id"] for d in read_docs(str(tmp_path / "out"))] == ["web/sneaky"]
    assert not os.path.exists(tmp_path / "removed") or not read_docs(str(tmp_path / "removed"))


def test_fields_too_large_or_too_deep_and_unusable_ids_are_dropped_and_named(tmp_path):
    nested_ok = json.loads("[" * 50 + "1" + "]" * 50)
    nested_deep = json.loads("[" * 80 + "1" + "]" * 80)
    recs = [
        {"id": "f1", "text": "kept", "html": "<p>" * 400_000, "ok": nested_ok, "deep": nested_deep},
        {"id": {"nested": "id"}, "text": "kept too"},
        {"id": "i" * 5000, "text": "kept three"},
    ]
    src = _jsonl_source(tmp_path, [json.dumps(r).encode() + b"\n" for r in recs])
    docs, quarantined, stats = _read([src], tmp_path)
    assert not quarantined
    a, b, c = docs
    assert a.id == "web/f1" and a.metadata["ok"] == nested_ok and "html" not in a.metadata and "deep" not in a.metadata
    assert set(a.metadata[DROPPED_FIELDS]) == {"html", "deep"} and "max_field_bytes" in a.metadata[DROPPED_FIELDS]["html"]
    assert b.id == "web/web.jsonl:2" and "not dict" in b.metadata[DROPPED_FIELDS]["id"]
    assert c.id == "web/web.jsonl:3" and "max_id_chars" in c.metadata[DROPPED_FIELDS]["id"]
    assert stats[NOTE_STAT + "web/fields_dropped"] == 3
    # what is kept is readable by the accounting (polars' JSON reader gives up past 127 levels)
    list(StageRouter(str(tmp_path / "out"), str(tmp_path / "removed"), "filter").run(iter(docs), 0, 1))
    assert folder_counts(str(tmp_path / "out"))["web"]["docs"] == 3


def test_nan_and_infinity_in_a_field_keep_the_document_countable(tmp_path):
    src = _jsonl_source(tmp_path, [b'{"id": "n", "text": "t", "score": NaN, "big": 1e999, "l": [-Infinity]}\n'])
    docs, _, _ = _read([src], tmp_path)
    with DocWriter(str(tmp_path / "out")) as w:
        w.write(docs[0], 0)
    assert folder_counts(str(tmp_path / "out")) == {"web": {"docs": 1, "tokens": 0, "bytes": 1}}
    md = read_docs(str(tmp_path / "out"))[0]["metadata"]
    assert (md["score"], md["big"], md["l"]) == ("nan", "inf", ["-inf"])


def test_lone_surrogates_are_replaced_so_the_writer_does_not_fail(tmp_path):
    src = _jsonl_source(tmp_path, [b'{"id": "s\\udfff", "text": "caf\\ud800e \\ud83d\\ude00", "t": "\\udc00"}\n',
                                   b'{"id": "after", "text": "fine"}\n'])
    docs, quarantined, stats = _read([src], tmp_path)
    assert not quarantined and stats[NOTE_STAT + "web/lone_surrogates_replaced"] == 1
    assert docs[0].text == "caf\ufffde \U0001f600" and docs[0].id == "web/s\ufffd" and docs[0].metadata["t"] == "\ufffd"
    with DocWriter(str(tmp_path / "out")) as w:
        for d in docs:
            w.write(d, 0)
    assert [d["id"] for d in read_docs(str(tmp_path / "out"))] == ["web/s\ufffd", "web/after"]


def test_removed_documents_keep_a_bounded_prefix_with_their_full_size(tmp_path):
    text = "é" * (REMOVED_TEXT_CHARS + 1000)
    doc = Document(text=text, id="big", metadata={"source": "web", REMOVED_REASON: "sanity:too_large"})
    small = Document(text="small", id="small", metadata={"source": "web", REMOVED_REASON: "x"})
    with RemovedDocWriter(str(tmp_path / "removed"), "filter") as w:
        w.write(doc, 0)
        w.write(small, 0)
    rows = {d["id"]: d for d in read_docs(str(tmp_path / "removed"))}
    assert len(rows["big"]["text"]) == REMOVED_TEXT_CHARS and rows["big"]["metadata"][TEXT_BYTES] == len(text.encode())
    assert rows["small"]["text"] == "small" and TEXT_BYTES not in rows["small"]["metadata"]
    # the accounting counts the full size
    assert folder_counts(str(tmp_path / "removed"))["web"]["bytes"] == len(text.encode()) + 5


def test_strict_readers_name_the_file_for_every_decoder_failure(tmp_path):
    (tmp_path / "deep.json").write_text('{"examples": ' + DEEP + "}")
    (tmp_path / "bom.json").write_bytes(BOM + b'{"examples": []}')
    with pytest.raises(ValueError, match="deep.json: JSON nested too deeply"):
        read_json_file(str(tmp_path / "deep.json"))
    assert read_json_file(str(tmp_path / "bom.json")) == {"examples": []}
    (tmp_path / "b.jsonl").write_text('{"n": ' + HUGE_INT + "}\n")
    assert [r.reason for _, r in jsonl_records(str(tmp_path / "b.jsonl"))] == ["number_too_large"]


MEASURE = r"""
import sys
from pipeline.core.config import SourceConfig
from pipeline.core.sources import SourceReader
src = SourceConfig(name="s", paths=[sys.argv[1]], format=sys.argv[2], domain="web")
reader = SourceReader([src], sys.argv[3])
n = sum(1 for _ in reader.run(None, 0, 1))
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(n, peak // 1024)
"""


@pytest.mark.slow  # writes a 200 MB file and inflates 1 GB
@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz"])
def test_a_giant_line_is_read_with_bounded_memory(tmp_path, kind):
    """A 200 MB one-line record, and a 1 MB gzip that inflates to one 1 GB line, cost the reader its bound
    (64 MiB by default), not their size: peak RSS measured in a fresh process."""
    path = tmp_path / f"giant.{kind}"
    size = 208 << 20 if kind == "jsonl" else 1 << 30  # whole 16 MiB chunks
    opener = gzip.open(path, "wb", compresslevel=1) if kind == "jsonl.gz" else open(path, "wb")
    with opener as f:
        f.write(b'{"id": "giant", "text": "')
        chunk = b"x" * (16 << 20)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(b'"}\n{"id": "after", "text": "the next record"}\n')
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path), kind, str(tmp_path / "q")], capture_output=True,
                         text=True, check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    docs, peak_mib = map(int, out.stdout.split())
    assert docs == 1  # the record after the giant line was read
    (q,) = read_docs(str(tmp_path / "q"))
    assert q["metadata"]["quarantine_reason"] == "oversized_record" and q["metadata"]["raw_bytes"] > size
    assert peak_mib < 500, f"peak RSS {peak_mib} MiB reading a {size >> 20} MiB line"


HOSTILE = "[/quote] [link=https://evil.example]click[/link] \x1b[31mred\x1b[0m\r over \u202egnp.exe \u200b :smile: <script>x</script>"


def _check_printed(out: str) -> None:
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out and "\u200b" not in out
    assert "[/quote]" in out and "[link=https://evil.example]" in out and ":smile:" in out  # shown, not interpreted
    assert "\\x1b[31mred" in out and "\\u202e" in out and "\\x0d" in out


def test_corpus_strings_reach_the_terminal_as_text(capsys, monkeypatch):
    """Ids, examples, matched spans and cluster members holding rich markup, escape codes, a carriage return and
    bidi controls are printed as visible text: no MarkupError, no live link, nothing sent to the terminal."""
    from dedup.clusters_report import print_cluster_report
    from pipeline.report import print_contamination, print_filter

    empty = {"docs": 0, "tokens": 0, "bytes": 0}
    src = {"in": {"docs": 1, "tokens": 5, "bytes": 9}, "kept": empty, "quarantined": empty | {"reasons": {}},
           "removed": {"docs": 1, "tokens": 5, "bytes": 9, "reasons": {"c4:too_few_sentences": 1}}}
    print_filter({"stage": "filter", "sources": {"web": src}, "totals": {p: src[p] for p in ("in", "kept", "removed", "quarantined")},
                  "examples": {"web": {"c4:too_few_sentences": [{"id": HOSTILE, "text": HOSTILE}]}}})
    _check_printed(capsys.readouterr().out)
    bench = {"gsm8k": {"items_indexed": 1, "items_found": 1, "documents": 1, "documents_per_source": {HOSTILE: 1},
                       "actions": {"drop": 1}, "examples": [{"matched": HOSTILE}]}}
    print_contamination(bench, {"corpus_common": {"excluded": 1, "threshold": 2, "documents": 3, "items_affected": 0,
                                                  "examples": [{"documents": 3, "ngram": HOSTILE, "benchmark": "gsm8k", "item": "1"}]}},
                        title=f"contamination in {HOSTILE}")
    _check_printed(capsys.readouterr().out)
    monkeypatch.setenv("COLUMNS", "400")  # the cluster table's console: wide enough not to fold the cells
    member = {"id": HOSTILE, "source": "web", "role": "kept", "text": HOSTILE}
    print_cluster_report({"minhash": {"clusters": 1, "documents": 2, "size_histogram": {"2": 1},
                                      "largest": [{"cluster": 7, "size": 2, "members": [member, member | {"role": "removed"}]}]},
                          "exact": {"groups": 0, "removed": 0, "largest": []}})
    _check_printed(capsys.readouterr().out)


def test_the_html_report_shows_scripts_and_bidi_controls_as_text(tmp_path):
    from pipeline.core.html_page import Page, table

    page = Page(HOSTILE)
    page.section("examples", table(["id", "text"], [[HOSTILE, HOSTILE]]))
    html = open(page.write(str(tmp_path / "r.html")), encoding="utf-8").read()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\u202e" not in html and "\u200b" not in html and "\x1b" not in html and "\\u202e" in html


def test_caches_loaded_as_code_live_in_a_folder_only_the_user_can_write(tmp_path, monkeypatch):
    """jieba loads its dictionary cache with marshal; its default is a predictable file in the shared /tmp. Our
    cache folder is the user's (mode 0700), and one that others may write or that another user owns is not used."""
    from pipeline.core.cache import private_cache

    monkeypatch.setenv("RUYI2_CACHE", str(tmp_path / "cache"))
    path = private_cache("jieba")
    assert path == str(tmp_path / "cache" / "jieba") and os.stat(path).st_mode & 0o777 == 0o700
    os.chmod(path, 0o777)
    shared = private_cache("jieba")
    assert shared != path and os.stat(shared).st_mode & 0o777 == 0o700 and shared.startswith(tempfile.gettempdir())
    os.chmod(path, 0o700)
    os.chown(path, 65534, 65534)  # another user's folder (the suite runs as root)
    assert private_cache("jieba") != path
    out = subprocess.run([sys.executable, "-c", "from filters.segmenter import jieba_module; print(jieba_module().dt.tmp_dir)"],
                         env={**os.environ, "RUYI2_CACHE": str(tmp_path / "other")}, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == str(tmp_path / "other" / "jieba") and os.listdir(tmp_path / "other" / "jieba")


def test_decontam_check_names_a_truncated_file_and_hostile_records(tmp_path):
    from decontam.check import decontam_check
    from decontam.config import DecontamConfig

    good = b"".join(json.dumps({"id": i, "text": f"an ordinary sentence number {i}"}).encode() + b"\n" for i in range(200))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cut.jsonl.gz").write_bytes(gzip.compress(good)[:300])
    (tmp_path / "data" / "bad.jsonl").write_bytes(('{"id": "d", "text": ' + DEEP + "}\n").encode()
                                                  + ('{"id": "n", "text": "x", "n": ' + HUGE_INT + "}\n").encode()
                                                  + b'{"id": "ok", "text": "fine"}\n')
    report = decontam_check(str(tmp_path / "data"), DecontamConfig(), str(tmp_path / "r.json"))
    assert report["unreadable_reasons"] == {"number_too_large": 1, "too_deeply_nested": 1, "unreadable_file": 1}
    assert report["records_read"] == report["documents_checked"] + report["records_unreadable"]
    assert any("cut.jsonl.gz" in e["record"] and "EOFError" in e["record"] for e in report["unreadable_examples"])


def test_the_nesting_bound_does_not_depend_on_the_interpreters_recursion_limit():
    """Importing torch._dynamo raises the recursion limit: a record 1,000 levels deep is still refused by the
    reader's own bound, and one nested less than it (in strings or not) is read."""
    from pipeline.core.records import MAX_JSON_DEPTH, decode_json

    before = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(20_000)
        assert decode_json('{"a": ' + DEEP + "}")[1][0] == "too_deeply_nested"
    finally:
        sys.setrecursionlimit(before)
    shallow = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    assert decode_json('{"a": ' + shallow + ', "s": "' + "[" * 2000 + '"}')[1] is None  # brackets in a string do not count
