"""``ruyi2 decontam-check``: an SFT-style dataset checked against all ten benchmarks (six from packages,
four from a user folder in their public formats); nothing is removed, everything found is reported."""

import json

from decontam.benchmarks import load_benchmark
from pipeline.cli import main
from tests.test_decontam_registry import CMMLU_ROWS, write_public_releases


def test_decontam_check_reports_items_in_any_dataset(tmp_path, capsys):
    write_public_releases(tmp_path / "bench")
    # benchmark_dir wins over packages: the items come from the user's files
    gsm, he = load_benchmark("gsm8k", str(tmp_path / "bench"))[1], load_benchmark("humaneval", str(tmp_path / "bench"))[2]
    rows = [
        {"uid": "a", "response": "Sure! Here is the solution.\n\n" + gsm.text.replace("####", "The final answer is")},
        {"uid": "b", "response": "```python\n" + he.text + "\n```"},
        {"uid": "c", "response": "题目：" + CMMLU_ROWS[0][1] + " 选项：礼部尚书、皇帝、宰相、翰林学士。答案：皇帝。"},
        {"uid": "d", "response": "The weather today is pleasant, with a light breeze from the west and a few clouds."},
    ]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    out = tmp_path / "report.json"
    argv = ["decontam-check", str(data), "--benchmark-dir", str(tmp_path / "bench"), "--text-key", "response", "--id-key", "uid", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv + ["--fail-on-match"]) == 1
    report = json.loads(out.read_text())
    assert report["documents_checked"] == 4 and report["documents_affected"] == 3
    b = report["benchmarks"]
    assert set(b["gsm8k"]["items"]) == {gsm.item_id} and b["gsm8k"]["items"][gsm.item_id] == ["a"]
    assert set(b["humaneval"]["items"]) == {he.item_id}
    assert set(b["cmmlu"]["items"]) == {"chinese_history/0"}
    assert b["cmmlu"]["examples"][0]["matched"].startswith(CMMLU_ROWS[0][1][:10])
    assert b["mmlu_pro"]["items_indexed"] == 1 and b["mmlu_pro"]["items_found"] == 0
    assert report["index"]["benchmarks_skipped"] == {}
    assert all(r["actions"] in ({}, {"flag": 1}) for r in b.values())
    printed = capsys.readouterr().out
    assert "3 of 4 documents contain benchmark n-grams" in printed and "cmmlu" in printed


def test_every_record_is_checked_or_named(tmp_path, capsys):
    """Malformed lines, non-objects, missing or empty texts are never skipped silently (datatrove's readers
    log and drop them): each is checked or named in the report, and the counts add up."""
    gsm = load_benchmark("gsm8k")[0]
    lines = [json.dumps({"id": "hit", "text": "Question of the day: " + gsm.text}), '{"id": "cut", "text": "trunc',
             json.dumps([1, 2]), json.dumps({"id": "notext", "body": "x"}), json.dumps({"id": "empty", "text": ""}),
             json.dumps({"id": "clean", "text": "An ordinary sentence about gardens and rain."})]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    assert main(["decontam-check", str(data), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["records_read"] == 6 == r["documents_checked"] + r["records_unreadable"]
    assert r["documents_checked"] == 3 and r["documents_affected"] == 1  # hit, empty, clean
    assert r["unreadable_reasons"] == {"malformed_json": 1, "not_a_json_object": 1, "no string field 'text'": 1}
    assert [e["record"] for e in r["unreadable_examples"]] == [f"{data}:2", f"{data}:3", f"{data}:4"]
    assert "3 of 6 records could not be checked" in capsys.readouterr().err
