"""``ruyi2 eval``: benchmark accuracy of every exit, on a run's trained (or compressed) model or on any
Hugging Face folder (an export of ours, or a plain Qwen3).

ARC-Challenge, HellaSwag and MMLU are scored by log-likelihood (``acc``: the most likely option;
``acc_norm``: per character, OLMES' primary metric for the first two), GSM8K by exact match of the number
in a greedy chain of thought; each metric with its standard error, per exit (``eval_tasks.py`` for the
items, ``eval_scoring.py`` for the scoring). Writes ``results.json`` (metrics, what was evaluated),
``items.parquet`` (one row per item per exit: the option log-likelihoods or the generation, the prediction)
and ``timing.json``. The model runs in a spawned process, as export and compression do. The same
``evaluate_items`` scores ablation proxies (``ablation.target.benchmark``).
"""

from __future__ import annotations

import hashlib
import math
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

from pipeline.core.atomic import write_json
from pipeline.core.errors import StageError
from pipeline.core.printable import printable
from pipeline.core.records import read_json_file
from train_entry.eval_tasks import PRIMARY_METRIC, TASKS, Generation, item_json, load_task
from train_entry.spawned import run_spawned

RESULTS, ITEMS, TIMING = "results.json", "items.parquet", "timing.json"


class EvalError(StageError):
    pass


@dataclass(frozen=True)
class EvalOptions:
    tasks: tuple[str, ...] = tuple(TASKS)
    limit: int | None = None  # items per task (a fixed spread-out subset); None = all
    mmlu_shots: int = 5
    max_new_tokens: int = 256  # GSM8K generation
    batch_tokens: int = 2048  # tokens per forward (bounds the logits held at once)
    exits: tuple[int, ...] | None = None  # None = every exit of the model

    def check(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise EvalError(f"--tasks {','.join(self.tasks)}: unknown {unknown}; known: {', '.join(TASKS)}")
        if self.limit is not None and self.limit < 1:
            raise EvalError(f"--limit {self.limit}: at least 1 item per task")
        if self.max_new_tokens < 1 or self.batch_tokens < 1:
            raise EvalError("--max-new-tokens and --batch-tokens must be positive")


def _mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n)), as lm-evaluation-harness reports."""
    if len(values) < 2:
        return statistics.fmean(values), float("nan")
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def _argmax(values: list[float]) -> int:
    return int(np.argmax(values))  # the first of equal maxima, as lm-evaluation-harness (numpy) picks


def evaluate_items(scorer, tokenizer, eos: int, items_by_task: dict[str, list], options: EvalOptions) -> tuple[dict, list[dict]]:
    """(metrics per task per exit, one row per item per exit)."""
    from train_entry.eval_scoring import encode_pair, extract_number, greedy_generate, loglikelihoods, same_number

    exits = tuple(options.exits or scorer.exits)
    tasks, rows = {}, []
    for task, items in items_by_task.items():
        correct: dict[int, dict[str, list[float]]] = {e: {} for e in exits}
        if isinstance(items[0], Generation):
            gens = greedy_generate(scorer, tokenizer, [it.context for it in items], [it.stop for it in items], eos,
                                   options.max_new_tokens, options.batch_tokens, exits)
            for e in exits:
                for it, text in zip(items, gens[e]):
                    pred = extract_number(text)
                    ok = float(same_number(pred, it.answer))
                    correct[e].setdefault("exact_match", []).append(ok)
                    rows.append({"task": task, "item_id": it.item_id, "exit": f"exit{e}", "gold": it.answer,
                                 "prediction": pred or "", "correct": ok, "generation": text, "loglikelihoods": None})
        else:
            requests, owner = [], []
            for k, it in enumerate(items):
                for c in it.choices:
                    requests.append(encode_pair(tokenizer, it.context, c))
                    owner.append(k)
            ll = loglikelihoods(scorer, requests, eos, options.batch_tokens, exits)
            for e in exits:
                per_item: list[list[float]] = [[] for _ in items]
                for (value, _greedy), k in zip(ll[e], owner):
                    per_item[k].append(value)
                for it, lls in zip(items, per_item):
                    pred = _argmax(lls)
                    pred_norm = _argmax([v / len(c) for v, c in zip(lls, it.choices)])
                    correct[e].setdefault("acc", []).append(float(pred == it.gold))
                    correct[e].setdefault("acc_norm", []).append(float(pred_norm == it.gold))
                    rows.append({"task": task, "item_id": it.item_id, "exit": f"exit{e}", "gold": str(it.gold),
                                 "prediction": str(pred), "correct": float(pred == it.gold), "generation": None,
                                 "loglikelihoods": [round(v, 6) for v in lls]})
        per_exit = {}
        for e in exits:
            metrics = {}
            for name, values in correct[e].items():
                metrics[name], metrics[f"{name}_stderr"] = (round(v, 6) for v in _mean_stderr(values))
            per_exit[f"exit{e}"] = metrics
        tasks[task] = {"n": len(items), "primary_metric": PRIMARY_METRIC[task], "exits": per_exit,
                       "items_sha256": hashlib.sha256("\n".join(map(item_json, items)).encode()).hexdigest()}
    return tasks, rows


def load_items(options: EvalOptions) -> dict[str, list]:
    from train_entry.eval_tasks import EvalTaskError

    try:
        return {t: load_task(t, options.limit, options.mmlu_shots) for t in options.tasks}
    except EvalTaskError as e:
        raise EvalError(str(e)) from None


# ------------------------------------------------------------------------------------------- the models
def _run_scorer(run_dir: str, compressed: bool, tokenizer: tuple[str, str] | None = None):
    """(scorer, tokenizer, eos, what was read) for a run's model (``tokenizer``: (tokenizer.json, end-of-document
    token), default: the run's recorded recipe's); call inside a ``DistributedContext``."""
    from pipeline.core.tokens import load_tokenizer, token_id
    from train_entry.eval_scoring import MegatronScorer
    from train_entry.export import run_tokenizer
    from train_entry.hf_interop import context_length
    from train_entry.run_model import checkpoint_dae_blocks, rebuild, run_checkpoint, trained_config

    tok = tokenizer or run_tokenizer(run_dir)
    if tok is None:
        raise EvalError(f"{run_dir}/recipe.yaml: no tokenizer.path recorded")
    fcfg = trained_config(run_dir)
    checkpoint, ranks = run_checkpoint(run_dir, compressed)
    model, read = rebuild(fcfg, checkpoint, checkpoint_dae_blocks(checkpoint), ranks)
    model.eval()
    return MegatronScorer(model, tuple(fcfg.exits), context_length(fcfg)), load_tokenizer(tok[0]), token_id(*tok), read


def score_run(run_dir: str, options: EvalOptions, compressed: bool = False, tokenizer: tuple[str, str] | None = None):
    """(metrics per task per exit, item rows, checkpoint read) of a run's model, in this process (an ablation
    proxy scores itself this way right after training)."""
    from train_entry.distributed import DistributedContext

    options.check()
    items = load_items(options)
    with DistributedContext():
        scorer, tok, eos, read = _run_scorer(run_dir, compressed, tokenizer)
        _check_exits(options, scorer)
        tasks, rows = evaluate_items(scorer, tok, eos, items, options)
    return tasks, rows, read


def _check_exits(options: EvalOptions, scorer) -> None:
    if options.exits and (bad := sorted(set(options.exits) - set(scorer.exits))):
        raise EvalError(f"--exits {bad}: the model's exits are {list(scorer.exits)}")


OUR_MODELING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_modeling")


def _auto_map_refs(auto_map: dict) -> list[str]:
    refs = []
    for value in auto_map.values():
        refs += [v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, str)]
    return refs


def remote_code(folder: str, trust: bool) -> bool:
    """Whether loading the Hugging Face folder runs Python code from it (``trust_remote_code``). A config without
    ``auto_map`` (a plain Qwen3) needs none. Code runs only if it is ruyi2's own modeling code, byte for byte
    (what ``ruyi2 export`` writes), or the user passed ``--trust-remote-code``; anything else is refused before
    transformers imports it. An ``auto_map`` naming another repository (``org/repo--module.Class``) would fetch
    code from the hub: loading is local-only, and that is refused too unless trusted."""
    config = read_json_file(os.path.join(folder, "config.json"), EvalError)
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not auto_map:
        return False
    if trust:
        return True
    refs = _auto_map_refs(auto_map) if isinstance(auto_map, dict) else []
    modules = {ref.split(".")[0] for ref in refs}
    ours = sorted(n.removesuffix(".py") for n in os.listdir(OUR_MODELING) if n.endswith(".py") and n != "__init__.py")

    def same(module: str) -> bool:
        theirs = os.path.join(folder, module + ".py")
        if not os.path.isfile(theirs) or os.path.islink(theirs):
            return False
        with open(theirs, "rb") as a, open(os.path.join(OUR_MODELING, module + ".py"), "rb") as b:
            return a.read() == b.read()

    if refs and all("--" not in r for r in refs) and modules <= set(ours) and all(same(m) for m in ours):
        return True
    raise EvalError(f"{folder}: its config.json names Python code to run on load (auto_map: {printable(auto_map, 300)}), "
                    "which is not ruyi2's own modeling code byte for byte; loading it would execute that code. Pass "
                    "--trust-remote-code if you trust this folder")


def _hf_scorer(folder: str, trust_remote_code: bool = False):
    trust = remote_code(folder, trust_remote_code)  # before transformers imports anything from the folder
    os.environ["HF_HUB_OFFLINE"] = "1"  # this spawned process only: nothing is fetched from a hub
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from train_entry.eval_scoring import HFScorer

    tok_file = os.path.join(folder, "tokenizer.json")
    if not os.path.exists(tok_file):
        raise EvalError(f"{folder}: no tokenizer.json (an export of ours writes one)")
    from train_entry.devices import compute_device

    device = compute_device()  # bf16 on a GPU (as it was trained and exported), fp32 on a CPU
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust, local_files_only=True,
                                                 dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = model.to(device).eval()
    cfg = model.config
    exits = tuple(getattr(cfg, "early_exit_points", None) or [cfg.num_hidden_layers - 1])
    gen = getattr(model, "generation_config", None)
    eos = next((v for v in (getattr(gen, "eos_token_id", None), cfg.eos_token_id) if v is not None), None)
    eos = eos[0] if isinstance(eos, list) else eos
    if eos is None:
        raise EvalError(f"{folder}: no eos_token_id in generation_config.json or config.json")
    scorer = HFScorer(model, exits, int(cfg.max_position_embeddings), familial=hasattr(cfg, "early_exit_points"))
    return scorer, Tokenizer.from_file(tok_file), int(eos), folder


def _evaluate(source: dict, out: str, options: EvalOptions) -> dict:
    """The evaluation job (in a spawned process)."""
    import polars as pl
    import torch

    torch.manual_seed(0)
    started = time.perf_counter()
    if source["kind"] == "run":
        tasks, rows, read = score_run(source["path"], options, source["compressed"])
    else:
        items = load_items(options)
        scorer, tokenizer, eos, read = _hf_scorer(source["path"], source.get("trust_remote_code", False))
        _check_exits(options, scorer)
        tasks, rows = evaluate_items(scorer, tokenizer, eos, items, options)
    seconds = time.perf_counter() - started
    os.makedirs(out, exist_ok=True)
    result = {"model": read, "tasks": tasks, "limit": options.limit, "mmlu_shots": options.mmlu_shots,
              "max_new_tokens": options.max_new_tokens}
    write_json(os.path.join(out, RESULTS), result, indent=1, sort_keys=True)
    pl.DataFrame(rows, schema={"task": pl.Utf8, "item_id": pl.Utf8, "exit": pl.Utf8, "gold": pl.Utf8, "prediction": pl.Utf8,
                               "correct": pl.Float64, "generation": pl.Utf8, "loglikelihoods": pl.List(pl.Float64)}
                 ).write_parquet(os.path.join(out, ITEMS), statistics=False)
    write_json(os.path.join(out, TIMING), {"seconds": round(seconds, 2), "items": sum(t["n"] for t in tasks.values())}, indent=1)
    return result


def evaluate_model(path: str, out: str | None = None, options: EvalOptions = EvalOptions(), compressed: bool = False,
                   trust_remote_code: bool = False) -> tuple[str, dict]:
    """Evaluate a run (``path`` = RUN_DIR: its trained model, or its compressed one) or a Hugging Face folder;
    returns (output folder, results). A run's results go to RUN_DIR/eval/{train,compress} unless ``out``."""
    options.check()
    if os.path.exists(os.path.join(path, "train", "stats.json")):
        source = {"kind": "run", "path": path, "compressed": compressed}
        out = out or os.path.join(path, "eval", "compress" if compressed else "train")
    elif os.path.exists(os.path.join(path, "config.json")):
        if compressed:
            raise EvalError("--compressed applies to a run folder, not to a Hugging Face folder")
        if not out:
            raise EvalError(f"{path} is a Hugging Face folder: name where the results go with --out")
        source = {"kind": "hf", "path": path, "trust_remote_code": trust_remote_code}
        remote_code(path, trust_remote_code)  # refused here, before a process is spawned
    else:
        raise EvalError(f"{path}: neither a run folder (train/stats.json) nor a Hugging Face folder (config.json)")
    return out, run_spawned(_evaluate, (source, out, options), "ruyi2-eval", EvalError, f"evaluation of {path}", out)
