"""Exact dedup on normalised content: parallel over shards and hash ranges, keeper chosen by source
priority then input order, intermediates validated where they are read."""

import os

import pytest
from datatrove.data import Document

from dedup.checked_arrays import CorruptIntermediate, read_checked, write_checked
from dedup.exact import SIGNATURE, ExactDuplicateFinder, ExactDuplicateMarker, ExactSignatures, normalized_content
from pipeline.core.documents import REMOVED_REASON
from pipeline.demo import shakespeare_scenes


def _run(shards, tmp_path, buckets=3, priority=None):
    sigs, rms = str(tmp_path / "sigs"), str(tmp_path / "rms")
    for rank, docs in enumerate(shards):
        list(ExactSignatures(sigs, buckets, priority or {}).run(iter(docs), rank, len(shards)))
    for b in range(buckets):
        list(ExactDuplicateFinder(sigs, rms).run(None, b, buckets))
    return [list(ExactDuplicateMarker(rms).run(iter(docs), rank, len(shards))) for rank, docs in enumerate(shards)]


def test_duplicates_across_shards_and_sources_keep_the_priority_copy(tmp_path):
    scenes = shakespeare_scenes(40)
    web = [Document(id=f"web/{i}", text=s["text"], metadata={"source": "web"}) for i, s in enumerate(scenes[:20])]
    # the book copy of scenes 5..9 differs only in case and whitespace; scene 3 repeats inside web
    book = [Document(id=f"book/{i}", text="  " + s["text"].upper().replace("\n", "\n\n"), metadata={"source": "book"})
            for i, s in enumerate(scenes[5:10])]
    web.append(Document(id="web/again-3", text=scenes[3]["text"], metadata={"source": "web"}))
    cjk = Document(id="zh/0", text="中文 文档😀 测试", metadata={"source": "web"})
    cjk2 = Document(id="zh/1", text="中文　文档😀\n测试", metadata={"source": "book"})  # ideographic space
    out = _run([web[:12] + [cjk], web[12:], book + [cjk2]], tmp_path, priority={"book": 0, "web": 1})
    removed = {d.id: d.metadata["exact_duplicate_of"] for shard in out for d in shard if d.metadata.get(REMOVED_REASON)}
    # book has priority: its copies of scenes 5..9 stay, the web ones go; web/again-3 goes for web/3
    assert set(removed) == {f"web/{i}" for i in range(5, 10)} | {"web/again-3", "zh/0"}
    assert removed["web/again-3"] == "shard 0 doc 3" and removed["web/5"] == "shard 2 doc 0"
    assert sum(len(s) for s in out) == 12 + 1 + 9 + 5 + 1  # every document comes out, marked or not


def test_keeper_does_not_depend_on_the_number_of_buckets(tmp_path):
    scenes = shakespeare_scenes(30)
    docs = [Document(id=f"d/{i}", text=scenes[i % 17]["text"], metadata={"source": "s"}) for i in range(30)]
    runs = []
    for buckets in (1, 4):
        out = _run([docs[:15], docs[15:]], tmp_path / str(buckets), buckets)
        runs.append(sorted(d.id for shard in out for d in shard if d.metadata.get(REMOVED_REASON)))
    assert runs[0] == runs[1] == [f"d/{i}" for i in range(17, 30)]


def test_normalisation():
    assert normalized_content("  Hello\tWORLD \n") == normalized_content("hello world") == "hello world"
    assert normalized_content("ＡＢＣ") == "abc"


def test_truncated_or_corrupt_intermediates_name_the_file(tmp_path):
    import numpy as np

    arr = np.zeros(10, dtype=SIGNATURE)
    arr["hi"] = np.arange(10)
    path = str(tmp_path / "0000" / "00000.sig")
    write_checked(path, arr)
    assert (read_checked(path, SIGNATURE) == arr).all()
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:-7])
    with pytest.raises(CorruptIntermediate, match=rf"{path}: truncated"):
        read_checked(path, SIGNATURE)
    open(path, "wb").write(raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(CorruptIntermediate, match="checksum mismatch"):
        read_checked(path, SIGNATURE)
    open(path, "wb").write(b"garbage")
    with pytest.raises(CorruptIntermediate, match="bad magic"):
        list(ExactDuplicateFinder(str(tmp_path), str(tmp_path / "rm")).run(None, 0, 1))
    assert not os.path.exists(path + ".tmp")
