"""A corpus of any size laid out like the sources of ``pipeline/recipes/ruyi2-800b.yaml``, built from the real
text the tests use, for measuring the data flow at scale (``bench/scale_run.py``).

How it is built (the same seed gives the same bytes):
- Each source gets the share of the bytes that the 800B recipe's inventory gives it (web_en 59%, web_zh 22%,
  code 11%, ...: ``SHARES``), split into files of at most ``FILE_MB``.
- code: real source files, each used once (Go and Rust from Debian's golang-src and rust-src, C headers
  from linux-libc-dev, CPython's standard library and the installed site-packages), in a seeded order.
- Prose sources: the real text of each (web_en: SpamAssassin e-mail bodies of the sets the classifier is not
  trained on, package READMEs, English quotations, pydoc topics; web_zh and wiki_zh: manpages-zh pages
  not used to train the Chinese classifier; math_web and arxiv: the PARI/GP manual's TeX sections; books:
  Shakespeare scenes; wiki_en: Wikipedia passages from BoolQ; synth_reasoning: sympy-checked worked
  problems, one per document) is cut into paragraphs, and a document is 3-12 paragraphs drawn at random
  from its source's pool (web_en: nine in ten documents from the paragraphs that read as prose). Real text runs out long before 1 GB (about 60 MB of distinct prose is on this machine), so
  documents are recombinations: every paragraph is real, two documents rarely share more than one.
- Dedup load, in the web sources: 8% of documents are near-duplicates of an earlier one (2% of words
  deleted, duplicated or swapped, plus a mirror's trailer), 3% are exact copies once whitespace is
  normalised; 20% of web_zh documents have some lines' characters shuffled (text a classifier should
  reject).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import sys
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FILE_MB = 16
# bytes per source, from the unique tokens the 800B recipe's inventory gives each (tests/test_recipe_800b.py)
INVENTORY = {"web_en": 1600, "web_zh": 600, "code": 300, "math_web": 60, "arxiv": 40, "books": 50, "wiki_en": 20,
             "wiki_zh": 10, "synth_reasoning": 25}
SHARES = {k: v / sum(INVENTORY.values()) for k, v in INVENTORY.items()}
FORMATS = {"web_en": "parquet", "web_zh": "parquet", "code": "parquet", "math_web": "jsonl.gz", "arxiv": "jsonl.gz",
           "books": "jsonl.gz", "wiki_en": "parquet", "wiki_zh": "parquet", "synth_reasoning": "jsonl.gz"}
NEAR_DUPLICATES, EXACT_COPIES = 0.08, 0.03


def _paragraphs(texts: list[str], min_chars: int = 60) -> list[str]:
    out = []
    for t in texts:
        out += [p.strip() for p in re.split(r"\n\s*\n", t) if len(p.strip()) >= min_chars]
    return sorted(set(out))


def prose_pools() -> tuple[dict[str, list[str]], list[dict]]:
    """source -> real paragraphs; and the Chinese pages kept apart to train the Chinese classifier (the same
    split as the recipe corpus of the tests)."""
    import pydoc_data.topics

    from pipeline.demo import package_descriptions, shakespeare_scenes
    from tests.corpora import chinese_manpages, english_quotations, tex_sections
    from tests.recipe_corpus import _mails, wikipedia_passages

    pages = chinese_manpages()
    train_zh, web_zh, wiki_zh = pages[0::3], pages[1::3], pages[2::3]
    mails = [d["text"] for g in ("easy-ham-2", "hard-ham-1", "spam-2") for d in _mails(g, 10_000)]
    web_en = mails + [d["text"] for d in package_descriptions() + english_quotations()] + list(pydoc_data.topics.topics.values())
    tex = [d["text"] for d in tex_sections()]
    pools = {
        "web_en": _paragraphs(web_en), "web_zh": _paragraphs([d["text"] for d in web_zh], 30),
        "math_web": _paragraphs(tex[1::2]), "arxiv": _paragraphs(tex[0::2]),
        "books": _paragraphs([d["text"] for d in shakespeare_scenes(None)]),
        "wiki_en": _paragraphs([d["text"] for d in wikipedia_passages(10_000)]),
        "wiki_zh": _paragraphs([d["text"] for d in wiki_zh], 30),
    }
    # e-mail bodies are full of quoted lines, signatures and numbers: most documents are drawn from the
    # paragraphs that read as prose (nine in ten words with a letter), a tenth from all of them
    pools["web_en_prose"] = [p for p in pools["web_en"] if _wordy(p)]
    return pools, train_zh


def _wordy(paragraph: str) -> bool:
    words = paragraph.split()
    return not paragraph.startswith(">") and sum(any(c.isalpha() for c in w) for w in words) >= 0.9 * len(words)


def code_pool(rng: random.Random) -> list[str]:
    import glob
    import sysconfig

    from tests.corpora import code_files

    files = [f for lang in ("go", "rust", "c", "python") for f in code_files(lang)]
    site = sysconfig.get_paths()["purelib"]
    files += sorted(f for f in glob.glob(os.path.join(site, "**", "*.py"), recursive=True) if os.path.isfile(f))
    files = sorted(set(files))
    rng.shuffle(files)
    return files


def _near_duplicate(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(max(1, len(words) // 50)):
        i, op = rng.randrange(len(words)), rng.random()
        if op < 0.4:
            del words[i]
        elif op < 0.7:
            words.insert(i, words[i])
        else:
            j = rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
    return " ".join(words) + "\n\nMirrored from the original page; all rights remain with the author."


def _garble(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    for i in rng.sample(range(len(lines)), max(1, len(lines) // 3)):
        chars = list(lines[i])
        rng.shuffle(chars)
        lines[i] = "".join(chars)
    return "\n".join(lines)


def synthetic_documents() -> Iterator[dict]:
    """One worked problem per document (they repeat their phrasing, so several in one document would be a
    repetitive page), generated in seeded batches as far as needed."""
    from tests.recipe_corpus import synthetic_problems

    for batch in range(10**9):
        for i, d in enumerate(synthetic_problems(1000, seed=batch)):
            yield {"id": f"synth_reasoning/{batch}/{i}", "text": d["text"]}


def prose_documents(name: str, pools: dict[str, list[str]], rng: random.Random) -> Iterator[dict]:
    web = name.startswith("web_")
    pool = pools[name]
    recent: list[str] = []
    for i in range(10**12):
        u = rng.random()
        if web and recent and u < NEAR_DUPLICATES:
            text = _near_duplicate(rng.choice(recent), rng)
        elif web and recent and u < NEAR_DUPLICATES + EXACT_COPIES:
            text = rng.choice(recent).replace(" ", "  ", 3)
        else:
            draw = pools["web_en_prose"] if name == "web_en" and rng.random() < 0.9 else pool
            text = "\n\n".join(rng.choice(draw) for _ in range(rng.randint(3, 12)))
            if name == "web_zh" and rng.random() < 0.2:
                text = _garble(text, rng)
            recent = (recent + [text])[-1000:]  # copies of recent documents, as mirrors of fresh pages
        row = {"id": f"{name}/{i}", "text": text}
        if name == "web_en":
            row["url"] = f"https://example-{i % 997}.org/{hashlib.md5(text[:64].encode()).hexdigest()[:12]}"
        yield row


def code_documents(files: list[str]) -> Iterator[dict]:
    for i, path in enumerate(files):
        with open(path, encoding="utf-8", errors="replace") as f:
            yield {"id": f"code/{i}", "path": path, "text": f.read()}
    raise RuntimeError(f"the code pool ({len(files)} files) ran out: ask for fewer megabytes")


def _write(path: str, fmt: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd")
    else:
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def build_scaled_corpus(folder: str, mb: float, seed: int = 0) -> dict:
    """Write every source under ``folder`` (about ``mb`` MB of UTF-8 text in all); returns {"paths": source ->
    folder, "bytes": source -> text bytes, "documents": source -> count, "train_zh": pages for the classifier}.
    A finished build is reused (``manifest.json``)."""
    manifest = os.path.join(folder, "manifest.json")
    pools, train_zh = prose_pools()
    if os.path.exists(manifest):
        with open(manifest) as f:
            return json.load(f) | {"train_zh": train_zh}
    rng = random.Random(seed)
    files = code_pool(random.Random(seed))
    out = {"paths": {}, "bytes": {}, "documents": {}}
    for name, share in SHARES.items():
        target = share * mb * 1e6
        seeded = random.Random(rng.random())
        docs = (code_documents(files) if name == "code" else synthetic_documents() if name == "synth_reasoning"
                else prose_documents(name, pools, seeded))
        written, count, part, rows, size = 0, 0, 0, [], 0
        ext = "parquet" if FORMATS[name] == "parquet" else "jsonl.gz"
        for row in docs:
            n = len(row["text"].encode("utf-8"))
            rows.append(row)
            size, written, count = size + n, written + n, count + 1
            if size >= FILE_MB * 1e6 or written >= target:
                _write(os.path.join(folder, name, f"part-{part:04d}.{ext}"), FORMATS[name], rows)
                part, rows, size = part + 1, [], 0
            if written >= target:
                break
        out["paths"][name], out["bytes"][name], out["documents"][name] = os.path.join(folder, name), written, count
    with open(manifest, "w") as f:
        json.dump(out, f, indent=1)
    return out | {"train_zh": train_zh}


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--mb", type=float, default=100)
    a = ap.parse_args()
    info = build_scaled_corpus(a.folder, a.mb)
    print(json.dumps({k: info[k] for k in ("bytes", "documents")}, indent=1))
