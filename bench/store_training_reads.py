"""Training reads from object storage (``train.data_from: published``) against the same prefix on local disk:
megatron-core's GPTDataset over one token prefix, the same samples of the shuffled order (seq 8,192), read in one
process. Contenders: the local prefix (memory-mapped), the published prefix read by this project's chunk
(``STORE_READ_BYTES``, 256 KiB), 4 MiB chunks, and megatron-core's default chunk (256 MiB). The prefix must be
several times the largest chunk, or that chunk holds all of it after one GET. Reported: samples/s, CPU seconds,
GET requests and bytes fetched per sample, and the index download.

    .venv/bin/python bench/store_training_reads.py --tokens 400000000 --samples 300 --default-chunk-samples 5

The prefix: documents of lognormal lengths (median ~700 tokens, like web text), random int32 tokens (the dtype the tokenize stage writes for Qwen3's vocabulary), written by
megatron-core's IndexedDatasetBuilder. The store: SeaweedFS's ``weed mini`` on 127.0.0.1 (tests/s3_server.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_prefix(prefix: str, tokens: int, seed: int = 0) -> int:
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder, get_bin_path, get_idx_path

    rng = np.random.default_rng(seed)
    builder = IndexedDatasetBuilder(get_bin_path(prefix), dtype=np.int32)
    written = docs = 0
    while written < tokens:
        n = int(min(max(rng.lognormal(np.log(700), 1.0), 16), 32768))
        builder.add_document(torch.from_numpy(rng.integers(0, 151_000, n, dtype=np.int32)), [n])
        written += n
        docs += 1
    builder.finalize(get_idx_path(prefix))
    return docs


class Counter:
    """GETs and bytes fetched by megatron-core's S3 reader (each cache refresh is one ranged GET)."""

    def __init__(self):
        from megatron.core.datasets import indexed_dataset

        self.gets = self.bytes = 0
        reader = indexed_dataset._S3BinReader
        original = reader.read
        counter = self

        def read(this, dtype, count, offset):
            before = this._cache
            out = original(this, dtype, count, offset)
            if this._cache is not before:
                counter.gets += 1
                counter.bytes += len(this._cache)
            return out

        reader.read = read


def read_samples(prefix: str, samples: int, seq: int, cache: str, chunk: int | None) -> dict:
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    from train_entry import store_dataset
    from train_entry.data import DatasetTokenizer, _dataset_config, gpt_dataset_class

    if chunk:
        store_dataset.STORE_READ_BYTES = chunk
    tok = DatasetTokenizer(151_936, 151_643, "bench")
    config = _dataset_config([([prefix], None), None, None], seq, tok, 1234, cache)
    t0, c0 = time.perf_counter(), time.process_time()
    train, _, _ = BlendedMegatronDatasetBuilder(gpt_dataset_class(), [samples, 0, 0], lambda: True, config).build()
    built = time.perf_counter() - t0
    t1, c1 = time.perf_counter(), time.process_time()
    checksum = 0
    for i in range(samples):
        checksum ^= int(np.asarray(train[i]["tokens"]).sum())
    wall, cpu = time.perf_counter() - t1, time.process_time() - c1
    return {"build_s": round(built, 2), "build_cpu_s": round(time.process_time() - c0 - cpu, 2), "read_s": round(wall, 2),
            "read_cpu_s": round(cpu, 2), "samples_per_s": round(samples / wall, 1), "checksum": checksum}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=400_000_000)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--default-chunk-samples", type=int, default=5, help="samples read with the 256 MiB chunk (slow)")
    ap.add_argument("--seq", type=int, default=8192)
    args = ap.parse_args()

    from pipeline.core.publish import Publisher, boto3_environment
    from tests.s3_server import CREDENTIALS, ENDPOINT, S3Server

    os.environ.update(CREDENTIALS)
    os.environ.update(boto3_environment({"endpoint_url": ENDPOINT}))
    work = tempfile.mkdtemp(prefix="store_reads_")
    prefix = os.path.join(work, "tokenize", "web_text_document")
    os.makedirs(os.path.dirname(prefix))
    docs = write_prefix(prefix, args.tokens)
    server = S3Server(os.path.join(work, "weed"))
    server.start()
    try:
        server.filesystem().mkdir("bench")
        pub = Publisher("s3://bench/run", {"endpoint_url": ENDPOINT}, owner=work)
        pub.claim()
        t0 = time.perf_counter()
        for ext in (".bin", ".idx"):
            pub.upload(prefix + ext, "tokenize/web_text_document" + ext)
        upload_s = time.perf_counter() - t0
        url = "s3://bench/run/tokenize/web_text_document"
        counter = Counter()
        rows = {"local (mmap)": read_samples(prefix, args.samples, args.seq, os.path.join(work, "cache_local"), None)}
        for name, chunk, n in (("store, 256 KiB chunks (ours)", 256 << 10, args.samples),
                               ("store, 4 MiB chunks", 4 << 20, args.samples),
                               ("store, 256 MiB chunks (megatron-core default)", 256 << 20, args.default_chunk_samples)):
            counter.gets = counter.bytes = 0
            row = read_samples(url, n, args.seq, os.path.join(work, f"cache_{chunk}"), chunk)
            row.update(gets_per_sample=round(counter.gets / n, 2), mib_per_sample=round(counter.bytes / n / 2**20, 2), samples=n)
            rows[name] = row
        size = os.path.getsize(prefix + ".bin") + os.path.getsize(prefix + ".idx")
        print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                          "tokens": args.tokens, "documents": docs, "idx_bytes": os.path.getsize(prefix + ".idx"),
                          "publish_mb_s": round(size / 2**20 / upload_s, 1), "rows": rows}, indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
