"""A step's data: built ahead by DataLoader workers, resumed at the checkpoint's step, broadcast over a
tensor-parallel group, and its wait counted in the step's time."""

import os
import subprocess
import sys
import time

import pytest
import torch

from tests.test_parallel import _free_port
from train_entry.loop_settings import sample_indices
from train_entry.step_batches import StepDataset, StepShape, _pack, _unpack, step_loader


class Samples:
    """GPTDataset's sample surface: index -> tokens, labels, loss mask, positions (distinct per index)."""

    def __init__(self, n: int, s: int, delay: float = 0.0):
        self.n, self.s, self.delay = n, s, delay

    def __len__(self):
        return self.n

    def __getitem__(self, i: int) -> dict:
        time.sleep(self.delay)
        tokens = torch.arange(i * self.s, (i + 1) * self.s, dtype=torch.int64)
        return {"tokens": tokens, "labels": tokens + 1, "loss_mask": torch.ones(self.s), "position_ids": torch.arange(self.s)}


def _flat(step: list[dict]) -> list[bytes]:
    return [t.numpy().tobytes() for batch in step for _, t in sorted(batch.items())]


@pytest.mark.parametrize("documents", [False, True])
def test_worker_processes_build_the_steps_the_training_process_would(documents):
    shape = StepShape(micro_batches=2, micro_batch_size=3, seq_length=5, documents=documents)
    ds = StepDataset(Samples(60, 5), n_steps=4, shape=shape, dp_rank=1, dp=2, document_eod=7 if documents else None)
    in_process = [_flat(ds[i]) for i in range(4)]
    with_workers = [_flat(step) for step in step_loader(ds, 0, workers=2, prefetch=2, pin_memory=False)]
    assert with_workers == in_process
    # replica 1's first micro-batch of step 2: Megatron-LM's order over the global batch
    assert ds[2][0]["tokens"][:, 0].tolist() == [5 * j for j in sample_indices(2, 0, 1, 2, 3, 2)]
    if documents:
        assert ds[0][0]["attention_mask"].shape == (3, 1, 1, 5)


def test_a_resumed_loader_starts_at_the_checkpoints_step():
    shape = StepShape(micro_batches=1, micro_batch_size=2, seq_length=4, documents=False)
    ds = StepDataset(Samples(20, 4), n_steps=5, shape=shape, dp_rank=0, dp=1, document_eod=None)
    resumed = [_flat(step) for step in step_loader(ds, 3, workers=1, prefetch=1, pin_memory=False)]
    assert resumed == [_flat(ds[3]), _flat(ds[4])]
    with pytest.raises(ValueError, match="resume step 6"):
        step_loader(ds, 6, workers=0, prefetch=1, pin_memory=False)


def test_a_packed_step_unpacks_to_the_same_tensors_at_odd_sizes():
    """One byte buffer per step: int64 and 4-byte tensors of odd lengths each come back at an offset their
    dtype can be viewed at."""
    shape = StepShape(micro_batches=3, micro_batch_size=1, seq_length=7, documents=True)
    ds = StepDataset(Samples(10, 7), n_steps=3, shape=shape, dp_rank=0, dp=1, document_eod=9)
    step = ds[1]
    back = _unpack(_pack(step, shape), shape)
    assert [sorted(b) for b in back] == [sorted(b) for b in step]
    assert _flat(back) == _flat(step) and [b["loss_mask"].dtype for b in back] == [torch.float32] * 3
    assert _pack(step, shape).numel() == shape.nbytes()
    with pytest.raises(ValueError, match="tokens: torch.int32"):
        _pack([dict(b, tokens=b["tokens"].int()) for b in step], shape)


def test_the_step_time_includes_the_wait_for_data(dist, tmp_path):
    """Samples that take 40 ms each: the trainer's step source reports the wait (4 samples a step, built in
    the training process with data_workers 0), so tokens/s and MFU count it."""
    from tests.test_train_entry import _trainer

    trainer = _trainer(tmp_path, data_workers=0, global_batch_size=4)
    steps = list(trainer._steps(Samples(16, 16, delay=0.04), 1, 3))
    assert len(steps) == 2
    assert all(seconds >= 4 * 0.04 for _, seconds in steps)
    assert steps[0][0][0]["tokens"][0, 0].item() == 4 * 16  # step 1 starts at sample 4


@pytest.mark.slow  # a torchrun job of two processes
def test_the_tensor_parallel_source_ranks_batches_reach_the_other_rank(tmp_path):
    worker = os.path.join(os.path.dirname(__file__), "broadcast_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), worker, str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert _flat(got["received"]) == _flat(got["expected"]), rank
