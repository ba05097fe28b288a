"""The filter stage: read the sources (bad records quarantined), tag every document's signals once, apply
the thresholds, count tokens, route kept and removed documents.

``--retune`` re-applies the recipe's thresholds to the signals stored by the last tagging run: the sources
are re-read and joined with the attribute files, no signal is recomputed. It is refused, naming what
changed, when a tag-time setting, the input files or the sharding differ from the tagging run.
"""

from __future__ import annotations

import glob
import json
import os
import shutil

from filters.apply import StoredSignals, ThresholdStep
from filters.config import tag_time_settings
from filters.extract import REASON_PREFIX as EXTRACT_REASON
from filters.extract import HtmlExtraction, StoredExtraction
from filters.tagger import SECONDS_STAT, SignalTagger
from pipeline.core.accounting import AccountingError, stage_accounting, write_stats
from pipeline.core.atomic import write_json
from pipeline.core.errors import StageError
from pipeline.core.executors import STEP_SECONDS, run_steps, step_stats
from pipeline.core.layers import LAYERS
from pipeline.core.routing import StageRouter
from pipeline.core.sources import NOTE_STAT, QUARANTINE_STAT, READ_SECONDS, READ_STAT, STORE_RETRIES, SourceReader
from pipeline.core.stage import Stage, StageContext
from pipeline.core.tokens import TokenCountTagger


class RetuneError(StageError):
    """The stored signals cannot answer the recipe: a tag-time setting, the sources or the sharding changed."""


class FilterStage(Stage):
    name = "filter"
    help = "read the sources; quarantine bad records; tag signals once, apply the rule families' thresholds"
    documents = True

    def run(self, ctx: StageContext) -> dict:
        recipe, layout = ctx.recipe, ctx.layout
        retune = bool(ctx.options.get("retune"))
        folder, layers = layout.stage(self.name), ctx.options.get(LAYERS)
        attributes, examples = os.path.join(folder, "attributes"), os.path.join(folder, "examples")
        rules = {s.name: recipe.filter.rules_for(s) for s in recipe.sources}
        per_source = {name: r.model_dump() for name, r in rules.items()}
        languages = {s.name: s.language for s in recipe.sources}
        listings = {s.name: s.listing() for s in recipe.sources}
        tagging = tagging_settings(recipe, rules, listings)
        html_sources = [s.name for s in recipe.sources if s.format == "warc"]
        if retune:
            check_retune(os.path.join(attributes, "manifest.json"), tagging)
            for sub in ("output", "removed", "quarantine", "examples", "logs"):
                shutil.rmtree(os.path.join(folder, sub), ignore_errors=True)
            signals = StoredSignals(attributes)
            extraction = StoredExtraction(html_sources, attributes)
        else:
            layout.fresh_stage(self.name, ctx.resume)
            signals = SignalTagger(per_source, languages, attributes)
            extract = recipe.filter.extract
            extraction = HtmlExtraction(html_sources, extract.extractor, extract.timeout_s, attributes)
        steps = [
            SourceReader(recipe.sources, layout.quarantine(self.name), file_offset=layers.file_offset if layers else 0,
                         roots=layers.roots if layers else None, limits=recipe.filter.read,
                         listed={name: listing.files for name, listing in listings.items()}),
            *([extraction] if html_sources else []),
            signals,
            ThresholdStep(per_source, languages, examples, recipe.filter.examples_per_reason),
            # after the thresholds: edits change the text, and the funnel counts what leaves the stage; a document
            # over filter.sanity.max_chars is not tokenized (every other one is bounded by that limit)
            TokenCountTagger(recipe.tokenizer.path, recipe.tokenizer.batch_size,
                             skip_reasons=("sanity:too_large", EXTRACT_REASON),  # a page without text: its HTML
                             count_removed=recipe.filter.count_removed_tokens),
            StageRouter(layout.output(self.name), layout.removed(self.name), self.name),
        ]
        stats_by_step = run_steps(recipe.executor, steps, layout.logs(self.name), recipe.executor.tasks, self.name)
        if not retune:
            write_json(os.path.join(attributes, "manifest.json"), tagging, indent=1, sort_keys=True, default=list)
        names = [s.name for s in recipe.sources]
        reader = step_stats(stats_by_step, SourceReader.name)
        read = {src: int(reader.get(READ_STAT + src, 0)) for src in names}
        stats = stage_accounting(self.name, folder, read, names)
        for src, c in stats["sources"].items():  # what the reader quarantined is what the quarantine holds
            said = int(reader.get(QUARANTINE_STAT + src, 0))
            if said != c["quarantined"]["docs"]:
                raise AccountingError(f"filter: {src}: reader quarantined {said}, quarantine/ holds {c['quarantined']['docs']}")
        if not recipe.filter.count_removed_tokens:
            removed_tokens_not_counted(stats)
        stats["retune"] = retune
        stats["examples"] = merge_examples(examples, recipe.filter.examples_per_reason)
        stats["reading"] = reading_notes(reader, listings)
        write_stats(layout.stats(self.name), stats)
        # timings differ run to run: beside stats.json, which a rerun writes byte for byte
        write_json(os.path.join(folder, PROFILE), filter_profile(stats_by_step, steps), indent=1, sort_keys=True)
        return stats


PROFILE = "profile.json"


def removed_tokens_not_counted(stats: dict) -> None:
    """``filter.count_removed_tokens: false``: the removed documents were not tokenized, so their tokens, and
    the tokens entering the stage, are unknown (None, "not counted" in the reports), not a sum that reads low."""
    for counts in [*stats["sources"].values(), stats["totals"]]:
        for part in ("removed", "in"):
            if part in counts:
                counts[part]["tokens"] = None
    stats["removed_tokens_counted"] = False


def tagging_settings(recipe, rules: dict | None = None, listings: dict | None = None) -> dict:
    """What the stored signals depend on (the attributes' manifest): a retune is possible while these are equal."""
    rules = rules or {s.name: recipe.filter.rules_for(s) for s in recipe.sources}
    listings = listings or {s.name: s.listing() for s in recipe.sources}
    return {
        "tasks": recipe.executor.tasks,
        "sources": {s.name: tag_time_settings(rules[s.name]) for s in recipe.sources},
        "files": {name: listing.files for name, listing in listings.items()},
        "read": recipe.filter.read.model_dump(),  # what is read (and quarantined) depends on the bounds
        "extract": recipe.filter.extract.model_dump(),  # the pages' text depends on the extractor
    }


def retune_problem(attributes: str, recipe) -> str | None:
    """Why ``recipe``'s filter cannot re-apply thresholds to the signals stored in ``attributes`` (None: it can)."""
    try:
        check_retune(os.path.join(attributes, "manifest.json"), tagging_settings(recipe))
    except RetuneError as e:
        return str(e)
    return None


def filter_profile(stats_by_step: dict, steps: list) -> dict:
    """Seconds each part of the filter spent, summed over its tasks (each task is one process on one core, so
    these are core-seconds): reading, extraction, the signals (and per source and family), thresholds, the
    token count, writing; and each part's share. And the requests to object storage retried while reading."""
    part_of = {SourceReader: "read", HtmlExtraction: "extract", StoredExtraction: "extract", SignalTagger: "signals",
               StoredSignals: "signals", ThresholdStep: "thresholds", TokenCountTagger: "tokens", StageRouter: "write"}
    seconds: dict[str, float] = {}
    for step in steps:
        values = step_stats(stats_by_step, step.name)
        part = part_of[type(step)]
        seconds[part] = seconds.get(part, 0.0) + float(values.get(READ_SECONDS if part == "read" else STEP_SECONDS, 0.0))
    families: dict[str, dict[str, float]] = {}
    for key, value in step_stats(stats_by_step, SignalTagger.name).items():
        if key.startswith(SECONDS_STAT):
            src, family = key[len(SECONDS_STAT):].rsplit("/", 1)
            families.setdefault(src, {})[family] = round(float(value), 3)
    total = sum(seconds.values()) or 1.0
    return {"seconds": {k: round(v, 3) for k, v in seconds.items()},
            "share": {k: round(v / total, 4) for k, v in seconds.items()},
            "signals_by_source": families,
            # like the seconds, how this run went (not what it computed): here, not in stats.json
            "store_retries": int(step_stats(stats_by_step, SourceReader.name).get(STORE_RETRIES, 0))}


def check_retune(manifest_path: str, now: dict) -> None:
    if not os.path.exists(manifest_path):
        raise RetuneError(f"{manifest_path}: no stored signals; run `ruyi2 filter` (without --retune) first")
    with open(manifest_path) as f:
        then = json.load(f)
    if then.get("extract", now["extract"]) != now["extract"]:
        raise RetuneError(f"filter.extract changed since the pages were extracted (then {then.get('extract')}, now "
                          f"{now['extract']}): re-run without --retune")
    if then.get("read") != now["read"]:
        raise RetuneError(f"filter.read changed since the signals were stored (then {then.get('read')}, now {now['read']}): "
                          "the bounds decide which records are read; re-run without --retune")
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


SKIPPED_EXAMPLES = 10


def reading_notes(reader_stats: dict, listings: dict) -> dict:
    """Per source: what the reader noted (byte-order marks dropped, reserved fields moved, fields dropped, lone
    surrogates replaced) and the input paths the listing skipped (links out of the source's folders, loops,
    other names of a file already listed, non-regular files), counted, with the first few named."""
    out = {}
    for name, listing in listings.items():
        prefix = f"{NOTE_STAT}{name}/"
        notes = {k[len(prefix):]: int(v) for k, v in sorted(reader_stats.items()) if k.startswith(prefix)}
        out[name] = {"files": len(listing.files), "notes": notes, "skipped_paths": listing.skipped_counts(),
                     "skipped_examples": dict(list(listing.skipped.items())[:SKIPPED_EXAMPLES])}
    return out


def merge_examples(folder: str, per_reason: int) -> dict:
    """The per-rank example files joined, in rank order, up to ``per_reason`` per source and reason."""
    merged: dict[str, dict[str, list]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path, encoding="utf-8") as f:
            for src, reasons in json.load(f).items():
                for reason, docs in reasons.items():
                    kept = merged.setdefault(src, {}).setdefault(reason, [])
                    kept.extend(docs[: per_reason - len(kept)])
    return merged
