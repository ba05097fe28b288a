"""The MinHash/LSH pass on real text: near-duplicates made by realistic edits are clustered, distinct
documents are not, the kept document follows the configured order, CJK gets character shingles, and the
intermediate files are validated."""

import copy
import glob
import os
import random
import re

import numpy as np
import pytest
from datatrove.data import Document

from dedup.checked_arrays import CorruptIntermediate
from dedup.components import ComponentLabels, StarRound, run_rounds
from dedup.config import DedupConfig
from dedup.fuzzy import (
    BandComponents,
    MinhashSignatures,
    band_key_ranges,
    band_keys_in_range,
    minhash,
    permutations,
    shingle_hashes,
)
from dedup.keepers import ClusterKeepers, ClusterMarker, MemberAttributes
from pipeline.core.documents import REMOVED_REASON
from pipeline.demo import shakespeare_scenes


def edit(text: str, rng: random.Random, frac: float) -> str:
    words = text.split(" ")
    for _ in range(int(len(words) * frac)):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.4:
            del words[i]
        elif op < 0.7:
            words.insert(i, rng.choice(words))
        else:
            j = rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
    return " ".join(words)


def run_ranks(step, tasks: int) -> None:
    for rank in range(tasks):
        list(step.run(None, rank, tasks))


def cluster(folder: str, bands: int, shards: int, partitions: int, keeper, num_perm, similarity) -> None:
    """The stage's clustering steps, each task in this process, in the stage's order."""
    ranges = band_key_ranges(partitions)
    run_ranks(BandComponents(folder, partitions, ranges), bands * ranges)
    last = run_rounds(folder, partitions, lambda r: run_ranks(StarRound(folder, r, partitions, bands * ranges), partitions))
    run_ranks(ComponentLabels(folder, last, partitions), partitions)
    run_ranks(MemberAttributes(folder, partitions), shards)
    run_ranks(ClusterKeepers(folder, shards, partitions, list(keeper), num_perm, similarity), partitions)


def run_fuzzy(shards, folder, bands=14, rows=8, keeper=("quality", "length", "source_priority", "id"), priority=None, quality_key=None,
              n_words=5, n_chars=5, similarity=None, partitions=3):
    folder = str(folder)
    for r, docs in enumerate(shards):
        step = MinhashSignatures(folder, bands, rows, n_words, n_chars, 1, priority or {}, quality_key, flush_docs=7)
        list(step.run(iter(docs), r, len(shards)))
    cluster(folder, bands, len(shards), partitions, keeper, bands * rows, similarity)
    return [list(ClusterMarker(folder, partitions).run(iter(docs), r, len(shards))) for r, docs in enumerate(shards)]


def test_signature_estimates_jaccard():
    a, b = permutations(256, 3)
    rng = random.Random(0)
    text = shakespeare_scenes(3)[2]["text"]
    for frac in (0.02, 0.1, 0.3):
        s1, s2 = shingle_hashes(text, 5, 5), shingle_hashes(edit(text, rng, frac), 5, 5)
        true = len(np.intersect1d(s1, s2)) / len(np.union1d(s1, s2))
        assert abs((minhash(s1, a, b) == minhash(s2, a, b)).mean() - true) < 0.1


def test_near_duplicates_cluster_and_the_keeper_follows_the_order(tmp_path):
    rng = random.Random(1)
    scenes = [s for s in shakespeare_scenes(80) if len(s["text"]) > 2000][:30]
    originals = [Document(id=f"orig/{i}", text=s["text"], metadata={"source": "book", "q": 0.2}) for i, s in enumerate(scenes)]
    # copies of the first 10: light edits (Jaccard well above the 0.72 threshold), a longer one with a
    # boilerplate trailer, and for scene 0 a higher-quality copy from another source
    copies = [Document(id=f"copy/{i}", text=edit(s.text, rng, 0.01), metadata={"source": "web", "q": 0.1}) for i, s in enumerate(originals[:10])]
    trailer = [Document(id=f"trailer/{i}", text=s.text + "\n\nShare this page. Subscribe to our newsletter.", metadata={"source": "web", "q": 0.2})
               for i, s in enumerate(originals[:5])]
    best = Document(id="best/0", text=edit(originals[0].text, rng, 0.005), metadata={"source": "web", "q": 0.9})
    shards = [originals[:15] + copies[5:], originals[15:] + copies[:5] + trailer + [best]]
    out = run_fuzzy(copy.deepcopy(shards), tmp_path, quality_key="q")
    docs = {d.id: d for shard in out for d in shard}
    removed = {i for i, d in docs.items() if d.metadata.get(REMOVED_REASON)}
    # cluster 0 keeps the highest quality; clusters 1-4: quality ties, the longest (the trailer copy) is kept;
    # clusters 5-9: the original (higher quality than the edited copy)
    assert "best/0" not in removed and docs["orig/0"].metadata["duplicate_of"] == "best/0"
    assert {f"trailer/{i}" for i in range(1, 5)}.isdisjoint(removed)
    assert removed == {"orig/0", "trailer/0"} | {f"copy/{i}" for i in range(10)} | {f"orig/{i}" for i in range(1, 5)}
    assert all(d.metadata["minhash_cluster_size"] >= 2 for i, d in docs.items() if i in removed)
    assert all("minhash_cluster_id" not in docs[f"orig/{i}"].metadata for i in range(10, 30))  # distinct scenes untouched
    # the id order instead: the smallest id of each cluster is kept
    out = run_fuzzy(copy.deepcopy(shards), tmp_path / "by_id", keeper=("id",))
    kept = {d.id for shard in out for d in shard if "minhash_cluster_id" in d.metadata and not d.metadata.get(REMOVED_REASON)}
    assert kept == {"best/0"} | {f"copy/{i}" for i in range(1, 10)}


def test_the_default_keeper_keeps_the_original_not_the_copy_with_boilerplate_appended(tmp_path):
    """dedup's default order (quality, source priority, earliest in the input): the copy with a trailer
    is longer, but the original came first and is kept; ranking by length (opt-in) keeps the trailer copy."""
    scenes = [s for s in shakespeare_scenes(80) if len(s["text"]) > 2000][:6]
    originals = [Document(id=f"orig/{i}", text=s["text"], metadata={"source": "book", "position": [0, i]}) for i, s in enumerate(scenes)]
    trailer = [Document(id=f"a-trailer/{i}", text=s.text + "\n\nShare this page. Subscribe to our newsletter.",
                        metadata={"source": "book", "position": [1, i]}) for i, s in enumerate(originals)]
    shards = [trailer[:3] + originals[:3], originals[3:] + trailer[3:]]  # shard order does not decide
    default = DedupConfig().keeper
    assert default == ["quality", "source_priority", "earliest"]
    out = run_fuzzy(copy.deepcopy(shards), tmp_path / "default", keeper=default)
    removed = {d.id for shard in out for d in shard if d.metadata.get(REMOVED_REASON)}
    assert removed == {d.id for d in trailer}
    out = run_fuzzy(copy.deepcopy(shards), tmp_path / "length", keeper=["length"])
    assert {d.id for shard in out for d in shard if d.metadata.get(REMOVED_REASON)} == {d.id for d in originals}


def test_cjk_documents_use_character_shingles(tmp_path):
    base = "今天我们讨论中文文本的去重方法。" * 3 + "近似重复的文档应该被找到，而不同的文档应该保留。" * 3
    other = "机器学习模型需要大量高质量的训练数据，数据清洗是其中最重要的一步。" * 4
    english = shakespeare_scenes(1)[0]["text"]
    # word n-grams of 13 for English, character 3-grams for mostly-CJK text (punctuation is no token)
    chars = [c for c in base if c not in "。，"]
    assert len(shingle_hashes(base, 13, 3)) == len({tuple(chars[i : i + 3]) for i in range(len(chars) - 2)})
    words = re.findall(r"[^\W_]+", english.lower())
    assert len(shingle_hashes(english, 13, 3)) == len({tuple(words[i : i + 13]) for i in range(len(words) - 12)})
    docs = [Document(id="zh/a", text=base, metadata={"source": "s", "position": [0, 0]}),
            Document(id="zh/b", text=base.replace("方法", "办法", 1), metadata={"source": "s", "position": [0, 1]}),
            Document(id="zh/c", text=other, metadata={"source": "s", "position": [0, 2]})]
    out = {d.id: d for d in run_fuzzy([docs], tmp_path, keeper=("earliest",), n_words=13, n_chars=3)[0]}
    assert out["zh/b"].metadata.get(REMOVED_REASON) == "minhash_duplicate" and out["zh/b"].metadata["duplicate_of"] == "zh/a"
    assert "minhash_cluster_id" not in out["zh/c"].metadata


@pytest.mark.parametrize("ranges", [1, 3])
def test_a_truncated_key_file_is_named(tmp_path, ranges):
    docs = [Document(id=f"d/{i}", text=s["text"], metadata={"source": "s"}) for i, s in enumerate(shakespeare_scenes(10))]
    list(MinhashSignatures(str(tmp_path), 2, 4, 5, 5, 1, {}).run(iter(docs), 0, 1))
    path = os.path.join(tmp_path, "keys", "001", "00000_000000000000.bin")
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:-5])
    for part in range(ranges):  # every key range of band 1 reads the file
        with pytest.raises(CorruptIntermediate, match=f"{path}: truncated"):
            list(BandComponents(str(tmp_path), 4, ranges).run(None, ranges + part, 2 * ranges))


def test_a_band_task_holds_one_key_range_of_its_band(tmp_path):
    docs = [Document(id=f"d/{i}", text=s["text"], metadata={"source": "s"}) for i, s in enumerate(shakespeare_scenes(300))]
    list(MinhashSignatures(str(tmp_path), 2, 4, 5, 5, 1, {}, flush_docs=64).run(iter(docs), 0, 1))
    files = sorted(glob.glob(os.path.join(tmp_path, "keys", "000", "*.bin")))
    assert len(files) > 1
    whole = band_keys_in_range(files, 0, 1)
    ranges = [band_keys_in_range(files, p, 4) for p in range(4)]
    # every record in exactly one range (a key at a range boundary is neither lost nor read twice)
    assert np.array_equal(np.sort(np.concatenate(ranges)), np.sort(whole))
    assert all(len(np.intersect1d(ranges[p]["key"], ranges[q]["key"])) == 0 for p in range(4) for q in range(p))
    assert max(len(r) for r in ranges) <= 1.35 * len(whole) / 4


def _jaccard(x: str, y: str) -> float:
    a, b = shingle_hashes(x, 5, 5), shingle_hashes(y, 5, 5)
    return len(np.intersect1d(a, b)) / len(np.union1d(a, b))


def test_verification_splits_a_chain_so_every_removed_document_is_near_its_keeper(tmp_path):
    # A -> B -> C: each copy replaces another part of the text, so B is near A and C is near B, but C is far
    # from A; LSH joins all three transitively, and without verification A's cluster removes C
    text = " ".join(s["text"] for s in shakespeare_scenes(30) if len(s["text"]) > 3000)
    words = text.split(" ")[:1500]
    rng = random.Random(4)
    fresh = [rng.choice(words) + "x" for _ in range(600)]  # words found nowhere else
    a = words
    b = fresh[:300] + a[300:]  # a fifth of A replaced
    c = b[:300] + fresh[300:] + b[600:]  # and another fifth
    texts = {"a": " ".join(a), "b": " ".join(b), "c": " ".join(c)}
    assert _jaccard(texts["a"], texts["b"]) > 0.6 and _jaccard(texts["b"], texts["c"]) > 0.6 > 0.45 > _jaccard(texts["a"], texts["c"])
    docs = [Document(id=k, text=t, metadata={"source": "s", "position": [0, i]}) for i, (k, t) in enumerate(texts.items())]
    # 32 bands x 4 rows catch pairs near J 0.6 almost surely, so the chain is one LSH component
    transitive = {d.id: d.metadata for d in run_fuzzy([copy.deepcopy(docs)], tmp_path / "t", 32, 4, keeper=("earliest",))[0]}
    assert [transitive[k].get(REMOVED_REASON) for k in "abc"] == [None, "minhash_duplicate", "minhash_duplicate"]
    verified = {d.id: d.metadata for d in run_fuzzy([docs], tmp_path / "v", 32, 4, keeper=("earliest",), similarity=0.55)[0]}
    assert verified["b"][REMOVED_REASON] == "minhash_duplicate" and verified["b"]["duplicate_of"] == "a"
    assert abs(verified["b"]["duplicate_similarity"] - _jaccard(texts["a"], texts["b"])) < 0.12
    assert REMOVED_REASON not in verified["c"] and "minhash_cluster_id" not in verified["c"]
    assert verified["a"]["minhash_cluster_size"] == 2


def test_a_truncated_signature_file_is_named(tmp_path):
    docs = [Document(id=f"d/{i}", text=s["text"], metadata={"source": "s"}) for i, s in enumerate(shakespeare_scenes(10))]
    docs.append(Document(id="copy", text=docs[3].text + " and one more line", metadata={"source": "s"}))
    list(MinhashSignatures(str(tmp_path), 2, 4, 5, 5, 1, {}).run(iter(docs), 0, 1))
    path = os.path.join(tmp_path, "sigs", "00000", "000000000000.bin")
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:-5])
    with pytest.raises(CorruptIntermediate, match=f"{path}: truncated"):
        cluster(str(tmp_path), 2, 1, 2, ["earliest"], 8, 0.5)
