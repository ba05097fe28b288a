"""The decontam stage: build the benchmark n-gram index once, then drop (or cut) every document that shares
n-grams with a benchmark item, per domain, and write the contamination report."""

from __future__ import annotations

import os

from decontam.build import apply_corpus_counts, build_index, stored_index
from decontam.corpus_common import CorpusNgramCounter
from decontam.filter import NgramDecontaminationTagger
from decontam.report import contamination_report
from pipeline.core.accounting import write_stats
from pipeline.core.atomic import write_json
from pipeline.core.documents import stage_reader
from pipeline.core.executors import run_steps
from pipeline.core.layers import LAYERS, layer_files, link_into
from pipeline.core.routing import StageRouter
from pipeline.core.stage import Stage, StageContext


class DecontamStage(Stage):
    name = "decontam"
    needs = "dedup"
    help = "drop documents (or cut spans) sharing n-grams with benchmark test items"
    documents = True

    def run(self, ctx: StageContext) -> dict:
        recipe, layout = ctx.recipe, ctx.layout
        self.start(ctx)
        cfg, folder = recipe.decontam, layout.stage(self.name)
        report = None
        if not cfg.enabled:
            self.pass_through(ctx)
        else:
            layers = ctx.options.get(LAYERS)
            index_path, index_stats = self._benchmark_index(ctx, folder, layers)
            if cfg.corpus_common_fraction is not None:
                counts = os.path.join(folder, "corpus_ngrams")
                for i, earlier in enumerate(layers.earlier if layers else ()):
                    # an increment's common n-grams are counted over everything kept before it too
                    for path in layer_files(os.path.join(earlier, self.name, "corpus_ngrams"), "*.npz"):
                        link_into(path, os.path.join(counts, f"layer{i:03d}_{os.path.basename(path)}"))
                run_steps(recipe.executor, [stage_reader(layout.output(self.needs)), CorpusNgramCounter(index_path, counts)],
                          layout.logs(self.name, "corpus_ngrams"), recipe.executor.tasks, f"{self.name}/corpus_ngrams")
                index_path, index_stats = apply_corpus_counts(cfg, index_path, counts, index_stats, os.path.join(folder, "index"))
            matches = os.path.join(folder, "matches")
            tagger = NgramDecontaminationTagger(index_path, matches, cfg.action, dict(cfg.per_domain), cfg.cut_margin_tokens,
                                                cfg.cut_min_tokens, recipe.tokenizer.path, cfg.min_item_coverage)
            steps = [stage_reader(layout.output(self.needs)), tagger,
                     StageRouter(layout.output(self.name), layout.removed(self.name), self.name)]
            run_steps(recipe.executor, steps, layout.logs(self.name), recipe.executor.tasks, self.name)
            report = contamination_report(matches, index_stats, cfg.n_gram)
            write_json(os.path.join(folder, "contamination.json"), report, indent=2, sort_keys=True, ensure_ascii=False)
        stats = self.account(ctx)
        if report:
            stats["contamination"] = {b: {"items_found": r["items_found"], "documents": r["documents"], "actions": r["actions"]}
                                      for b, r in report["benchmarks"].items()}
            stats["benchmarks_skipped"] = report["index"]["benchmarks_skipped"]
        write_stats(layout.stats(self.name), stats)
        return stats

    def _benchmark_index(self, ctx: StageContext, folder: str, layers) -> tuple[str, dict]:
        """The benchmark n-gram index before corpus-common exclusion (``benchmark_index/``): built from the
        recipe's benchmarks, or for an increment the base run's, linked (the same recipe built it; the
        benchmark files are not read again)."""
        own = os.path.join(folder, "benchmark_index")
        if layers:
            base = layer_files(os.path.join(layers.earlier[0], self.name, "benchmark_index"), "*.npz")
            if base:
                path = os.path.join(own, os.path.basename(base[0]))
                link_into(base[0], path)
                return stored_index(path)
        return build_index(ctx.recipe.decontam, own)
