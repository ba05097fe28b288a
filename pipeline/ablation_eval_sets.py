"""The evaluation sets a pipeline ablation scores every arm on (``ablation.eval_sets``): clean text named by the
user, read like a source (any input format, the reader's bounds, bad records quarantined and counted) and
tokenized once into one Megatron prefix per set under ``RUN_DIR/ablate/eval_sets/``, with the run's tokenizer
and end-of-document token, as the tokenize stage writes a held-out prefix. No filter runs on them: they are the
yardstick, not training data."""

from __future__ import annotations

import json
import os
import shutil

from mixtures.ablation.ablate import AblationError
from mixtures.megatron_writer import MegatronPartWriter, merge_parts, token_dtype
from pipeline.core.accounting import read_stats
from pipeline.core.atomic import write_json
from pipeline.core.config import ExecutorConfig
from pipeline.core.executors import run_steps, step_stats
from pipeline.core.sources import QUARANTINE_STAT, READ_STAT, SourceReader

FOLDER = "eval_sets"


def eval_set_prefixes(recipe, root: str) -> dict[str, str]:
    """name -> token prefix of every evaluation set, tokenized now unless an earlier ablation did it with the same
    sets and tokenizer (``stats.json``, written last, records what was tokenized and how many documents)."""
    cfg = recipe.ablation
    folder = os.path.join(root, FOLDER)
    prefixes = {e.name: os.path.join(folder, f"{e.name}_text_document") for e in cfg.eval_sets}
    made_from = {"eval_sets": [e.model_dump(mode="json") for e in cfg.eval_sets],
                 "tokenizer": recipe.tokenizer.model_dump(mode="json")}
    done = os.path.join(folder, "stats.json")
    if os.path.exists(done) and read_stats(done)["made_from"] == json.loads(json.dumps(made_from)):
        return prefixes
    shutil.rmtree(folder, ignore_errors=True)  # inside RUN_DIR/ablate, which the ablation owns
    sources = [e.as_source() for e in cfg.eval_sets]
    parts = os.path.join(folder, "parts")
    steps = [SourceReader(sources, os.path.join(folder, "quarantine")),
             MegatronPartWriter(recipe.tokenizer.path, parts, recipe.tokenizer.eos_token, recipe.tokenizer.batch_size)]
    stats = run_steps(ExecutorConfig(kind="local", tasks=1, workers=1), steps, os.path.join(folder, "logs"), 1, "eval_sets")
    read, written = step_stats(stats, SourceReader.name), step_stats(stats, MegatronPartWriter.name)
    counts = {}
    for e in cfg.eval_sets:
        docs = int(written.get(f"docs/{e.name}", 0))
        counts[e.name] = {"read": int(read.get(READ_STAT + e.name, 0)), "quarantined": int(read.get(QUARANTINE_STAT + e.name, 0)),
                          "docs": docs, "tokens": int(written.get(f"tokens/{e.name}", 0))}
        if counts[e.name]["read"] != docs + counts[e.name]["quarantined"]:  # every record read is written or quarantined
            raise AblationError(f"ablation.eval_sets: {e.name!r}: {counts[e.name]['read']} records read, {docs} tokenized, "
                                f"{counts[e.name]['quarantined']} quarantined")
        if docs == 0:
            raise AblationError(f"ablation.eval_sets: {e.name!r} has no document to score on (read {counts[e.name]['read']}, "
                                f"quarantined {counts[e.name]['quarantined']}: {os.path.join(folder, 'quarantine')})")
        merge_parts(parts, e.name, prefixes[e.name], token_dtype(recipe.tokenizer.path))
    shutil.rmtree(parts)
    write_json(done, {"made_from": made_from, "sets": counts}, indent=1, sort_keys=True)
    return prefixes

