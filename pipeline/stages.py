"""The stage graph: filter -> dedup -> decontam -> tokenize -> mix -> train.

Each stage reads only the previous stage's output from the run directory, runs its datatrove pipeline(s)
through the configured executor, then checks and writes its stats. Stages are plain functions of
(recipe, layout) so that the CLI can run one, or all in order.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from typing import Callable

from loguru import logger

from pipeline.accounting import AccountingError, read_stats, stage_accounting, write_stats
from pipeline.executors import run_steps, step_stats
from pipeline.layout import RunLayout
from pipeline.recipe import Recipe, expand_source_files
from pipeline.sources import QUARANTINE_STAT, READ_STAT, SourceReader


class MissingInput(RuntimeError):
    pass


def _require(path: str, stage: str, needs: str) -> None:
    if not os.path.exists(path):
        raise MissingInput(f"stage {stage!r} needs the output of {needs!r} ({path}); run `ruyi2 {needs}` first")


def _previous_kept(layout: RunLayout, stage: str) -> dict[str, int]:
    stats = read_stats(layout.stats(stage))
    return {src: c["kept"]["docs"] for src, c in stats["sources"].items()}


def _source_names(recipe: Recipe) -> list[str]:
    return [s.name for s in recipe.sources]


# ------------------------------------------------------------------------------------------------ filter
def run_filter(recipe: Recipe, layout: RunLayout, resume: bool = False, retune: bool = False) -> dict:
    """Tag every document's signals and apply thresholds; with ``retune``, re-apply the recipe's thresholds
    to the signals stored by the last tagging run (the sources are re-read, no signal is recomputed)."""
    from filters.apply import StoredSignals, ThresholdStep
    from filters.config import tag_time_settings
    from filters.tagger import SignalTagger
    from mixtures.token_count import TokenCountTagger
    from pipeline.routing import StageRouter

    attributes = os.path.join(layout.stage("filter"), "attributes")
    examples = os.path.join(layout.stage("filter"), "examples")
    rules = {s.name: recipe.filter.rules_for(s) for s in recipe.sources}
    per_source = {name: r.model_dump() for name, r in rules.items()}
    languages = {s.name: s.language for s in recipe.sources}
    tagging = {
        "tasks": recipe.executor.tasks,
        "sources": {s.name: tag_time_settings(rules[s.name]) for s in recipe.sources},
        "files": {s.name: expand_source_files(s) for s in recipe.sources},
    }
    if retune:
        _check_retune(os.path.join(attributes, "manifest.json"), tagging)
        for sub in ("output", "removed", "quarantine", "examples", "logs"):
            shutil.rmtree(os.path.join(layout.stage("filter"), sub), ignore_errors=True)
        signals = StoredSignals(attributes)
    else:
        layout.fresh_stage("filter", resume)
        signals = SignalTagger(per_source, languages, attributes)
    steps = [
        SourceReader(recipe.sources, layout.quarantine("filter")),
        signals,
        ThresholdStep(per_source, languages, examples, recipe.filter.examples_per_reason),
        # after the thresholds: edits change the text, and the funnel counts what leaves the stage
        TokenCountTagger(recipe.tokenizer.path, recipe.tokenizer.batch_size),
        StageRouter(layout.output("filter"), layout.removed("filter"), "filter"),
    ]
    stats_by_step = run_steps(recipe.executor, steps, layout.logs("filter"), recipe.executor.tasks, "filter")
    if not retune:
        with open(os.path.join(attributes, "manifest.json"), "w") as f:
            json.dump(tagging, f, indent=1, sort_keys=True, default=list)
    reader = step_stats(stats_by_step, SourceReader.name)
    read = {src: int(reader.get(READ_STAT + src, 0)) for src in _source_names(recipe)}
    stats = stage_accounting("filter", layout.stage("filter"), read, _source_names(recipe))
    for src, c in stats["sources"].items():  # what the reader quarantined is what the quarantine holds
        if int(reader.get(QUARANTINE_STAT + src, 0)) != c["quarantined"]["docs"]:
            raise AccountingError(f"filter: {src}: reader quarantined {int(reader.get(QUARANTINE_STAT + src, 0))}, "
                                  f"quarantine/ holds {c['quarantined']['docs']}")
    stats["retune"] = retune
    stats["examples"] = _merge_examples(examples, recipe.filter.examples_per_reason)
    write_stats(layout.stats("filter"), stats)
    return stats


class RetuneError(RuntimeError):
    """The stored signals cannot answer the recipe: a tag-time setting, the sources or the sharding changed."""


def _check_retune(manifest_path: str, now: dict) -> None:
    if not os.path.exists(manifest_path):
        raise RetuneError(f"{manifest_path}: no stored signals; run `ruyi2 filter` (without --retune) first")
    with open(manifest_path) as f:
        then = json.load(f)
    if then["tasks"] != now["tasks"]:
        raise RetuneError(f"executor.tasks is {now['tasks']} but the signals were stored by {then['tasks']} tasks "
                          "(documents are dealt to tasks by file): use the same value, or re-run without --retune")
    problems = []
    for src, settings in now["sources"].items():
        if src not in then["sources"]:
            problems.append(f"source {src!r} was not tagged")
            continue
        if then["files"].get(src) != now["files"][src]:
            problems.append(f"source {src!r}: its input files changed")
        stored = then["sources"][src]
        for key, value in sorted(settings.items()):
            if key not in stored:
                problems.append(f"source {src!r}: filter {key} = {value!r} was not tagged")
            elif json.loads(json.dumps(value)) != stored[key]:
                problems.append(f"source {src!r}: filter {key} is a tag-time setting, tagged as {stored[key]!r}, now {value!r}")
    if problems:
        raise RetuneError("cannot retune from the stored signals (run `ruyi2 filter` without --retune):\n  - " + "\n  - ".join(problems))


def _merge_examples(folder: str, per_reason: int) -> dict:
    merged: dict[str, dict[str, list]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path, encoding="utf-8") as f:
            for src, reasons in json.load(f).items():
                for reason, docs in reasons.items():
                    kept = merged.setdefault(src, {}).setdefault(reason, [])
                    kept.extend(docs[: per_reason - len(kept)])
    return merged


# ------------------------------------------------------------------------------------------------- dedup
def run_dedup(recipe: Recipe, layout: RunLayout, resume: bool = False) -> dict:
    from dedup.clusters_report import cluster_report

    _require(layout.stats("filter"), "dedup", "filter")
    layout.fresh_stage("dedup", resume)
    src_in = layout.output("filter")
    settings = recipe.dedup.minhash
    if not recipe.dedup.enabled:
        _pass_through(src_in, layout.output("dedup"))
    else:
        names = _source_names(recipe)
        order = recipe.dedup.source_priority + [n for n in names if n not in recipe.dedup.source_priority]
        priority = {n: i for i, n in enumerate(order)}
        if recipe.dedup.exact.enabled:
            src_in = _exact_dedup(recipe, layout, src_in, priority)
        logger.info(
            f"dedup: MinHash {settings.n_grams}-word / {settings.char_n_grams}-character shingles, {settings.num_buckets} bands x "
            f"{settings.hashes_per_bucket} rows -> similarity threshold ~{settings.threshold:.3f}"
        )
        _fuzzy_dedup(recipe, layout, src_in, priority)
    stats = stage_accounting("dedup", layout.stage("dedup"), _previous_kept(layout, "filter"), _source_names(recipe))
    stats["minhash"] = settings.model_dump() | {"threshold": settings.threshold, "enabled": recipe.dedup.enabled}
    stats["exact"] = recipe.dedup.exact.model_dump()
    clusters = cluster_report(layout.output("dedup"), layout.removed("dedup"))
    with open(os.path.join(layout.stage("dedup"), "clusters.json"), "w") as f:
        json.dump(clusters, f, indent=2, sort_keys=True, ensure_ascii=False)
    stats["clusters"] = {"minhash": {k: clusters["minhash"][k] for k in ("clusters", "documents", "size_histogram")},
                         "exact": {k: clusters["exact"][k] for k in ("groups", "removed")}}
    write_stats(layout.stats("dedup"), stats)
    return stats


def _fuzzy_dedup(recipe: Recipe, layout: RunLayout, src_in: str, priority: dict[str, int]) -> None:
    from dedup.fuzzy import BandComponents, ClusterKeepers, ClusterMarker, MinhashSignatures
    from dedup.substrings import SubstringDeduplicator
    from pipeline.documents import stage_reader
    from pipeline.routing import StageRouter

    m, d, tasks = recipe.dedup.minhash, recipe.dedup, recipe.executor.tasks
    work = layout.work("dedup", "minhash")
    signatures = MinhashSignatures(work, m.num_buckets, m.hashes_per_bucket, m.n_grams, m.char_n_grams, m.seed,
                                   priority, d.quality_key, m.flush_docs)
    run_steps(recipe.executor, [stage_reader(src_in), signatures], layout.logs("dedup", "minhash_signatures"), tasks, "dedup/minhash_signatures")
    run_steps(recipe.executor, [BandComponents(work)], layout.logs("dedup", "minhash_bands"), m.num_buckets, "dedup/minhash_bands")
    run_steps(recipe.executor, [ClusterKeepers(work, m.num_buckets, d.keeper)], layout.logs("dedup", "minhash_clusters"), 1, "dedup/minhash_clusters")
    sub = d.substring
    substrings = [SubstringDeduplicator(sub.domains, sub.min_length, sub.unit, sub.shard_bytes, sub.min_doc_fraction,
                                        recipe.tokenizer.path)] if sub.enabled else []
    run_steps(recipe.executor, [stage_reader(src_in), ClusterMarker(work), *substrings,
                                StageRouter(layout.output("dedup"), layout.removed("dedup"), "dedup", removed_prefix="minhash_")],
              layout.logs("dedup", "minhash_filter"), tasks, "dedup/minhash_filter")


def _exact_dedup(recipe: Recipe, layout: RunLayout, src_in: str, priority: dict[str, int]) -> str:
    """Exact duplicates on normalised content, across all sources; returns the folder the fuzzy pass reads."""
    from dedup.exact import ExactDuplicateFinder, ExactDuplicateMarker, ExactSignatures
    from pipeline.documents import stage_reader
    from pipeline.routing import StageRouter

    tasks, buckets = recipe.executor.tasks, recipe.dedup.exact.num_buckets
    sigs, removals, kept = (layout.work("dedup", p) for p in ("exact_signatures", "exact_removals", "exact_kept"))
    run_steps(recipe.executor, [stage_reader(src_in), ExactSignatures(sigs, buckets, priority)],
              layout.logs("dedup", "exact_signatures"), tasks, "dedup/exact_signatures")
    run_steps(recipe.executor, [ExactDuplicateFinder(sigs, removals)], layout.logs("dedup", "exact_groups"), buckets, "dedup/exact_groups")
    run_steps(recipe.executor, [stage_reader(src_in), ExactDuplicateMarker(removals),
                                StageRouter(kept, layout.removed("dedup"), "dedup", removed_prefix="exact_")],
              layout.logs("dedup", "exact_filter"), tasks, "dedup/exact_filter")
    return kept


def _pass_through(src: str, dst: str) -> None:
    """A disabled document stage still produces its output folder, unchanged."""
    shutil.copytree(src, dst, dirs_exist_ok=True)


# ---------------------------------------------------------------------------------------------- decontam
def run_decontam(recipe: Recipe, layout: RunLayout, resume: bool = False) -> dict:
    from decontam.build import build_index
    from decontam.filter import NgramDecontaminationTagger
    from decontam.report import contamination_report
    from pipeline.documents import stage_reader
    from pipeline.routing import StageRouter

    _require(layout.stats("dedup"), "decontam", "dedup")
    layout.fresh_stage("decontam", resume)
    cfg = recipe.decontam
    report = None
    if not cfg.enabled:
        _pass_through(layout.output("dedup"), layout.output("decontam"))
    else:
        index_path, index_stats = build_index(cfg, os.path.join(layout.stage("decontam"), "index"))
        matches = os.path.join(layout.stage("decontam"), "matches")
        steps = [
            stage_reader(layout.output("dedup")),
            NgramDecontaminationTagger(index_path, matches, cfg.action, dict(cfg.per_domain), cfg.cut_margin_tokens, cfg.cut_min_tokens,
                                       recipe.tokenizer.path),
            StageRouter(layout.output("decontam"), layout.removed("decontam"), "decontam"),
        ]
        run_steps(recipe.executor, steps, layout.logs("decontam"), recipe.executor.tasks, "decontam")
        report = contamination_report(matches, index_stats, cfg.n_gram)
        with open(os.path.join(layout.stage("decontam"), "contamination.json"), "w") as f:
            json.dump(report, f, indent=2, sort_keys=True, ensure_ascii=False)
    stats = stage_accounting("decontam", layout.stage("decontam"), _previous_kept(layout, "dedup"), _source_names(recipe))
    if report:
        stats["contamination"] = {b: {"items_found": r["items_found"], "documents": r["documents"], "actions": r["actions"]}
                                  for b, r in report["benchmarks"].items()}
        stats["benchmarks_skipped"] = report["index"]["benchmarks_skipped"]
    write_stats(layout.stats("decontam"), stats)
    return stats


# ---------------------------------------------------------------------------------------------- tokenize
def run_tokenize(recipe: Recipe, layout: RunLayout, resume: bool = False) -> dict:
    """Held-out split, quality buckets and physical upsampling as datatrove steps, then the Megatron part
    writer; parts are merged per unit. Accounting: the first copies written per source equal the
    documents decontam kept (tokens + one EOS each), and every extra sequence is a counted repeat."""
    from mixtures.buckets import QualityBucketer
    from mixtures.heldout import HELDOUT, HeldoutTagger
    from mixtures.megatron_writer import MegatronPartWriter, merge_parts, token_dtype
    from mixtures.upsample import PhysicalUpsampler
    from pipeline.documents import stage_reader

    _require(layout.stats("decontam"), "tokenize", "decontam")
    layout.fresh_stage("tokenize", resume)
    parts = os.path.join(layout.stage("tokenize"), "parts")
    tk, mx = recipe.tokenizer, recipe.mixture
    bucket_specs = {
        s.name: (q.score, q.edges, q.bucket_names, q.missing or q.bucket_names[0])
        for s in recipe.sources
        if (q := mx.buckets_for(s))
    }
    steps = [
        stage_reader(layout.output("decontam")),
        HeldoutTagger(tk.heldout_fraction),
        QualityBucketer(bucket_specs),
        PhysicalUpsampler(dict(mx.upsample)),
        MegatronPartWriter(tk.path, parts, tk.eos_token, tk.batch_size),
    ]
    stats_by_step = run_steps(recipe.executor, steps, layout.logs("tokenize"), recipe.executor.tasks, "tokenize")
    writer = step_stats(stats_by_step, MegatronPartWriter.name)
    bucketer = step_stats(stats_by_step, QualityBucketer.name)
    upsampler = step_stats(stats_by_step, PhysicalUpsampler.name)
    dtype = token_dtype(tk.path)
    decontam = read_stats(layout.stats("decontam"))["sources"]
    count = lambda table, key: int(table.get(key, 0))  # noqa: E731
    per_source, problems = {}, []
    for source in recipe.sources:
        src = source.name
        units = {}
        for unit, _bucket in mx.units_of(source):
            docs, tokens = count(writer, f"docs/{unit}"), count(writer, f"tokens/{unit}")
            prefix = layout.token_prefix(unit)
            units[unit] = {"prefix": prefix if docs else None, "documents": docs, "tokens": tokens,
                           "unique_documents": count(writer, f"unique_docs/{unit}"),
                           "unique_tokens": count(writer, f"unique_tokens/{unit}"),
                           "parts_merged": merge_parts(parts, unit, prefix, dtype) if docs else 0}
        held = f"{src}.{HELDOUT}"
        h_docs, h_tokens = count(writer, f"docs/{held}"), count(writer, f"tokens/{held}")
        h_prefix = layout.token_prefix(src, heldout=True)
        row = {
            "units": units,
            "documents": sum(u["documents"] for u in units.values()),
            "tokens": sum(u["tokens"] for u in units.values()),
            "unique_documents": sum(u["unique_documents"] for u in units.values()),
            "unique_tokens": sum(u["unique_tokens"] for u in units.values()),
            "repeated_documents": count(upsampler, f"repeated_docs/{src}"),
            "upsample": mx.upsample.get(src, 1.0),
            "missing_score": count(bucketer, f"missing_score/{src}"),
            "heldout_prefix": h_prefix if h_docs else None,
            "heldout_documents": h_docs,
            "heldout_tokens": h_tokens,
            "heldout_parts_merged": merge_parts(parts, held, h_prefix, dtype) if h_docs else 0,
        }
        kept = decontam[src]["kept"]
        first_copies = row["unique_documents"] + h_docs
        if first_copies != kept["docs"]:
            problems.append(f"{src}: tokenized {first_copies} documents, decontam kept {kept['docs']}")
        if row["unique_tokens"] + h_tokens != kept["tokens"] + first_copies:  # + one EOS per document
            problems.append(f"{src}: {row['unique_tokens'] + h_tokens} tokens written, expected {kept['tokens']} + {first_copies} EOS")
        if row["documents"] != row["unique_documents"] + row["repeated_documents"]:
            problems.append(f"{src}: {row['documents']} sequences = {row['unique_documents']} documents + "
                            f"{row['repeated_documents']} repeats does not hold")
        per_source[src] = row
    shutil.rmtree(parts, ignore_errors=True)
    if problems:
        raise AccountingError("tokenize: " + "; ".join(problems))
    stats = {"stage": "tokenize", "dtype": dtype.__name__, "tokenizer": tk.path, "sources": per_source, "balanced": True}
    write_stats(layout.stats("tokenize"), stats)
    return stats


# --------------------------------------------------------------------------------------------------- mix
def run_mix(recipe: Recipe, layout: RunLayout, resume: bool = False) -> dict:
    from mixtures.plan import PLAN_PLOT, plan_mixture, units_from_tokenize, write_plan

    _require(layout.stats("tokenize"), "mix", "tokenize")
    layout.fresh_stage("mix", resume)
    tok = read_stats(layout.stats("tokenize"))["sources"]
    units = units_from_tokenize(recipe.mixture, recipe.sources, tok)
    heldout = {s: v["heldout_prefix"] for s, v in tok.items() if v["heldout_prefix"]}
    plan = plan_mixture(recipe.mixture, units, heldout)
    paths = write_plan(plan, layout.stage("mix"))
    for note in plan["notes"]:
        logger.warning(f"mix: {note}")
    stats = {"stage": "mix", "plan": plan, "data_args": paths, "plot": os.path.join(layout.stage("mix"), PLAN_PLOT)}
    write_stats(layout.stats("mix"), stats)
    return stats


# ------------------------------------------------------------------------------------------------- train
def run_train(recipe: Recipe, layout: RunLayout, resume: bool = False) -> dict:
    """Train in a fresh (spawned) process, or in this one under torchrun.

    torch.distributed and megatron-core's parallel state leave threads and process groups behind; the data
    stages fork worker processes, and forking a process in that state can crash. A spawned process keeps
    the driver clean, so stages can run in any order in one process."""
    import multiprocessing

    from pipeline.executors import StageFailed

    _require(layout.stats("mix"), "train", "mix")
    if "RANK" in os.environ:  # launched by torchrun: this process is one rank of the job
        return train_in_process(recipe, layout, resume)
    layout.fresh_stage("train", resume)
    proc = multiprocessing.get_context("spawn").Process(
        target=_train_main, args=(recipe.model_dump(mode="json"), layout.root, resume), name="ruyi2-train"
    )
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise StageFailed(f"train: the training process exited with status {proc.exitcode} (its error is printed above)")
    return read_stats(layout.stats("train"))


def _train_main(recipe_json: dict, root: str, resume: bool) -> None:
    train_in_process(Recipe.model_validate(recipe_json), RunLayout(root), resume, prepared=True)


def train_in_process(recipe: Recipe, layout: RunLayout, resume: bool = False, prepared: bool = False) -> dict:
    from mixtures.tokenizer import token_id
    from train_entry.config import build_config
    from train_entry.data import DatasetTokenizer
    from train_entry.loss_schedule import ExitWeight
    from train_entry.trainer import CurriculumStage, DistributedContext, FamilialTrainer, TrainSettings

    cfg = recipe.train
    fcfg = build_config(cfg.model.preset, cfg.seq_length, **cfg.model.model_dump(exclude={"preset"}))
    weights = cfg.exit_weights or [None] * len(fcfg.exits)
    exit_weights = [ExitWeight(**w.model_dump()) if w else ExitWeight() for w in weights]
    mix = read_stats(layout.stats("mix"))
    # each held-out prefix is also an evaluation set of its own, labelled "domain/source"
    # (by file name: a plan may point at the token files of another run folder)
    eval_label = {os.path.basename(layout.token_prefix(s.name, heldout=True)): f"{s.domain}/{s.name}" for s in recipe.sources}
    stages = [
        CurriculumStage(
            st["name"],
            mix["data_args"][st["name"]]["train"],
            st["tokens"],
            mix["data_args"][st["name"]]["valid"],
            eval_sets={eval_label[os.path.basename(r["prefix"])]: r["prefix"] for r in st["valid"]},
        )
        for st in mix["plan"]["stages"]
    ]
    tokenizer = DatasetTokenizer(fcfg.vocab_size, token_id(recipe.tokenizer.path, recipe.tokenizer.eos_token), recipe.tokenizer.path)
    tp, pp = cfg.tensor_parallel, cfg.pipeline_parallel
    settings = TrainSettings(
        **cfg.model_dump(exclude={"enabled", "model", "exit_weights", "threads", "tensor_parallel", "pipeline_parallel", "dae"}),
        exit_weights=exit_weights,
        tp=tp,
        pp=pp,
        dae_exit=(cfg.dae.exit if cfg.dae.exit is not None else fcfg.exits[0]) if cfg.dae.enabled else None,
        dae_blocks=cfg.dae.blocks,
    )
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with DistributedContext(tp=tp, pp=pp):
        rank0 = torch.distributed.get_rank() == 0
        if not prepared:  # under torchrun: one rank empties the stage folder, the others wait for it
            if rank0:
                layout.fresh_stage("train", resume)
            torch.distributed.barrier()
        result = FamilialTrainer(fcfg, settings, tokenizer, layout.stage("train")).run(stages, resume=resume)
        stats = {"stage": "train", "model": dict(fcfg.__dict__), "parallel": {"tp": tp, "pp": pp,
                 "world_size": torch.distributed.get_world_size()}, **result}
        if rank0:
            write_stats(layout.stats("train"), stats)
        torch.distributed.barrier()
    return stats


STAGE_FUNCS: dict[str, Callable[..., dict]] = {
    "filter": run_filter,
    "dedup": run_dedup,
    "decontam": run_decontam,
    "tokenize": run_tokenize,
    "mix": run_mix,
    "train": run_train,
}

