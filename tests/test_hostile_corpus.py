"""A hostile corpus through the real command line: the data stages, `report`, `dedup --show-clusters` and
`decontam-check` finish, print corpus text as text, read nothing outside the sources' folders and count
every record."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from pipeline.core.records import BOM
from tests.conftest import read_docs
from tests.corpora import spam_assassin
from tests.realdata import need

pytestmark = pytest.mark.slow  # filter, dedup and decontam on a real corpus, and three more commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "AWS_SECRET_ACCESS_KEY=never-read-this-0123456789"
THANKS = "\nThank you all again for the very helpful answers in this thread, they were much appreciated."
MARKUP = "[/quote] [link=https://evil.example]click[/link] \x1b[2J\x1b[31mred\x1b[0m\r\u202egnp.exe :smile:"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    mails = need(spam_assassin, kinds=("easy-ham",), limit=60)
    lines = [BOM + json.dumps({"id": "first-after-bom", "text": mails[0]["text"]}).encode() + b"\n"]
    for d in mails[1:]:
        lines.append(json.dumps({"id": d["id"], "text": d["text"]}).encode() + b"\n")
    lines += [
        # near-duplicate re-posts whose ids hold markup and escape codes: MinHash clusters the table shows
        *(json.dumps({"id": f"near {i} {MARKUP}", "text": mails[i]["text"] + THANKS}).encode() + b"\n" for i in range(4, 9)),
        # removed (too short): its id and text become the filter's example
        json.dumps({"id": f"short {MARKUP}", "text": f"{MARKUP} too short"}).encode() + b"\n",
        # an input field that would reroute it
        json.dumps({"id": "rerouter", "text": mails[2]["text"] + "\nP.S.", "removed_reason": "x", "quarantine_reason": "y"}).encode() + b"\n",
        ('{"id": "deep", "text": "t", "x": ' + "[" * 1000 + "]" * 1000 + "}\n").encode(),
        ('{"id": "bigint", "text": "t", "n": ' + "9" * 5000 + "}\n").encode(),
        b'{"id": "surrogate", "text": "caf\\ud800e ' + json.dumps(mails[3]["text"])[1:-1].encode() + b'"}\n',
    ]
    (root / "web").mkdir()
    (root / "web" / "mail.jsonl").write_bytes(b"".join(lines))
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    code = root / "code"
    code.mkdir()
    (code / "util.py").write_text("def add(a, b):\n    '''Add two numbers.'''\n    return a + b\n" * 5)
    os.symlink(outside / "secret.txt", code / "leak.txt")
    os.symlink(".", code / "loop")
    os.mkfifo(code / "pipe.txt")
    recipe = {"run_dir": str(root / "run"),
              "sources": [{"name": "web", "paths": [str(root / "web")], "format": "jsonl", "domain": "web"},
                          {"name": "code", "paths": [str(code)], "format": "text", "domain": "code", "language": "python",
                           "file_glob": "*"}],
              "executor": {"tasks": 2, "workers": 2}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (root / "records").write_text(str(len(lines)))
    return root


def _ruyi2(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RUYI2_DEBUG",)} | {"COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=900)


def _shown_as_text(out: str) -> None:
    assert "\x1b" not in out and "\u202e" not in out and "\r" not in out, "a control character reached the terminal"
    assert "\\x1b" in out and "\\u202e" in out  # shown as its escape


@pytest.fixture(scope="module")
def ran(corpus):
    done = _ruyi2("run", str(corpus / "recipe.yaml"), "--to", "decontam")
    assert done.returncode == 0, done.stderr[-3000:]
    return corpus, done


def test_the_data_stages_finish_and_count_every_record(ran):
    corpus, done = ran
    run = corpus / "run"
    stats = json.loads((run / "filter" / "stats.json").read_text())
    web = stats["sources"]["web"]
    assert web["in"]["docs"] == int((corpus / "records").read_text()) and web["in"]["docs"] == web["kept"]["docs"] + web["removed"]["docs"] + web["quarantined"]["docs"]
    assert web["quarantined"]["reasons"] == {"number_too_large": 1, "too_deeply_nested": 1}
    reading = stats["reading"]
    assert reading["web"]["notes"] == {"bom_stripped": 1, "lone_surrogates_replaced": 1, "reserved_fields_moved": 1}
    assert reading["code"]["files"] == 1
    assert reading["code"]["skipped_paths"] == {"link_loop": 1, "link_outside_root": 1, "not_a_regular_file": 1}
    docs = {d["id"]: d for d in read_docs(str(run / "filter" / "output")) + read_docs(str(run / "filter" / "removed"))}
    assert "web/first-after-bom" in docs
    assert docs["web/rerouter"]["metadata"]["input_fields"] == {"removed_reason": "x", "quarantine_reason": "y"}
    assert docs["web/rerouter"]["metadata"].get("removed_reason") != "x"
    assert docs[f"web/short {MARKUP}"]["metadata"]["removed_reason"] == "sanity:binary"  # the example the table shows
    _shown_as_text(done.stdout)


def test_nothing_outside_the_sources_folders_is_read(ran):
    corpus, _ = ran
    for folder, _, files in os.walk(corpus / "run"):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                assert SECRET.encode() not in f.read(), os.path.join(folder, name)


def test_report_clusters_and_decontam_check_print_corpus_text_as_text(ran):
    corpus, _ = ran
    report = _ruyi2("report", str(corpus / "recipe.yaml"))
    assert report.returncode == 0, report.stderr[-3000:]
    clusters = _ruyi2("dedup", str(corpus / "recipe.yaml"), "--show-clusters")
    assert clusters.returncode == 0, clusters.stderr[-3000:]
    assert "web/near " in clusters.stdout and "[/quote] [link=https://evil.example]" in clusters.stdout  # ids, as text
    assert "\x1b" not in clusters.stdout + report.stdout and "\\x1b" in clusters.stdout
    check = _ruyi2("decontam-check", str(corpus / "web" / "mail.jsonl"), "--out", str(corpus / "check.json"))
    assert check.returncode == 0, check.stderr[-3000:]
    result = json.loads((corpus / "check.json").read_text())
    assert result["records_read"] == int((corpus / "records").read_text()) and result["unreadable_reasons"] == {"number_too_large": 1, "too_deeply_nested": 1}
    assert "\x1b" not in check.stdout + check.stderr
