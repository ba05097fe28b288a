"""A training step's data, off the step's critical path: each step's micro-batches are built by a torch
``DataLoader`` (worker processes, pinned memory, prefetch) on one rank of each tensor-parallel group and
broadcast to the others, as Megatron-LM's ``get_batch`` does: the ranks of a group read the same samples, so
building them once saves (tp - 1) reads and collations per step.

The loader's items are whole steps, not samples: step i of a curriculum stage is this data-parallel replica's
micro-batches of global batch i (``sample_indices``, Megatron-LM's order). ``StepSampler`` starts at the step a
resumed run continues from (its consumed samples / global batch), so a resumed run reads what an
uninterrupted one would have read next, and nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from train_entry.data import collate
from train_entry.loop_settings import sample_indices

# what ``collate`` gives a micro-batch: key -> (dtype, shape after the micro-batch size and sequence length)
_LAYOUT = {"tokens": torch.int64, "labels": torch.int64, "loss_mask": torch.float32, "position_ids": torch.int64}
_DOCUMENT_IDS = torch.int32  # ``attention_mask`` under document masks: [b, 1, 1, s] ids


@dataclass(frozen=True)
class StepShape:
    """What every rank knows of a step's data before receiving it (the receivers allocate from it)."""

    micro_batches: int
    micro_batch_size: int
    seq_length: int
    documents: bool

    def layout(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        b, s = self.micro_batch_size, self.seq_length
        out = [(k, dt, (b, s)) for k, dt in _LAYOUT.items()]
        return out + ([("attention_mask", _DOCUMENT_IDS, (b, 1, 1, s))] if self.documents else [])

    def nbytes(self) -> int:
        one = sum(torch.Size(shape).numel() * dt.itemsize for _, dt, shape in self.layout())
        return one * self.micro_batches


class StepDataset(Dataset):
    """Step i -> this replica's micro-batches of global batch i (collated)."""

    def __init__(self, samples, n_steps: int, shape: StepShape, dp_rank: int, dp: int, document_eod: int | None):
        self.samples, self.n_steps, self.shape = samples, n_steps, shape
        self.dp_rank, self.dp, self.document_eod = dp_rank, dp, document_eod

    def __len__(self) -> int:
        return self.n_steps

    def __getitem__(self, step: int) -> list[dict]:
        sh = self.shape
        return [collate([self.samples[j] for j in sample_indices(step, m, self.dp_rank, self.dp, sh.micro_batch_size,
                                                                 sh.micro_batches)], self.document_eod)
                for m in range(sh.micro_batches)]


class StepSampler(Sampler[int]):
    """Steps ``first`` .. ``n_steps - 1`` of a stage, in order: a resumed run starts where its checkpoint
    stopped (Megatron-LM's pretraining sampler resumes from the consumed-sample count the same way)."""

    def __init__(self, first: int, n_steps: int):
        if not 0 <= first <= n_steps:
            raise ValueError(f"resume step {first} outside the stage's {n_steps} steps")
        self.first, self.n_steps = first, n_steps

    def __iter__(self):
        return iter(range(self.first, self.n_steps))

    def __len__(self) -> int:
        return self.n_steps - self.first


def step_loader(dataset: StepDataset, first: int, workers: int, prefetch: int, pin_memory: bool) -> DataLoader:
    """Steps from ``first`` on, built ahead by ``workers`` processes (0: in this process, when asked)."""
    # each stage's loader is read once: persistent workers would only outlive it
    extra = {"prefetch_factor": prefetch} if workers else {}
    return DataLoader(dataset, batch_size=None, sampler=StepSampler(first, len(dataset)), num_workers=workers,
                      pin_memory=pin_memory, **extra)


def _parts(shape: StepShape):
    """(micro-batch, key, dtype, dims) in buffer order: wider types first, so every part starts at an offset its
    dtype can be viewed at."""
    layout = sorted(shape.layout(), key=lambda k: -k[1].itemsize)
    return [(m, key, dtype, dims) for key, dtype, dims in layout for m in range(shape.micro_batches)]


def _pack(micro: list[dict], shape: StepShape) -> torch.Tensor:
    """A step's tensors as one byte buffer (one broadcast per step, whatever the keys and micro-batches)."""
    parts = []
    for m, key, dtype, dims in _parts(shape):
        t = micro[m][key]
        if t.dtype != dtype or tuple(t.shape) != dims:
            raise ValueError(f"micro-batch {key}: {t.dtype} {tuple(t.shape)}, the broadcast expects {dtype} {dims}")
        parts.append(t.contiguous().view(-1).view(torch.uint8))
    return torch.cat(parts)


def _unpack(buffer: torch.Tensor, shape: StepShape) -> list[dict]:
    out: list[dict] = [{} for _ in range(shape.micro_batches)]
    at = 0
    for m, key, dtype, dims in _parts(shape):
        n = torch.Size(dims).numel() * dtype.itemsize
        out[m][key] = buffer[at:at + n].view(dtype).view(dims)
        at += n
    return out


def broadcast_step(micro: list[dict] | None, shape: StepShape) -> list[dict]:
    """The tensor-parallel group's source rank's micro-batches on every rank of the group (``micro``: the
    source's batches; None on the others), on the GPU when there is one."""
    from megatron.core import parallel_state

    if parallel_state.get_tensor_model_parallel_world_size() == 1:
        return micro
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    src = parallel_state.get_tensor_model_parallel_src_rank()
    if torch.distributed.get_rank() == src:
        buffer = _pack(micro, shape).to(device, non_blocking=True)
    else:
        buffer = torch.empty(shape.nbytes(), dtype=torch.uint8, device=device)
    torch.distributed.broadcast(buffer, src, group=parallel_state.get_tensor_model_parallel_group())
    return _unpack(buffer, shape)
