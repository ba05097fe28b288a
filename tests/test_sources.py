import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.config import SourceConfig
from pipeline.core.sources import QUARANTINE_STAT, READ_STAT, SourceReader
from tests.conftest import read_docs


def _read(sources, tmp_path):
    reader = SourceReader(sources, str(tmp_path / "quarantine"))
    docs = list(reader.run(None, 0, 1))
    stats = {k: v.total for k, v in reader.stats.stats.items()}
    return docs, read_docs(str(tmp_path / "quarantine")), stats


def test_every_bad_record_is_quarantined_with_its_reason(tmp_path):
    lines = [
        b'{"id": "a", "text": "A good document.", "url": "https://example.org/a"}\n',
        b'{"id": "b", "text": "cut off\n',
        b'{"id": "c", "text": "caf\xe9"}\n',
        b'{"id": "d", "body": "no text"}\n',
        b'{"id": "e", "text": "  \\n "}\n',
        b'[1, 2, 3]\n',
        b'{"id": "f", "text": 42}\n',
        b"\n",
        b'{"text": "no id here"}\n',
    ]
    (tmp_path / "web.jsonl").write_bytes(b"".join(lines))
    src = SourceConfig(name="web", paths=[str(tmp_path / "web.jsonl")], format="jsonl", domain="web")
    docs, quarantined, stats = _read([src], tmp_path)
    assert [d.id for d in docs] == ["web/a", "web/web.jsonl:9"]
    assert docs[0].metadata == {"url": "https://example.org/a", "source": "web", "domain": "web", "language": "en",
                                "origin": "web.jsonl:1", "position": [0, 1]}
    reasons = {q["id"]: q["metadata"]["quarantine_reason"] for q in quarantined}
    assert reasons == {
        "web/web.jsonl:2": "malformed_json",
        "web/web.jsonl:3": "undecodable_utf8",
        "web/web.jsonl:4": "missing_text_field:text",
        "web/web.jsonl:5": "whitespace_only_text",
        "web/web.jsonl:6": "not_a_json_object",
        "web/web.jsonl:7": "text_not_a_string",
    }
    assert all(q["metadata"]["line"] and q["metadata"]["file"].endswith("web.jsonl") for q in quarantined)
    # every record read is either a document or quarantined (the blank line holds no record)
    assert stats[READ_STAT + "web"] == 8 == len(docs) + len(quarantined)
    assert stats[QUARANTINE_STAT + "web"] == 6


def test_truncated_gzip_keeps_what_was_read_and_records_the_rest(tmp_path):
    payload = gzip.compress(b"".join(json.dumps({"id": i, "text": f"document number {i}"}).encode() + b"\n" for i in range(2000)))
    (tmp_path / "cut.jsonl.gz").write_bytes(payload[: len(payload) // 2])
    src = SourceConfig(name="books", paths=[str(tmp_path / "cut.jsonl.gz")], format="jsonl.gz", domain="book")
    docs, quarantined, _ = _read([src], tmp_path)
    assert 0 < len(docs) < 2000
    assert [d.text for d in docs] == [f"document number {i}" for i in range(len(docs))]
    assert [q["metadata"]["quarantine_reason"] for q in quarantined] == ["unreadable_file"]
    assert "EOFError" in quarantined[0]["text"] or "Error" in quarantined[0]["text"]


def test_parquet_and_text_folder_sources(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"content": "alpha text", "doc": "x1"}, {"content": "", "doc": "x2"}]), tmp_path / "p.parquet")
    folder = tmp_path / "code"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "mod.py").write_text("def f():\n    return 1\n")
    (folder / "pkg" / "blob.py").write_bytes(b"\xff\xfe\x00binary")
    sources = [
        SourceConfig(name="pq", paths=[str(tmp_path / "p.parquet")], format="parquet", domain="paper", text_field="content", id_field="doc"),
        SourceConfig(name="code", paths=[str(folder)], format="text", domain="code", language="python", file_glob="*.py"),
    ]
    docs, quarantined, _ = _read(sources, tmp_path)
    assert {d.id: d.text for d in docs} == {"pq/x1": "alpha text", "code/mod.py": "def f():\n    return 1\n"}
    assert sorted(q["metadata"]["quarantine_reason"] for q in quarantined) == ["empty_text", "undecodable_utf8"]


def test_files_are_dealt_to_ranks_without_overlap(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.jsonl").write_text(json.dumps({"id": i, "text": f"t{i}"}) + "\n")
    src = SourceConfig(name="s", paths=[str(tmp_path / "*.jsonl")], format="jsonl", domain="web")
    reader = SourceReader([src], str(tmp_path / "q"))
    shards = [[f for _, _, f, _ in reader.shard_files(r, 2)] for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(str(tmp_path / f"{i}.jsonl") for i in range(5))
    assert not set(shards[0]) & set(shards[1])


def test_nested_and_non_scalar_fields_are_kept(tmp_path):
    """Everything but the text and the id reaches the metadata: a nested ``metadata`` object is merged in
    (its url is what the URL rule reads), lists and objects stay as they are."""
    rec = {"id": "n1", "text": "A page.", "metadata": {"url": "https://example.org/x", "crawl": {"date": "2024-05-01"}},
           "tags": ["news", "science"], "stats": {"words": 2}}
    (tmp_path / "n.jsonl").write_text(json.dumps(rec) + "\n")
    src = SourceConfig(name="web", paths=[str(tmp_path / "n.jsonl")], format="jsonl", domain="web")
    docs, quarantined, _ = _read([src], tmp_path)
    assert not quarantined
    md = docs[0].metadata
    assert md["url"] == "https://example.org/x" and md["crawl"] == {"date": "2024-05-01"}
    assert md["tags"] == ["news", "science"] and md["stats"] == {"words": 2}


def test_position_is_the_input_order_across_files_and_ranks(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jsonl").write_text("".join(json.dumps({"id": f"{i}-{n}", "text": "t"}) + "\n" for n in range(2)))
    src = SourceConfig(name="s", paths=[str(tmp_path)], format="jsonl", domain="web")
    reader = SourceReader([src], str(tmp_path / "q"))
    got = {d.id: d.metadata["position"] for r in range(2) for d in reader.run(None, r, 2)}
    assert got == {f"s/{i}-{n}": [i, n + 1] for i in range(3) for n in range(2)}
