"""MinHash signatures per core: ours (compiled, ``dedup/minhash_kernel.py``), ours as defined in numpy
(``dedup/fuzzy.py``), rensa (Rust), datasketch and datatrove's signature step, on the same real texts.

    .venv/bin/python bench/minhash_signatures.py --repeat 3

Every contender turns the same list of strings (held in memory: no I/O for anyone) into a signature of
``bands x rows`` permutations, in this one process, one thread, after one untimed pass over the first 100
texts (the same warm start: numba's compiled code loaded, datatrove's tokenizer built). Shingles: ours and
the libraries get the same ones, word 5-grams of the same units (a CJK character, or a run of other letters
and digits) or character 3-grams when most units are CJK; rensa and datasketch take shingle strings, which a
user has to build (``incl. shingling``), and are also timed on prebuilt strings (``update only``). datatrove
shingles with its own word tokenizer (``language`` en or zh). The best of ``--repeat`` runs is reported (CPU
seconds of this process: the contenders are single-threaded; wall is the same within 1%).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def texts_for(corpus: str, limit: int) -> list[str]:
    from tests.corpora import chinese_manpages, shakespeare_speeches, spam_assassin

    if corpus == "english":  # real mail bodies and verse: prose, HTML, long tokens
        out = [d["text"] for d in spam_assassin(kinds=("easy-ham", "spam"))] + [d["text"] for d in shakespeare_speeches()]
    else:
        out = [d["text"] for d in chinese_manpages()]
    return [t for t in out if t.strip()][:limit]


def shingle_strings(text: str, n_words: int, n_chars: int) -> list[str]:
    """The shingles our definition hashes, as strings (for the libraries that hash strings themselves)."""
    from dedup.fuzzy import _CJK_CHAR
    from pipeline.core.text import TOKEN

    toks = TOKEN.findall(text.lower())
    cjk = sum(1 for t in toks if len(t) == 1 and _CJK_CHAR.match(t))
    n = min(n_chars if 2 * cjk > len(toks) else n_words, len(toks))
    return list({" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)})


def contenders(texts: list[str], num_perm: int, corpus: str) -> dict:
    from datasketch import MinHash
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from rensa import RMinHash

    from dedup.fuzzy import minhash, permutations, shingle_hashes
    from dedup.minhash_kernel import signature

    a, b = permutations(num_perm, 1)
    prebuilt = [shingle_strings(t, 5, 3) for t in texts]
    prebuilt_bytes = [[s.encode() for s in sh] for sh in prebuilt]
    dt = MinhashDedupSignature("/tmp/unused_minhash_bench", MinhashConfig(n_grams=5, num_buckets=num_perm // 5, hashes_per_bucket=5),
                               language="zh" if corpus == "chinese" else "en")

    def rensa_sig(shingles: list[str]):
        m = RMinHash(num_perm=num_perm, seed=1)
        m.update(shingles)
        return m.digest()

    def datasketch_sig(shingles: list[bytes]):
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch(shingles)
        return m.hashvalues

    return {
        "ours, compiled (minhash_kernel)": lambda i: signature(texts[i], 5, 3, a, b),
        "ours, numpy definition": lambda i: minhash(shingle_hashes(texts[i], 5, 3), a, b),
        "rensa 0.5.0, incl. shingling": lambda i: rensa_sig(shingle_strings(texts[i], 5, 3)),
        "rensa 0.5.0, update only": lambda i: rensa_sig(prebuilt[i]),
        "datasketch, incl. shingling": lambda i: datasketch_sig([s.encode() for s in shingle_strings(texts[i], 5, 3)]),
        "datasketch, update only": lambda i: datasketch_sig(prebuilt_bytes[i]),
        "datatrove MinhashDedupSignature": lambda i: dt.get_signature(dt.get_shingles(texts[i])),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", nargs="+", choices=["english", "chinese"], default=["english", "chinese"])
    ap.add_argument("--limit", type=int, default=4000)
    ap.add_argument("--num-perm", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from dedup.fuzzy import minhash, permutations, shingle_hashes
    from dedup.minhash_kernel import signature

    for corpus in args.corpus:
        texts = texts_for(corpus, args.limit)
        mb = sum(len(t.encode()) for t in texts) / 1e6
        a, b = permutations(args.num_perm, 1)
        same = all(np.array_equal(signature(t, 5, 3, a, b), minhash(shingle_hashes(t, 5, 3), a, b)) for t in texts)
        print(f"{corpus}: {len(texts)} texts, {mb:.1f} MB; compiled signatures equal the numpy definition: {same}")
        print(f"{'contender':34s} {'CPU s':>7s} {'wall s':>7s} {'MB/s per core':>13s} {'vs ours compiled':>16s}")
        rows = {}
        for name, fn in contenders(texts, args.num_perm, corpus).items():
            for i in range(min(100, len(texts))):  # the same warm start for everyone
                fn(i)
            best = None
            for _ in range(args.repeat):
                c0, t0 = time.process_time(), time.perf_counter()
                for i in range(len(texts)):
                    fn(i)
                run = (time.process_time() - c0, time.perf_counter() - t0)
                best = run if best is None or run[0] < best[0] else best
            rows[name] = best
            ours = rows["ours, compiled (minhash_kernel)"][0]
            print(f"{name:34s} {best[0]:7.2f} {best[1]:7.2f} {mb / best[0]:13.2f} {best[0] / ours:15.2f}x", flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
