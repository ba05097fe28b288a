"""The tokenize and mix stages.

tokenize: held-out split, quality buckets and physical upsampling as datatrove steps, then the Megatron part
writer; parts are merged per unit. Accounting: the first copies written per source equal the documents
decontam kept (tokens + one EOS each), and every extra sequence is a counted repeat.

mix: the curriculum planned over the units the tokenize stage wrote, as Megatron blend files.
"""

from __future__ import annotations

import os
import shutil

from loguru import logger

from mixtures.buckets import QualityBucketer
from mixtures.heldout import HELDOUT, HeldoutTagger
from mixtures.megatron_writer import MegatronPartWriter, merge_parts, token_dtype
from mixtures.plan import PLAN_PLOT, merge_layers, plan_mixture, units_from_tokenize, write_plan
from mixtures.publish import PUBLISH_ACTIVITY, publish_handoff
from mixtures.upsample import PhysicalUpsampler
from pipeline.core.accounting import AccountingError, read_stats, write_stats
from pipeline.core.atomic import write_json
from pipeline.core.documents import stage_reader
from pipeline.core.errors import StageError
from pipeline.core.executors import run_steps, step_stats
from pipeline.core.layers import increment_folders
from pipeline.core.layout import RunLayout
from pipeline.core.publish import Publisher
from pipeline.core.stage import Stage, StageContext


class TokenizeStage(Stage):
    name = "tokenize"
    needs = "decontam"
    help = "tokenize into Megatron indexed datasets: one prefix per source or quality bucket, plus held-out prefixes"

    def run(self, ctx: StageContext) -> dict:
        recipe, layout = ctx.recipe, ctx.layout
        parts = os.path.join(layout.stage(self.name), "parts")
        if ctx.resume and os.path.exists(layout.stats(self.name)) and not os.path.isdir(parts):
            # finished earlier (stats.json is written last, then the parts are removed): its prefixes are merged,
            # and merging again from no parts would write them empty
            return read_stats(layout.stats(self.name))
        self.start(ctx)
        tk, mx = recipe.tokenizer, recipe.mixture
        buckets = {s.name: q for s in recipe.sources if mx and (q := mx.buckets_for(s))}
        steps = [
            stage_reader(layout.output(self.needs)),
            HeldoutTagger(tk.heldout_fraction),
            QualityBucketer({src: (q.score, q.edges, q.bucket_names, q.missing or q.bucket_names[0]) for src, q in buckets.items()}),
            PhysicalUpsampler(dict(mx.upsample) if mx else {}),
            MegatronPartWriter(tk.path, parts, tk.eos_token, tk.batch_size),
        ]
        stats_by_step = run_steps(recipe.executor, steps, layout.logs(self.name), recipe.executor.tasks, self.name)
        counts = {name: step_stats(stats_by_step, name) for name in (MegatronPartWriter.name, QualityBucketer.name, PhysicalUpsampler.name)}
        dtype = token_dtype(tk.path)
        decontam = read_stats(layout.stats(self.needs))["sources"]
        per_source, problems = {}, []
        for source in recipe.sources:
            units = mx.units_of(source) if mx else [(source.name, None)]
            row = self._source_row(layout, parts, source.name, units, counts, dtype, mx.upsample.get(source.name, 1.0) if mx else 1.0)
            problems += _balance_problems(source.name, row, decontam[source.name]["kept"])
            per_source[source.name] = row
        if problems:
            raise AccountingError("tokenize: " + "; ".join(problems))
        stats = {"stage": self.name, "dtype": dtype.__name__, "tokenizer": tk.path, "sources": per_source}
        write_stats(layout.stats(self.name), stats)
        shutil.rmtree(parts, ignore_errors=True)  # after the stats: a kill in between leaves the parts to merge again
        return stats

    @staticmethod
    def _source_row(layout, parts: str, src: str, units: list, counts: dict, dtype, upsample: float) -> dict:
        writer, bucketer, upsampler = (counts[n] for n in (MegatronPartWriter.name, QualityBucketer.name, PhysicalUpsampler.name))

        def count(table: dict, key: str) -> int:
            return int(table.get(key, 0))

        out_units = {}
        for unit, _bucket in units:
            docs, tokens = count(writer, f"docs/{unit}"), count(writer, f"tokens/{unit}")
            prefix = layout.token_prefix(unit)
            out_units[unit] = {"prefix": prefix if docs else None, "documents": docs, "tokens": tokens,
                               "unique_documents": count(writer, f"unique_docs/{unit}"),
                               "unique_tokens": count(writer, f"unique_tokens/{unit}"),
                               "parts_merged": merge_parts(parts, unit, prefix, dtype) if docs else 0}
        held = f"{src}.{HELDOUT}"
        h_docs, h_tokens = count(writer, f"docs/{held}"), count(writer, f"tokens/{held}")
        h_prefix = layout.token_prefix(src, heldout=True)
        return {
            "units": out_units,
            **{k: sum(u[k] for u in out_units.values()) for k in ("documents", "tokens", "unique_documents", "unique_tokens")},
            "repeated_documents": count(upsampler, f"repeated_docs/{src}"),
            "upsample": upsample,
            "missing_score": count(bucketer, f"missing_score/{src}"),
            "heldout_prefix": h_prefix if h_docs else None,
            "heldout_documents": h_docs,
            "heldout_tokens": h_tokens,
            "heldout_parts_merged": merge_parts(parts, held, h_prefix, dtype) if h_docs else 0,
        }


def _balance_problems(src: str, row: dict, kept: dict) -> list[str]:
    """What does not add up between the documents decontam kept and the sequences written."""
    problems = []
    first_copies = row["unique_documents"] + row["heldout_documents"]
    if first_copies != kept["docs"]:
        problems.append(f"{src}: tokenized {first_copies} documents, decontam kept {kept['docs']}")
    written = row["unique_tokens"] + row["heldout_tokens"]
    if written != kept["tokens"] + first_copies:  # + one EOS per document
        problems.append(f"{src}: {written} tokens written, expected {kept['tokens']} + {first_copies} EOS")
    if row["documents"] != row["unique_documents"] + row["repeated_documents"]:
        problems.append(f"{src}: {row['documents']} sequences = {row['unique_documents']} documents + "
                        f"{row['repeated_documents']} repeats does not hold")
    return problems


class MixStage(Stage):
    name = "mix"
    needs = "tokenize"
    help = "plan the curriculum mixture and write Megatron blend files"
    section = "mixture"

    def preflight(self, recipe) -> list[str]:
        """``mixture.publish``: the store answers and the prefix is new or this run's, before any stage runs."""
        target = recipe.mixture.publish
        if target is None:
            return []
        try:
            Publisher(target.url, target.storage.model_dump(), owner=os.path.realpath(recipe.run_dir), attempts=1).check()
        except StageError as e:
            return [f"mixture.publish.url: {e}"]
        return []

    def run(self, ctx: StageContext) -> dict:
        recipe, layout = ctx.recipe, ctx.layout
        self.start(ctx)
        tok = read_stats(layout.stats(self.needs))["sources"]
        increments = increment_folders(layout.root)
        if increments:  # files added by `ruyi2 add`: each unit is planned over every layer's tokens
            tok = merge_layers([tok] + [read_stats(RunLayout(f).stats(self.needs))["sources"] for f in increments])
        units = units_from_tokenize(recipe.mixture, recipe.sources, tok)
        heldout = {s: v.get("heldout_parts") or v["heldout_prefix"] for s, v in tok.items() if v["heldout_prefix"]}
        plan = plan_mixture(recipe.mixture, units, heldout)
        paths = write_plan(plan, layout.stage(self.name))
        for note in plan["notes"]:
            logger.warning(f"mix: {note}")
        stats = {"stage": self.name, "plan": plan, "data_args": paths, "plot": os.path.join(layout.stage(self.name), PLAN_PLOT),
                 "increments": increments}
        if recipe.mixture.publish:
            stats["published"], activity = publish_handoff(plan, layout.root, layout.stage(self.name), recipe.mixture.publish)
            write_json(os.path.join(layout.stage(self.name), PUBLISH_ACTIVITY), activity, indent=2)
            logger.info(f"mix: published {stats['published']['objects']} objects to {stats['published']['url']} "
                        f"({activity['uploaded']} uploaded, {activity['skipped']} already there, {activity['retries']} retries)")
        write_stats(layout.stats(self.name), stats)
        return stats
