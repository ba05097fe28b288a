"""A running stage logs its progress (tasks done, documents read, documents/s, time left) from the driver,
on a real datatrove stage; a resumed stage counts its earlier tasks as done but not in the rate."""

import json
import os
import time

from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader

from pipeline.core.config import ExecutorConfig
from pipeline.core.executors import run_steps


class SlowStep(PipelineStep):
    name = "slow"

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            time.sleep(0.05)
            yield doc


def _corpus(folder, files: int, docs: int) -> str:
    os.makedirs(folder)
    for f in range(files):
        with open(os.path.join(folder, f"{f}.jsonl"), "w") as out:
            for d in range(docs):
                out.write(json.dumps({"id": f"{f}-{d}", "text": f"document {d} of file {f}"}) + "\n")
    return str(folder)


def _progress(err: str, name: str) -> list[str]:
    # datatrove replaces loguru's handlers while it runs a task in this process: read what reached stderr
    return [line.split(" - ", 1)[1] for line in err.splitlines() if f" - {name}: " in line and "tasks done" in line]


def test_a_running_stage_logs_tasks_done_documents_and_time_left(tmp_path, capfd):
    data = _corpus(tmp_path / "data", files=4, docs=6)
    cfg = ExecutorConfig(workers=1, progress_interval_s=0.1)
    run_steps(cfg, [JsonlReader(data), SlowStep()], str(tmp_path / "logs"), tasks=4, name="slowstage")
    progress = _progress(capfd.readouterr().err, "slowstage")
    assert any(m.startswith("slowstage: 1/4 tasks done, 6 documents read (") for m in progress), progress
    assert any(m.startswith("slowstage: 3/4 tasks done, 18 documents read (") for m in progress), progress
    assert all("/s), " in m and " left" in m for m in progress)


def test_a_resumed_stage_counts_earlier_tasks_as_done_but_not_in_the_rate(tmp_path, capfd):
    data = _corpus(tmp_path / "data", files=4, docs=6)
    logs = str(tmp_path / "logs")
    run_steps(ExecutorConfig(workers=1, progress_interval_s=60), [JsonlReader(data), SlowStep()], logs, tasks=4, name="s")
    for rank in (2, 3):  # two tasks lost: the resume runs only those
        os.remove(os.path.join(logs, "completions", f"{rank:05d}"))
    capfd.readouterr()
    run_steps(ExecutorConfig(workers=1, progress_interval_s=0.1), [JsonlReader(data), SlowStep()], logs, tasks=4, name="s")
    progress = _progress(capfd.readouterr().err, "s")
    assert any(m.startswith("s: 3/4 tasks done, 6 documents read (") for m in progress), progress
