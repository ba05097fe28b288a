"""A weeks-long run's safeguards: a step with NaN gradients or a loss spike is skipped or stops the run (the
weights untouched), checkpoints are retained by count, random generators are saved and restored, and SIGTERM
makes `ruyi2 train` save a checkpoint and stop, from which --resume continues."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.test_train_entry import _micro_batch, _trainer
from train_entry import checkpointing
from train_entry.step_guard import GuardSettings, StepGuard


def test_the_guard_names_nonfinite_steps_spikes_and_too_many_skips():
    guard = StepGuard(GuardSettings(nonfinite="skip", loss_spike=2.0, spike_window=10, max_skips=2), final_exit=5)
    for step, loss in enumerate([4.0, 3.9, 4.1, 3.8, 4.0, 3.7]):
        assert guard.verdict(step, {2: loss + 1, 5: loss}, True) is None
    spike = guard.verdict(6, {2: 9.0, 5: 8.5}, True)  # over 2 x the median (3.95)
    assert (spike.reason, spike.action) == ("loss_spike", "skip") and "median 3.9500" in spike.detail
    assert guard.verdict(7, {2: 5.0, 5: 4.0}, False).reason == "nonfinite_gradients"
    last = guard.verdict(8, {2: math.nan, 5: 4.0}, True)  # the third skip in a row
    assert (last.reason, last.action) == ("too_many_skips", "stop") and "nonfinite_loss" in last.detail
    assert [e.reason for e in guard.events] == ["loss_spike", "nonfinite_gradients", "too_many_skips"]
    assert StepGuard(GuardSettings(), 5).verdict(0, {5: 3.0}, False).action == "stop"  # the default stops


def _poison(trainer) -> torch.utils.hooks.RemovableHandle:
    """The next backward leaves NaN in one weight's gradient while the loss stays finite."""
    param = next(p for n, p in trainer.model.named_parameters() if n.endswith("linear_fc2.weight"))
    return param.register_hook(lambda g: g * math.nan)


def test_a_step_with_nan_gradients_is_skipped_without_touching_the_weights(dist, tmp_path):
    trainer = _trainer(tmp_path, guard=GuardSettings(nonfinite="skip"))
    trainer.train_step([_micro_batch(1)])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    lr_before = trainer.optimizer.param_groups[0]["lr"]
    handle = _poison(trainer)
    rec = trainer.train_step([_micro_batch(2)])
    handle.remove()
    assert rec["event"].reason == "nonfinite_gradients" and rec["grad_norm"] is None and not rec["stepped"]
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert trainer.step == 2 and trainer.optimizer.param_groups[0]["lr"] == lr_before  # data consumed, schedule held
    rec = trainer.train_step([_micro_batch(3)])  # the next step trains again
    assert rec["event"] is None and math.isfinite(rec["grad_norm"])
    assert not all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_a_step_that_stops_the_run_saves_the_weights_before_it(dist, tmp_path):
    from train_entry.stopped import STOPPED, TrainingStopped

    trainer = _trainer(tmp_path / "run", guard=GuardSettings(nonfinite="stop"))
    trainer.scheduler = trainer._build_scheduler(["run"], [10])
    trainer.train_step([_micro_batch(1)])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    handle = _poison(trainer)
    rec = trainer.train_step([_micro_batch(2)])
    handle.remove()
    assert rec["event"].action == "stop" and trainer.step == 1  # not advanced: a resumed run retries the step
    from train_entry.metrics import MetricsLog

    with pytest.raises(TrainingStopped, match="nonfinite_gradients at step 2"):
        trainer.stop("nonfinite_gradients at step 2", {}, MetricsLog(str(tmp_path / "run"), True, tensorboard=False))
    assert checkpointing.latest_iteration(trainer.checkpoint_dir) == 1
    assert json.load(open(tmp_path / "run" / STOPPED))["step"] == 1
    fresh = _trainer(tmp_path / "fresh")
    checkpointing.load(trainer.checkpoint_dir, fresh.model, fresh.optimizer)
    assert all(torch.equal(before[n], p) for n, p in fresh.model.named_parameters())


def test_only_the_newest_checkpoints_are_kept(dist, tmp_path):
    trainer = _trainer(tmp_path, keep_checkpoints=2)
    trainer.scheduler = trainer._build_scheduler(["run"], [10])
    for _ in range(4):
        trainer.train_step([_micro_batch(trainer.step)])
        trainer.save_checkpoint({})
    kept = sorted(n for n in os.listdir(trainer.checkpoint_dir) if n.startswith("iter_"))
    assert kept == ["iter_0000003", "iter_0000004"] and checkpointing.latest_iteration(trainer.checkpoint_dir) == 4


def test_a_background_save_writes_its_steps_state_while_training_goes_on(dist, tmp_path, monkeypatch):
    """train.async_save: the state is staged when the save is scheduled, so the steps trained while it is
    written change nothing in it (the writer thread is held until they are done); it becomes the latest
    checkpoint only when every rank's write is done and it is published; it loads to the weights and Adam
    moments a synchronous save of the same step holds."""
    import threading

    from torch.distributed.checkpoint import FileSystemWriter

    gate, write_data = threading.Event(), FileSystemWriter.write_data

    def held(self, plan, planner):
        if threading.current_thread() is not threading.main_thread():  # the background write waits for the gate
            assert gate.wait(60)
        return write_data(self, plan, planner)

    monkeypatch.setattr(FileSystemWriter, "write_data", held)
    trainer = _trainer(tmp_path / "async")
    trainer.scheduler = trainer._build_scheduler(["run"], [10])
    twin = _trainer(tmp_path / "sync")  # the same seed: the same weights and steps
    twin.scheduler = twin._build_scheduler(["run"], [10])
    for t in (trainer, twin):
        t.train_step([_micro_batch(1)])
    path = trainer.save_checkpoint({}, background=True)
    twin.save_checkpoint({})
    assert trainer.pending_save is not None and path.endswith("iter_0000001")
    assert checkpointing.latest_iteration(trainer.checkpoint_dir) is None  # not published before it is written
    for seed in (2, 3):  # training goes on, changing every weight the save holds
        trainer.train_step([_micro_batch(seed)])
    assert not trainer.pending_save.poll()  # still writing
    gate.set()
    deadline = time.monotonic() + 60
    while not trainer.pending_save.poll():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    trainer.finish_pending_save()
    assert trainer.pending_save is None and checkpointing.latest_iteration(trainer.checkpoint_dir) == 1
    loaded = []
    for folder in (trainer.checkpoint_dir, twin.checkpoint_dir):
        fresh = _trainer(tmp_path / f"fresh{len(loaded)}")
        checkpointing.load(folder, fresh.model, fresh.optimizer)
        loaded.append(fresh)
    a, b = (dict(f.model.named_parameters()) for f in loaded)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], p) for n, p in trainer.model.named_parameters())  # the live model moved on
    moments = [[s["exp_avg"] for s in f.optimizer.chained_optimizers[0].optimizer.state.values()]
               if hasattr(f.optimizer, "chained_optimizers") else
               [s["exp_avg"] for s in f.optimizer.optimizer.state.values()] for f in loaded]
    assert len(moments[0]) > 0 and all(torch.equal(x, y) for x, y in zip(*moments))
    trainer.save_checkpoint({}, background=True)  # the next save finishes any pending one first
    trainer.finish_pending_save()
    assert checkpointing.latest_iteration(trainer.checkpoint_dir) == 3


def test_a_resumed_run_draws_the_random_numbers_the_uninterrupted_one_draws(dist, tmp_path):
    import random

    import numpy as np

    trainer = _trainer(tmp_path)
    trainer.scheduler = trainer._build_scheduler(["run"], [10])
    trainer.train_step([_micro_batch(1)])
    trainer.save_checkpoint({})
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99), random.seed(99), np.random.seed(99)  # another process state entirely
    fresh = _trainer(tmp_path / "fresh")
    checkpointing.load(trainer.checkpoint_dir, fresh.model, fresh.optimizer)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
    (rng_file,) = os.listdir(os.path.join(trainer.checkpoint_dir, "iter_0000001", "rng"))
    torch.load(os.path.join(trainer.checkpoint_dir, "iter_0000001", "rng", rng_file), weights_only=True)  # no pickle


@pytest.mark.slow  # `ruyi2 train` twice in subprocesses
def test_sigterm_saves_a_checkpoint_and_resume_finishes_the_run(demo_run, tmp_path):
    import shutil

    from pipeline.core.layout import claim_run_dir
    from pipeline.recipe import dump_recipe

    recipe = demo_run["recipe"].model_copy(deep=True)
    recipe.run_dir = str(tmp_path / "run")
    recipe.train.steps, recipe.train.eval_samples, recipe.train.tensorboard = 60, 0, False
    claim_run_dir(recipe.run_dir)
    shutil.copytree(demo_run["layout"].stage("mix"), os.path.join(recipe.run_dir, "mix"))
    path = str(tmp_path / "recipe.yaml")
    dump_recipe(recipe, path)
    metrics = os.path.join(recipe.run_dir, "train", "metrics.jsonl")
    cmd = [sys.executable, "-m", "pipeline.cli", "train", path]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err[-3000:]
    stopped = json.load(open(os.path.join(recipe.run_dir, "train", "stopped.json")))
    step = stopped["step"]
    assert 3 <= step < 60 and "SIGTERM received" in stopped["why"]
    assert f"error: training stopped at step {step} of 60: SIGTERM received" in err and "--resume" in err
    assert checkpointing.latest_iteration(os.path.join(recipe.run_dir, "train", "checkpoint")) == step
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in open(metrics)]
    assert [r["step"] for r in rows] == list(range(1, 61))  # each step once: appended after the checkpoint's rows
    assert not os.path.exists(os.path.join(recipe.run_dir, "train", "stopped.json"))
