"""Builds the decontamination index a recipe asks for: load the benchmarks, index their n-grams, drop
prompt-template and common n-grams, save it once for every worker to memory-map."""

from __future__ import annotations

import os
import shutil

from datatrove.utils.logging import logger

from decontam.benchmarks import BenchmarkError, benchmark_source, load_benchmark
from decontam.corpus_common import exclude_corpus_common
from decontam.index_cache import cached_index, index_key, keep_index
from decontam.ngrams import NgramIndex
from decontam.reference import exclude_common_ngrams, reference_documents


def build_index(cfg, folder: str) -> tuple[str, dict]:
    """``cfg`` is a ``DecontamConfig``. Returns the saved index path and what was loaded and excluded. An
    index built from the same files, settings and code is taken from the cache (decontam/index_cache.py)."""
    key = index_key(cfg)
    cached = cached_index(key, NgramIndex.file_name(cfg.n_gram))
    if cached:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, os.path.basename(cached))
        shutil.copyfile(cached, path)
        return saved_index(path, f"from the cache {cached}")
    items, loaded, skipped = [], {}, {}
    for name in cfg.benchmarks:
        where = benchmark_source(name, cfg.benchmark_dir)
        if where is None:
            if cfg.missing == "fail":
                load_benchmark(name, cfg.benchmark_dir)  # raises with the expected layout
            skipped[name] = "no data (benchmark_dir/<name>/ absent and no package ships it)"
            logger.warning(f"decontam: benchmark {name!r} skipped: no data found")
            continue
        got = load_benchmark(name, cfg.benchmark_dir)
        loaded[name] = {"from": where, "items": len(got)}
        items.extend(got)
    if not items:
        raise BenchmarkError(f"decontam: none of {cfg.benchmarks} could be loaded")
    index = NgramIndex.build(items, cfg.n_gram, cfg.cjk_n_gram, cfg.min_n_gram, cfg.max_items_per_ngram, cfg.split_n_gram)
    reference = exclude_common_ngrams(index, reference_documents(cfg.reference, cfg.reference_max_bytes), cfg.common_min_docs)
    index.stats.update(reference=reference, benchmarks_loaded=loaded, benchmarks_skipped=skipped,
                       ngrams_indexed=int(len(index.hashes)), lengths=index.lengths, index_bytes=index.nbytes)
    path = index.save(folder)
    keep_index(key, path)
    logger.info(f"decontam: {len(items):,} items from {len(loaded)} benchmarks, {len(index.hashes):,} n-grams indexed "
                f"({index.stats['excluded_template']:,} template and {reference['excluded']:,} common n-grams excluded), "
                f"{index.nbytes / 2**20:.1f} MiB")
    return path, index.stats | {"index_file_bytes": os.path.getsize(path)}


def saved_index(path: str, where: str) -> tuple[str, dict]:
    """An index saved earlier (``where`` says by whom, for the log), with the stats it was saved with."""
    index = NgramIndex.load(path)
    logger.info(f"decontam: the index {path} ({where}): {len(index.items):,} items, {len(index.hashes):,} n-grams")
    return path, index.stats | {"index_file_bytes": os.path.getsize(path)}


def stored_index(path: str) -> tuple[str, dict]:
    """An index an earlier run built (``ruyi2 add`` decontaminates with its base run's), with its stats."""
    path, stats = saved_index(path, "the base run's")
    return path, stats | {"from_base_run": True}


def apply_corpus_counts(cfg, index_path: str, counts_folder: str, index_stats: dict, folder: str | None = None) -> tuple[str, dict]:
    """Excludes the corpus-common n-grams counted into ``counts_folder`` from the saved index and saves the
    result in ``folder`` (default: over the index); returns its path and the index stats with what was excluded."""
    index = NgramIndex.load(index_path)
    common = exclude_corpus_common(index, counts_folder, cfg.corpus_common_fraction, cfg.corpus_common_min_docs)
    index_path = index.save(folder or os.path.dirname(index_path))
    logger.info(f"decontam: {common['excluded']:,} n-grams in >= {common['threshold']:,} of the corpus's {common['documents']:,} "
                f"documents excluded ({common['items_affected']:,} items affected); {len(index.hashes):,} n-grams left")
    return index_path, index_stats | {"corpus_common": common, "excluded_corpus_common": common["excluded"],
                                      "ngrams_indexed": int(len(index.hashes)), "index_bytes": index.nbytes,
                                      "index_file_bytes": os.path.getsize(index_path)}
