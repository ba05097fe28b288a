"""Tokenization throughput of the tokenize stage against raw Hugging Face ``encode_batch`` and datatrove's
``MegatronDocumentTokenizer``, on the same real text in the same process, one core each; then the blend
check on this larger corpus (sampled token shares vs the planned weights).

Corpus: every CPython standard-library module (code), Python docstrings (docs) and Shakespeare (book)
from installed packages, written as our Parquet documents, three sources.

    .venv/bin/python bench/tokenize_throughput.py --mb 8 --repeats 3

One core: ``RAYON_NUM_THREADS=1`` is set before ``tokenizers`` loads, so the HF tokenizer cannot use a
thread pool in any of the three; each figure is the best of ``--repeats`` runs, taken in rotation. Every
contender loads its tokenizer from the file inside its timed run (the stage's tokenizer cache is cleared
first), and each run reports wall time and CPU time (this process and its children).
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers is imported anywhere
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import collections  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from pipeline.core.assets import QWEN3_TOKENIZER, resolve_asset  # noqa: E402

EOS = "<|endoftext|>"


def build_corpus(folder: str, megabytes: float) -> dict[str, int]:
    """Three real sources, ~``megabytes`` MB in all: stdlib code 60%, docstrings 15%, Shakespeare 25%."""
    import sysconfig

    from pipeline.core.documents import DocWriter
    from pipeline.demo import shakespeare_scenes, stdlib_docstrings

    budget = {"code": 0.6, "docs": 0.15, "book": 0.25}
    docs: dict[str, list[tuple[str, str]]] = {k: [] for k in budget}
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        if "site-packages" not in path:
            with open(path, encoding="utf-8", errors="replace") as f:
                docs["code"].append((f"code/{os.path.relpath(path, stdlib)}", f.read()))
    docs["docs"] = [(d["id"], d["text"]) for d in stdlib_docstrings(None)]
    docs["book"] = [(d["id"], d["text"]) for d in shakespeare_scenes(None)]
    sizes = {}
    with DocWriter(folder) as writer:
        from datatrove.data import Document

        for src, share in budget.items():
            limit, used, n = share * megabytes * 1e6, 0, 0
            for i, (doc_id, text) in enumerate(docs[src] * 20):  # small sources repeat as new documents
                if used >= limit:
                    break
                writer.write(Document(text=text, id=f"{doc_id}#{i}", metadata={"source": src, "domain": src}), 0)
                used += len(text.encode())
                n += 1
            sizes[src] = n
    return sizes


def texts_of(folder: str) -> list[str]:
    import pyarrow.parquet as pq

    return [t for p in sorted(glob.glob(os.path.join(folder, "*.parquet"))) for t in pq.read_table(p, columns=["text"])["text"].to_pylist()]


def run_hf(texts: list[str], batch: int) -> int:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(resolve_asset(QWEN3_TOKENIZER))
    n = 0
    for i in range(0, len(texts), batch):
        n += sum(len(e.ids) for e in tok.encode_batch_fast(texts[i : i + batch], add_special_tokens=False))
    return n


def _drive(steps) -> None:
    """Run datatrove steps in this process, rank 0 of 1 (what a local executor task does)."""
    pipe = None
    for step in steps:
        pipe = step(pipe, 0, 1)
    for _ in pipe or ():
        pass


def cpu_seconds() -> float:
    return time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime


def run_ours(corpus: str, out: str, batch: int) -> None:
    from mixtures.buckets import QualityBucketer
    from mixtures.heldout import HeldoutTagger
    from mixtures.megatron_writer import MegatronPartWriter, merge_parts, token_dtype
    from mixtures.upsample import PhysicalUpsampler
    from pipeline.core.documents import stage_reader
    from pipeline.core.tokens import load_tokenizer

    load_tokenizer.cache_clear()  # cold, like the other contenders: the tokenizer file is read in the timed run
    parts = os.path.join(out, "parts")
    path = resolve_asset(QWEN3_TOKENIZER)
    steps = [stage_reader(corpus), HeldoutTagger(0.0), QualityBucketer({}), PhysicalUpsampler({}),
             MegatronPartWriter(path, parts, EOS, batch)]
    _drive(steps)
    for src in os.listdir(parts):
        merge_parts(parts, src, os.path.join(out, f"{src}_text_document"), token_dtype(path))


def run_datatrove(corpus: str, out: str) -> None:
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer

    from pipeline.core.documents import stage_reader

    _drive([stage_reader(corpus), MegatronDocumentTokenizer(out, tokenizer_name_or_path=resolve_asset(QWEN3_TOKENIZER), eos_token=EOS)])


def blend_check(prefix_dir: str, weights: dict[str, float], samples: int, seq: int) -> dict:
    """Sample ``samples`` sequences from megatron-core's BlendedMegatronDatasetBuilder with ``weights`` over
    the three prefixes: the sampled token share of each prefix against its weight."""
    from train_entry.data import DatasetTokenizer, build_datasets

    path = os.path.join(prefix_dir, "blend.data_args.txt")
    with open(path, "w") as f:
        f.write(" ".join(f"{w} {os.path.join(prefix_dir, f'{s}_text_document')}" for s, w in weights.items()))
    train, _ = build_datasets(path, None, seq, samples, 0, DatasetTokenizer(151936, 151643, "qwen3"), 1234, None)
    counts = collections.Counter(int(train.dataset_index[i]) for i in range(samples))
    shares = {s: counts[i] / samples for i, s in enumerate(weights)}
    return {"samples": samples, "seq_length": seq, "planned": weights, "sampled": shares,
            "max_abs_error": max(abs(shares[s] - w) for s, w in weights.items())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=8.0, help="corpus size in MB of UTF-8 text")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tok_bench_")
    try:
        corpus = os.path.join(work, "corpus")
        sizes = build_corpus(corpus, args.mb)
        texts = texts_of(corpus)
        n_bytes = sum(len(t.encode()) for t in texts)
        best = {"hf_encode_batch": float("inf"), "ours": float("inf"), "datatrove_megatron": float("inf")}
        cpu = dict.fromkeys(best, float("inf"))
        tokens = 0
        for r in range(args.repeats):
            for name in best:  # rotation: every contender sees the same machine state in turn
                out = os.path.join(work, f"{name}_{r}")
                c0, t0 = cpu_seconds(), time.perf_counter()
                if name == "hf_encode_batch":
                    tokens = run_hf(texts, args.batch)
                elif name == "ours":
                    run_ours(corpus, out, args.batch)
                else:
                    run_datatrove(corpus, out)
                best[name] = min(best[name], time.perf_counter() - t0)
                cpu[name] = min(cpu[name], cpu_seconds() - c0)
        result = {
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
            "documents": sizes,
            "bytes": n_bytes,
            "tokens": tokens,
            "seconds_best": {k: round(v, 3) for k, v in best.items()},
            "cpu_seconds_best": {k: round(v, 3) for k, v in cpu.items()},
            "tokens_per_s": {k: round(tokens / v) for k, v in best.items()},
            "ours_vs_hf": round(best["hf_encode_batch"] / best["ours"], 3),
            "ours_vs_datatrove": round(best["datatrove_megatron"] / best["ours"], 3),
        }
        ours_dir = os.path.join(work, f"ours_{args.repeats - 1}")
        result["blend"] = blend_check(ours_dir, {"code": 0.5, "book": 0.3, "docs": 0.2}, 100_000, 512)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
