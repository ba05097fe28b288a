"""The Chinese tokenizer's memory over many pages: spaCy keeps every distinct jieba word in its vocabulary,
so a filter worker grew with the Chinese text it had seen; ``filters/spacy_tokens.py`` renews the tokenizer
past ``MAX_VOCAB_STRINGS``. Each setting runs in a fresh process over the same pages of the scale corpus's
``web_zh`` source (``bench/scale_corpus.py``), tokenized as the filter's fused pass does (``Tokens``).

    .venv/bin/python bench/zh_vocab_memory.py --pages 20000
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import glob, json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import pyarrow.parquet as pq
from filters import spacy_tokens
from filters.spacy_tokens import Tokens
bound, pages, files = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
spacy_tokens.MAX_VOCAB_STRINGS = bound
texts = []
for f in files:
    texts += pq.read_table(f, columns=["text"])["text"].to_pylist()
    if len(texts) >= pages:
        break
texts = texts[:pages]
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
Tokens("预热", "zh")
start, t = rss(), time.process_time()
marks = []
for i, text in enumerate(texts, 1):
    Tokens(text, "zh")
    if i % (len(texts) // 4) == 0:
        marks.append(round(rss() - start, 1))
print(json.dumps({"pages": len(texts), "mb": sum(len(x.encode()) for x in texts) / 1e6, "growth_mib": marks,
                  "strings": len(spacy_tokens.spacy_tokenizer("zh").vocab.strings), "cpu_s": time.process_time() - t}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=20000)
    ap.add_argument("--corpus", default=os.path.join(ROOT, ".data", "scale", "1000MB"))
    ap.add_argument("--bounds", type=int, nargs="*", default=[], help="other vocabulary bounds to compare (strings)")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.corpus, "web_zh", "*.parquet")))
    if not files:
        sys.exit(f"no web_zh parquet files under {args.corpus}: build the corpus with bench/scale_corpus.py")
    print(f"{'vocabulary bound':>18s} {'pages':>6s} {'MB':>6s} {'RSS growth at 1/4, 1/2, 3/4, all (MiB)':>40s} {'strings':>8s} {'CPU s':>6s}")
    for bound, label in ((10**12, "none"), (None, "shipped"), *((b, str(b)) for b in args.bounds)):
        from filters.spacy_tokens import MAX_VOCAB_STRINGS

        out = subprocess.run([sys.executable, "-c", CHILD, ROOT, str(bound or MAX_VOCAB_STRINGS), str(args.pages), *files],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label:>18s} {r['pages']:6d} {r['mb']:6.1f} {str(r['growth_mib']):>40s} {r['strings']:8d} {r['cpu_s']:6.1f}", flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
