"""Substring dedup across shards: winnowed window fingerprints find a span repeated in another shard, which
the shard's own suffix array cannot see; the first occurrence (earlier shard) stays."""

import os
import random
import shutil
import sysconfig

import numpy as np
import pytest
from datatrove.data import Document

from dedup.components import mix
from dedup.substring_fingerprints import (
    SubstringFingerprints,
    SubstringRepeats,
    fingerprint_files,
    fingerprint_partitions,
    window_hashes,
    winnowed,
)
from dedup.substrings import SubstringDeduplicator, shard_repeats
from pipeline.core.assets import QWEN3_TOKENIZER


def _stdlib(name: str) -> str:
    return open(os.path.join(sysconfig.get_paths()["stdlib"], name), encoding="utf-8").read()


def test_window_hashes_equal_the_polynomial_hash_of_each_window():
    units = np.frombuffer(_stdlib("textwrap.py")[:600].encode(), dtype=np.uint8)
    m = np.uint64(0x9E3779B97F4A7C15)
    v = mix(units.astype(np.uint64) + np.uint64(1))
    for length in (1, 5, 64, 100, 127):
        want = []
        with np.errstate(over="ignore"):
            for p in range(len(units) - length + 1):
                h = np.uint64(0)
                for x in v[p : p + length]:
                    h = h * m + x
                want.append(h)
        assert np.array_equal(window_hashes(units, length), np.array(want, np.uint64)), length
    assert len(window_hashes(units[:10], 11)) == 0


def test_texts_sharing_a_long_enough_span_share_a_fingerprint():
    rng = random.Random(0)
    text = _stdlib("shlex.py")
    length, winnow = 50, 16
    for _ in range(30):
        span = rng.randrange(length + winnow - 1, 400)
        start = rng.randrange(0, len(text) - span)
        shared = text[start : start + span]
        a = ("x" * rng.randrange(0, 300) + shared + "y" * 50).encode()
        b = ("z" * rng.randrange(0, 300) + shared).encode()
        fa, fb = (window_hashes(np.frombuffer(t, np.uint8), length) for t in (a, b))
        assert set(fa[winnowed(fa, winnow)].tolist()) & set(fb[winnowed(fb, winnow)].tolist())


def _shards(block: str) -> list[list[Document]]:
    a, b, c = _stdlib("textwrap.py"), _stdlib("shlex.py"), _stdlib("calendar.py")
    return [
        [Document(id="first", text=a, metadata={"domain": "code"})],
        [Document(id="other", text=c[:5000], metadata={"domain": "code"}),
         Document(id="later", text=b[:3000] + "\n\n" + block + "\n\n" + b[3000:6000], metadata={"domain": "code"}),
         Document(id="book", text=b[:3000] + "\n\n" + block, metadata={"domain": "book"})],  # a domain not selected
    ]


@pytest.mark.parametrize("unit", ["bytes", "tokens"])
def test_a_function_pasted_into_a_file_of_another_shard_is_cut_there(tmp_path, unit):
    a = _stdlib("textwrap.py")
    start = a.index("def dedent(")
    block = a[start : a.index("\ndef ", start + 10)]  # one real function, ~1.5 KB, first in shard 0
    length, winnow, parts = (100, 16, 3) if unit == "bytes" else (30, 8, 3)
    folder = str(tmp_path)
    for rank, docs in enumerate(_shards(block)):
        list(SubstringFingerprints(folder, ["code"], length, unit, winnow, QWEN3_TOKENIZER).run(iter(docs), rank, 2))
    for p in range(parts):
        list(SubstringRepeats(folder, parts).run(None, p, parts))

    def dedup(repeats_folder):
        out = []
        for rank, docs in enumerate(_shards(block)):
            step = SubstringDeduplicator(["code"], length, unit, tokenizer_path=QWEN3_TOKENIZER, repeats_folder=repeats_folder)
            out += list(step.run(iter(docs), rank, 2))
        return {d.id: d.text for d in out}

    within_only, across = dedup(None), dedup(folder)
    assert block in within_only["later"]  # one suffix array per shard: the earlier shard's copy is not seen
    assert block in across["first"]
    later = across["later"]
    assert block[300:-300] not in later and _stdlib("shlex.py")[:2500] in later and _stdlib("shlex.py")[3200:6000] in later
    removed = len(within_only["later"]) - len(later)
    assert len(block) - 2 * 200 <= removed <= len(block) + 10  # up to winnow - 1 units may stay at either end
    assert across["book"] == within_only["book"] and across["other"] == within_only["other"]


def test_grouping_in_hash_ranges_finds_the_same_repeats_as_one_task(tmp_path):
    """The fingerprints are written once per shard; grouping them in 1 or in 5 ranges of hash values gives every
    shard the same repeats, each range task holds only its share, and the task count follows the fingerprints."""
    rng = random.Random(3)
    names = ["textwrap.py", "shlex.py", "calendar.py", "argparse.py", "pathlib.py", "inspect.py"]
    texts = [_stdlib(n) for n in names]
    shards = []
    for s in range(4):  # each shard: two real files, with blocks pasted from the others
        docs = []
        for d in range(2):
            own = texts[(2 * s + d) % len(texts)]
            other = texts[rng.randrange(len(texts))]
            a = rng.randrange(0, len(other) - 2000)
            docs.append(Document(id=f"{s}-{d}", text=own[:20000] + "\n" + other[a : a + 1500], metadata={"domain": "code"}))
        shards.append(docs)
    base = tmp_path / "base"
    for rank, docs in enumerate(shards):
        list(SubstringFingerprints(str(base), ["code"], 100, "bytes", 16).run(iter(docs), rank, len(shards)))
    assert len(fingerprint_files(str(base))) == len(shards)  # one file per shard, whatever the grouping
    total, groups = fingerprint_partitions(str(base), 1000)
    assert groups == -(-total // 1000) and groups > 5

    found = {}
    for ranges in (1, 5):
        folder = tmp_path / f"r{ranges}"
        shutil.copytree(base, folder)
        held = []
        for r in range(ranges):
            step = SubstringRepeats(str(folder), ranges)
            list(step.run(None, r, ranges))
            held.append(step.stats["fingerprints"].total)
        assert sum(held) == total
        if ranges > 1:
            assert max(held) < 0.4 * total  # a range task holds its share, not every fingerprint
        found[ranges] = [shard_repeats(str(folder), s) for s in range(len(shards))]
    one, five = found[1], found[5]
    assert any(one)  # the pasted blocks are found
    for a, b in zip(one, five):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
