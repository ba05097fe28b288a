"""The dedup stage, global across sources: exact duplicates on normalised content first, then MinHash/LSH
near-duplicates with the suffix-array substring pass for the configured domains, then the cluster report.

Each pass is a set of datatrove steps run by the recipe's executor (see ``exact.py``, ``fuzzy.py``,
``substrings.py``); intermediates live under ``dedup/work/``.
"""

from __future__ import annotations

import glob
import json
import os

from loguru import logger

from dedup.clusters_report import cluster_report
from dedup.components import ComponentLabels, StarRound, run_rounds
from dedup.exact import ExactDuplicateFinder, ExactDuplicateMarker, ExactSignatures
from dedup.fuzzy import BandComponents, MinhashSignatures, band_key_ranges
from dedup.keepers import ClusterKeepers, ClusterMarker, MemberAttributes
from dedup.substring_fingerprints import SubstringFingerprints, SubstringRepeats, fingerprint_partitions
from dedup.substrings import SubstringDeduplicator
from pipeline.core.accounting import write_stats
from pipeline.core.atomic import write_json
from pipeline.core.documents import stage_reader
from pipeline.core.errors import StageError
from pipeline.core.executors import run_steps
from pipeline.core.layers import LAYERS, layer_files, link_into
from pipeline.core.layout import RunLayout
from pipeline.core.routing import StageRouter
from pipeline.core.stage import Stage, StageContext


class DedupStage(Stage):
    name = "dedup"
    needs = "filter"
    help = "exact, then global MinHash/LSH near-duplicate removal across all sources, plus suffix-array substring dedup"
    documents = True

    def run(self, ctx: StageContext) -> dict:
        recipe, layout = ctx.recipe, ctx.layout
        self.start(ctx)
        cfg, src_in = recipe.dedup, layout.output(self.needs)
        parts, grouping = None, None
        if not cfg.enabled:
            self.pass_through(ctx)
        else:
            priority = cfg.priority([s.name for s in recipe.sources])
            if cfg.exact.enabled:
                src_in = self._exact(ctx, src_in, priority)
            m = cfg.minhash
            logger.info(f"dedup: MinHash {m.n_grams}-word / {m.char_n_grams}-character shingles, {m.num_buckets} bands x "
                        f"{m.hashes_per_bucket} rows -> similarity threshold ~{m.threshold:.3f}")
            parts = self._partitions(ctx)
            grouping = self._fuzzy(ctx, src_in, priority, parts)
        stats = self.account(ctx)
        stats["minhash"] = cfg.minhash.model_dump() | {"threshold": cfg.minhash.threshold, "enabled": cfg.enabled,
                                                       "partitions_used": parts}
        stats["exact"] = cfg.exact.model_dump()
        stats["substring"] = cfg.substring.model_dump() | {"grouping": grouping}
        # the document shards this run's intermediates are numbered with (an increment's come after the earlier layers')
        offset = ctx.options[LAYERS].shard_offset if ctx.options.get(LAYERS) else 0
        stats["shards"] = [offset, offset + recipe.executor.tasks]
        clusters = cluster_report(layout.output(self.name), layout.removed(self.name))
        write_json(os.path.join(layout.stage(self.name), "clusters.json"), clusters, indent=2, sort_keys=True, ensure_ascii=False)
        stats["clusters"] = {"minhash": {k: clusters["minhash"][k] for k in ("clusters", "documents", "size_histogram")},
                             "exact": {k: clusters["exact"][k] for k in ("groups", "removed")}}
        write_stats(layout.stats(self.name), stats)
        return stats

    def _partitions(self, ctx: StageContext) -> int:
        """The MinHash partitions: an increment's are the base run's (its linked fingerprint files are split by
        them); otherwise the setting, or for ``auto`` as many as the documents entering dedup need."""
        m, layers = ctx.recipe.dedup.minhash, ctx.options.get(LAYERS)
        if layers:
            with open(RunLayout(layers.earlier[0]).stats(self.name)) as f:
                used = json.load(f)["minhash"].get("partitions_used")
            if used is None:
                raise StageError(f"{layers.earlier[0]}: its dedup stats do not say how many partitions it used; "
                                 "rerun its dedup stage before adding files")
            return used
        with open(ctx.layout.stats(self.needs)) as f:
            documents = json.load(f)["totals"]["kept"]["docs"]
        return m.partitions_for(documents)

    @staticmethod
    def _check_fingerprint_layout(ctx: StageContext) -> None:
        """An earlier layer written before fingerprints were stored one file per shard (``fp/<partition>/``) would
        be missed by the link, and the increment not deduplicated against it: refuse, naming it."""
        for earlier in ctx.options[LAYERS].earlier if ctx.options.get(LAYERS) else []:
            old = glob.glob(os.path.join(RunLayout(earlier).work(DedupStage.name, "substring"), "fp", "*", ""))
            if old:
                raise StageError(f"{os.path.dirname(old[0].rstrip('/'))}: substring fingerprints in the per-partition layout "
                                 "of an older version; rerun that run's dedup stage before adding files")

    @staticmethod
    def _link_earlier(ctx: StageContext, part: str, patterns: list[str]) -> int:
        """Link the earlier layers' own intermediates of ``work/<part>`` into this layer's (an increment is
        deduplicated against everything kept before it); returns this layer's first shard number."""
        layers = ctx.options.get(LAYERS)
        if not layers:
            return 0
        for earlier in layers.earlier:
            src = RunLayout(earlier).work(DedupStage.name, part)
            for pattern in patterns:
                for path in layer_files(src, pattern):
                    link_into(path, os.path.join(ctx.layout.work(DedupStage.name, part), os.path.relpath(path, src)))
        return layers.shard_offset

    def _exact(self, ctx: StageContext, src_in: str, priority: dict[str, int]) -> str:
        """Exact duplicates on normalised content, across all sources; returns the folder the fuzzy pass reads."""
        recipe, layout = ctx.recipe, ctx.layout
        tasks, buckets = recipe.executor.tasks, recipe.dedup.exact.num_buckets
        sigs, removals, kept = (layout.work(self.name, p) for p in ("exact_signatures", "exact_removals", "exact_kept"))
        offset = self._link_earlier(ctx, "exact_signatures", ["*/*.sig"])
        run_steps(recipe.executor, [stage_reader(src_in), ExactSignatures(sigs, buckets, priority, offset)],
                  layout.logs(self.name, "exact_signatures"), tasks, "dedup/exact_signatures")
        run_steps(recipe.executor, [ExactDuplicateFinder(sigs, removals, offset)], layout.logs(self.name, "exact_groups"), buckets,
                  "dedup/exact_groups")
        run_steps(recipe.executor, [stage_reader(src_in), ExactDuplicateMarker(removals, offset),
                                    StageRouter(kept, layout.removed(self.name), self.name, removed_prefix="exact_")],
                  layout.logs(self.name, "exact_filter"), tasks, "dedup/exact_filter")
        return kept

    def _fuzzy(self, ctx: StageContext, src_in: str, priority: dict[str, int], parts: int) -> dict | None:
        """MinHash clusters, substring repeats across shards, then the final pass; returns how the substring
        fingerprints were grouped (None when that pass is off)."""
        recipe, layout = ctx.recipe, ctx.layout
        m, d, tasks = recipe.dedup.minhash, recipe.dedup, recipe.executor.tasks
        work = layout.work(self.name, "minhash")
        offset = self._link_earlier(ctx, "minhash", ["keys/*/*.bin", "sigs/*", "attrs/*.parquet"])
        signatures = MinhashSignatures(work, m.num_buckets, m.hashes_per_bucket, m.n_grams, m.char_n_grams, m.seed,
                                       priority, d.quality_key, m.flush_docs, offset)
        run_steps(recipe.executor, [stage_reader(src_in), signatures], layout.logs(self.name, "minhash_signatures"), tasks,
                  "dedup/minhash_signatures")

        def logs(step: str) -> str:
            return layout.logs(self.name, step)

        ranges = band_key_ranges(parts)
        band_tasks = m.num_buckets * ranges  # each band's keys split into ranges of key values
        run_steps(recipe.executor, [BandComponents(work, parts, ranges)], logs("minhash_bands"), band_tasks, "dedup/minhash_bands")
        last = run_rounds(work, parts, lambda r: run_steps(recipe.executor, [StarRound(work, r, parts, band_tasks)],
                                                           logs(f"minhash_components/{r:03d}"), parts, f"dedup/minhash_components/{r}"))
        run_steps(recipe.executor, [ComponentLabels(work, last, parts)], logs("minhash_labels"), parts, "dedup/minhash_labels")
        shards = offset + tasks  # an increment's clusters include the earlier layers' documents
        run_steps(recipe.executor, [MemberAttributes(work, parts)], logs("minhash_members"), shards, "dedup/minhash_members")
        run_steps(recipe.executor, [ClusterKeepers(work, shards, parts, d.keeper, m.num_buckets * m.hashes_per_bucket, m.min_similarity, offset)],
                  logs("minhash_clusters"), parts, "dedup/minhash_clusters")
        sub = d.substring
        repeats, grouping = None, None
        if sub.enabled and sub.across_shards:
            repeats = layout.work(self.name, "substring")
            self._check_fingerprint_layout(ctx)
            self._link_earlier(ctx, "substring", ["fp/*.bin"])
            fingerprints = SubstringFingerprints(repeats, sub.domains, sub.min_length, sub.unit, sub.winnow, recipe.tokenizer.path, offset)
            run_steps(recipe.executor, [stage_reader(src_in), ClusterMarker(work, parts, offset), fingerprints],
                      logs("substring_fingerprints"), tasks, "dedup/substring_fingerprints")
            total, groups = fingerprint_partitions(repeats, sub.partition_fingerprints)
            logger.info(f"dedup: {total:,} substring fingerprints, grouped in {groups} task(s)")
            grouping = {"fingerprints": total, "partitions_used": groups}
            run_steps(recipe.executor, [SubstringRepeats(repeats, groups, offset)], logs("substring_repeats"), groups,
                      "dedup/substring_repeats")
        substrings = [SubstringDeduplicator(sub.domains, sub.min_length, sub.unit, sub.shard_bytes, sub.min_doc_fraction,
                                            recipe.tokenizer.path, repeats, offset)] if sub.enabled else []
        router = StageRouter(layout.output(self.name), layout.removed(self.name), self.name, removed_prefix="minhash_")
        run_steps(recipe.executor, [stage_reader(src_in), ClusterMarker(work, parts, offset), *substrings, router],
                  layout.logs(self.name, "minhash_filter"), tasks, "dedup/minhash_filter")
        return grouping
