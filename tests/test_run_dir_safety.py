"""Nothing deleted or overwritten that the run did not create, nothing executed that the user did not ask
for: the run-directory marker, kept checkpoints, the recipe copy, --resume with a changed recipe, the run lock
on every writing command, export --overwrite, atomic completion files, metrics.jsonl, foreign model code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml

from pipeline.cli import main
from pipeline.core.accounting import write_stats
from pipeline.core.atomic import atomic_open, write_json
from pipeline.core.layout import RUN_MARKER, RunDirError, RunLayout, claim_run_dir
from pipeline.recipe import RecipeError, dump_recipe, load_recipe
from pipeline.runner import check_start
from train_entry.metrics import MetricsLog, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _recipe(tmp_path, run_dir, name="recipe.yaml", **extra) -> str:
    (tmp_path / "in.jsonl").write_text('{"text": "hello"}\n')
    data = {"run_dir": str(run_dir), "sources": [{"name": "web", "paths": [str(tmp_path / "in.jsonl")], "format": "jsonl",
                                                  "domain": "web"}],
            "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}]}, **extra}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _snapshot(folder) -> dict:
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = (fh.read(), os.stat(p).st_mtime_ns)
    return out


def _marked_run(tmp_path) -> str:
    run = str(tmp_path / "run")
    claim_run_dir(run)
    return run


def test_a_folder_holding_user_files_is_refused_and_left_exactly_as_it_was(tmp_path, capsys):
    project = tmp_path / "project"
    (project / "train").mkdir(parents=True)
    (project / "train" / "notes.txt").write_text("my notes")
    (project / "filter").mkdir()
    (project / "filter" / "rules.py").write_text("print('mine')\n")
    before = _snapshot(project)
    assert main(["run", _recipe(tmp_path, project), "--to", "filter"]) == 1
    err = capsys.readouterr().err
    assert f"run_dir {project} is not empty and not a ruyi2 run directory (it holds filter, train)" in err
    assert _snapshot(project) == before and sorted(os.listdir(project)) == ["filter", "train"]  # not even a lock file


def test_run_dir_dot_beside_the_recipe_is_refused_and_the_recipe_untouched(tmp_path, capsys):
    path = _recipe(tmp_path, ".")
    before = _snapshot(tmp_path)
    assert main(["run", path]) == 1
    assert "is not empty and not a ruyi2 run directory" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_a_new_or_empty_folder_is_claimed_and_a_marked_one_taken_as_it_is(tmp_path):
    claim_run_dir(str(tmp_path / "new"))
    (tmp_path / "empty").mkdir()
    claim_run_dir(str(tmp_path / "empty"))
    assert os.path.isfile(tmp_path / "new" / RUN_MARKER) and os.path.isfile(tmp_path / "empty" / RUN_MARKER)
    (tmp_path / "new" / "filter").mkdir()
    claim_run_dir(str(tmp_path / "new"))  # a run directory with stage folders: ours


def test_a_stage_folder_is_emptied_only_inside_a_marked_run_directory(tmp_path):
    from pipeline.core.layout import RunDirError

    (tmp_path / "unmarked" / "filter").mkdir(parents=True)
    (tmp_path / "unmarked" / "filter" / "x").write_text("kept")
    with pytest.raises(RunDirError, match="not emptied"):
        RunLayout(str(tmp_path / "unmarked")).fresh_stage("filter")
    assert (tmp_path / "unmarked" / "filter" / "x").read_text() == "kept"


def test_the_runs_own_recipe_copy_is_never_written_over(tmp_path):
    run = _marked_run(tmp_path)
    path = _recipe(tmp_path, ".", name="run/recipe.yaml")  # the recipe kept in its run directory, run again
    before = _snapshot(run)
    time.sleep(0.01)
    dump_recipe(load_recipe(path), path)
    assert _snapshot(run) == before
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump({"executor": {"workers": 1}}))
    with pytest.raises(RecipeError, match="the run's own copy of its recipe"):
        dump_recipe(load_recipe(path, patch=str(tmp_path / "patch.yaml")), path)
    assert _snapshot(run) == before


def _crashed_training(run: str) -> str:
    ckpt = os.path.join(run, "train", "checkpoint", "iter_0000004")
    os.makedirs(ckpt)
    with open(os.path.join(ckpt, "common.pt"), "wb") as f:
        f.write(b"weights")
    with open(os.path.join(run, "train", "checkpoint", "latest_checkpointed_iteration.txt"), "w") as f:
        f.write("4\n")
    return ckpt


def test_train_without_resume_after_a_crash_keeps_the_checkpoints(tmp_path, capsys):
    run = _marked_run(tmp_path)
    ckpt = _crashed_training(run)
    before = _snapshot(os.path.join(run, "train"))
    path = _recipe(tmp_path, run)
    assert main(["train", path]) == 1
    err = capsys.readouterr().err
    assert f"{os.path.join(run, 'train', 'checkpoint')} (checkpoints)" in err and "--resume" in err and "--restart" in err
    assert _snapshot(os.path.join(run, "train")) == before and os.path.isdir(ckpt)
    # the whole flow is refused before its first stage, not when it reaches train
    assert main(["run", path]) == 1 and not os.path.exists(os.path.join(run, "filter"))
    recipe = load_recipe(path)
    check_start(recipe, ["train"], RunLayout(run), resume=False, restart=True)  # asked for: allowed
    check_start(recipe, ["train"], RunLayout(run), resume=True, restart=False)


def test_ablate_without_resume_keeps_an_earlier_ablations_proxy_runs(tmp_path, capsys):
    from mixtures.ablation.ablate import AblationError, run_ablation

    run = _marked_run(tmp_path)
    proxy = os.path.join(run, "ablate", "runs", "cand-000-s0")
    os.makedirs(proxy)
    with open(os.path.join(proxy, "result.json"), "w") as f:
        f.write("{}")
    before = _snapshot(os.path.join(run, "ablate"))
    path = _recipe(tmp_path, run, ablation={})
    assert main(["ablate", path]) == 1
    err = capsys.readouterr().err
    assert f"{os.path.join(run, 'ablate', 'runs')} (proxy runs" in err and "--resume" in err and "--restart" in err
    assert _snapshot(os.path.join(run, "ablate")) == before
    with pytest.raises(SystemExit):  # the two are one choice on the command line
        main(["ablate", path, "--resume", "--restart"])
    # asked for: the check passes (and the ablation stops at its missing input, the tokenize stage's output)
    with pytest.raises(AblationError, match="tokenize"):
        run_ablation(load_recipe(path), RunLayout(run), {}, None, 0.0, restart=True)
    assert _snapshot(os.path.join(run, "ablate")) == before


def test_init_from_inside_the_folder_the_train_stage_empties_is_refused(tmp_path):
    from train_entry.stage import TrainStage

    layout = RunLayout(_marked_run(tmp_path))
    inside = SimpleNamespace(train=SimpleNamespace(init_from=SimpleNamespace(path=os.path.join(layout.stage("train"), "hf"))))
    problems = TrainStage().start_problems(inside, layout, resume=False, restart=True)
    assert len(problems) == 1 and problems[0].startswith("train.init_from:") and "empties" in problems[0]
    assert TrainStage().start_problems(inside, layout, resume=True, restart=False) == []
    outside = SimpleNamespace(train=SimpleNamespace(init_from=SimpleNamespace(path=str(tmp_path / "base"))))
    assert TrainStage().start_problems(outside, layout, resume=False, restart=True) == []


def test_resume_with_a_changed_recipe_names_the_keys_and_runs_nothing(tmp_path, capsys):
    run = _marked_run(tmp_path)
    dump_recipe(load_recipe(_recipe(tmp_path, run)), os.path.join(run, "recipe.yaml"))
    changed = _recipe(tmp_path, run, name="changed.yaml", filter={"rules": {"c4": {"enabled": False}}},
                      executor={"workers": 1})
    assert main(["filter", changed, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "filter.rules.c4.enabled" in err and "executor" not in err.split("in ", 1)[1].split(";")[0]
    assert not os.path.exists(os.path.join(run, "filter"))
    # the executor may change on resume, and what changes no stage's output: the ablation section, where the
    # training data are published and read from; the rest of the mixture and train sections may not
    mixture = {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}], "publish": {"url": "s3://bucket/run"}}
    same = _recipe(tmp_path, run, name="same.yaml", executor={"workers": 1}, ablation={"kind": "pipeline", "leave_one_out": ["c4"]},
                   mixture=mixture, train={"data_from": "published"})
    check_start(load_recipe(same), ["filter"], RunLayout(run), resume=True, restart=False)
    mixture["stages"][0]["tokens"] = 2000
    other = _recipe(tmp_path, run, name="other.yaml", mixture=mixture, train={"data_from": "published", "steps": 3})
    with pytest.raises(RunDirError, match=r"in mixture\.stages\[0\]\.tokens, train\.steps;"):
        check_start(load_recipe(other), ["filter"], RunLayout(run), resume=True, restart=False)


HOLD = "import sys, time; from pipeline.core.run_lock import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)"


@pytest.fixture
def held_run(tmp_path):
    """A run directory whose lock another process holds."""
    run = _marked_run(tmp_path)
    os.makedirs(os.path.join(run, "train"))
    write_json(os.path.join(run, "train", "stats.json"), {"stage": "train"})
    holder = subprocess.Popen([sys.executable, "-c", HOLD, run], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "held"
    yield run
    holder.kill()
    holder.wait()


@pytest.mark.parametrize("command", ["compress", "eval", "add", "ablate"])
def test_every_command_that_writes_into_a_run_directory_takes_its_lock(tmp_path, held_run, capsys, command):
    path = _recipe(tmp_path, held_run, ablation={})
    before = _snapshot(held_run)
    argv = {"compress": ["compress", held_run], "eval": ["eval", held_run, "--limit", "1"],
            "add": ["add", path, f"web={tmp_path / 'in.jsonl'}"], "ablate": ["ablate", path]}[command]
    assert main(argv) == 1
    assert "another ruyi2 run is working in this run directory" in capsys.readouterr().err
    assert _snapshot(held_run) == before


def test_report_beside_a_working_run_prints_and_writes_nothing(tmp_path, held_run, capsys):
    os.remove(os.path.join(held_run, "train", "stats.json"))  # a run that has not trained yet
    assert main(["report", _recipe(tmp_path, held_run), "--html"]) == 0
    assert "not written: report.json and report.html" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(held_run, "report.json"))


def test_export_into_a_non_empty_folder_needs_overwrite_which_replaces_only_export_files(tmp_path):
    from train_entry.export import ExportError, export_run
    from train_entry.hf_folder import remove_export_files

    run = _marked_run(tmp_path)
    os.makedirs(os.path.join(run, "train"))
    write_json(os.path.join(run, "train", "stats.json"), {})
    out = tmp_path / "out"
    out.mkdir()
    for name in ("model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json", "config.json",
                 "tokenizer.json", "README.md", "notes.txt"):
        (out / name).write_text(name)
    with pytest.raises(ExportError, match="--overwrite"):
        export_run(run, str(out))
    assert len(os.listdir(out)) == 7
    removed = remove_export_files(str(out))
    assert sorted(os.listdir(out)) == ["README.md", "notes.txt"] and len(removed) == 5


def test_an_interrupted_atomic_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "stats.json"
    write_json(path, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write('{"version": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"version": 1} and os.listdir(tmp_path) == ["stats.json"]


WRITER = """
import sys
from pipeline.core.accounting import write_stats
big = {"sources": {f"s{i}": {"docs": i, "text": "x" * 2000} for i in range(2000)}}
n = 0
while True:
    n += 1
    write_stats(sys.argv[1], {**big, "n": n})
"""


def test_a_stats_file_killed_mid_write_is_whole_or_absent(tmp_path):
    """SIGKILL at arbitrary moments of a loop rewriting a 4 MB stats.json: every time, the file left is whole."""
    path = tmp_path / "stats.json"
    seen = set()
    for delay in (0.0, 0.01, 0.023, 0.05, 0.071, 0.1):
        before = json.loads(path.read_text())["n"] if path.exists() else None
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT)
        deadline = time.monotonic() + 60  # the writer's first write (start-up takes longer on a loaded machine)
        while (not path.exists() or json.loads(path.read_text())["n"] == before) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)  # then somewhere in a later write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if path.exists():
            seen.add(json.loads(path.read_text())["n"])  # never a truncated file
    assert seen  # the writer got to write in these runs
    # a killed writer may leave its temporary file (never under the final name); the next write is whole too
    assert all(f == "stats.json" or (f.startswith(".stats.json.") and f.endswith(".tmp")) for f in os.listdir(tmp_path))
    write_stats(str(path), {"n": 0})
    assert json.loads(path.read_text()) == {"n": 0}


def test_metrics_are_appended_and_a_torn_last_line_is_tolerated(tmp_path):
    rows = [{"step": s, "loss": {"exit0": 1.0 / s}} for s in range(1, 6)]
    body = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_text(body + '{"step": 6, "lo')  # killed while writing step 6
    kept, keep_bytes = read_metrics(str(tmp_path / "metrics.jsonl"), up_to_step=4)  # the checkpoint is at step 4
    assert kept == rows[:4] and keep_bytes == len("".join(json.dumps(r) + "\n" for r in rows[:4]).encode())
    log = MetricsLog(str(tmp_path), True, keep_bytes, tensorboard=False)
    log._file.write(json.dumps({"step": 5, "loss": {"exit0": 0.5}}) + "\n")
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5]
    assert read_metrics(str(tmp_path / "missing.jsonl"), 3) == ([], 0)


def _hf_folder(folder, auto_map=None, files=None) -> str:
    os.makedirs(folder, exist_ok=True)
    config = {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]} | ({"auto_map": auto_map} if auto_map else {})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    for name, text in (files or {}).items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    return str(folder)


def test_eval_refuses_a_folder_whose_code_would_run_and_runs_none_of_it(tmp_path):
    from train_entry.evaluate import OUR_MODELING, EvalError, EvalOptions, evaluate_model, remote_code

    marker = tmp_path / "imported"
    evil = _hf_folder(tmp_path / "evil", {"AutoModelForCausalLM": "evil.EvilModel"},
                      {"evil.py": f"open({str(marker)!r}, 'w').write('ran')\nclass EvilModel: pass\n", "tokenizer.json": "{}"})
    with pytest.raises(EvalError, match="--trust-remote-code"):
        evaluate_model(evil, str(tmp_path / "out"), EvalOptions(tasks=("arc_challenge",), limit=1))
    assert not marker.exists() and not os.path.exists(tmp_path / "out")
    hub = _hf_folder(tmp_path / "hub", {"AutoModelForCausalLM": "someorg/somerepo--modeling.Model"})
    with pytest.raises(EvalError, match="auto_map"):
        remote_code(hub, trust=False)
    assert remote_code(hub, trust=True) is True  # the user's explicit choice
    assert remote_code(_hf_folder(tmp_path / "plain"), trust=False) is False  # a plain Qwen3 runs no code
    ours = {n: open(os.path.join(OUR_MODELING, n)).read() for n in ("configuration_ruyi_qwen3.py", "modeling_ruyi_qwen3.py")}
    our_map = {"AutoConfig": "configuration_ruyi_qwen3.RuyiQwen3Config",
               "AutoModelForCausalLM": "modeling_ruyi_qwen3.RuyiQwen3ForCausalLM"}
    assert remote_code(_hf_folder(tmp_path / "export", our_map, ours), trust=False) is True
    changed = dict(ours, **{"modeling_ruyi_qwen3.py": ours["modeling_ruyi_qwen3.py"] + "\nimport os\n"})
    with pytest.raises(EvalError):
        remote_code(_hf_folder(tmp_path / "changed", our_map, changed), trust=False)


def test_a_worker_error_prints_one_line_and_its_stack_with_debug(tmp_path, capsys, monkeypatch):
    run = _marked_run(tmp_path)
    os.makedirs(os.path.join(run, "train"))
    write_json(os.path.join(run, "train", "stats.json"), {"model": {"exits": [1], "not_a_field": 1}})  # the job fails on it
    out = tmp_path / "out"
    monkeypatch.delenv("RUYI2_DEBUG", raising=False)
    assert main(["export", run, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and err.startswith(f"error: export of {run}: TypeError") and "--debug" in err
    log = out / "ruyi2-export.error.log"
    assert "Traceback" in log.read_text() and "trained_config" in log.read_text()
    assert main(["--debug", "export", run, "--out", str(out), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "trained_config" in err
