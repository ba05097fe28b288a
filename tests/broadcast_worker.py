"""One rank of `torchrun --nproc_per_node 2 tests/broadcast_worker.py OUT`: a tensor-parallel group of two,
where only rank 0 builds the step's micro-batches and ``broadcast_step`` hands them to rank 1; each rank
writes what it holds to OUT/rank{r}.pt."""

import os
import sys

import torch

from train_entry.distributed import DistributedContext
from train_entry.step_batches import StepShape, broadcast_step


def step(shape: StepShape) -> list[dict]:
    g = torch.Generator().manual_seed(5)
    b, s = shape.micro_batch_size, shape.seq_length
    return [{"tokens": torch.randint(0, 1000, (b, s), generator=g), "labels": torch.randint(0, 1000, (b, s), generator=g),
             "loss_mask": torch.rand(b, s, generator=g), "position_ids": torch.randint(0, s, (b, s), generator=g),
             "attention_mask": torch.randint(0, 9, (b, 1, 1, s), generator=g, dtype=torch.int32)}
            for _ in range(shape.micro_batches)]


if __name__ == "__main__":
    out = sys.argv[1]
    shape = StepShape(micro_batches=3, micro_batch_size=1, seq_length=7, documents=True)  # odd sizes: alignment
    with DistributedContext(tp=2):
        rank = torch.distributed.get_rank()
        received = broadcast_step(step(shape) if rank == 0 else None, shape)
        received = [{k: v.clone() for k, v in batch.items()} for batch in received]  # views of one buffer
        torch.save({"received": received, "expected": step(shape)}, os.path.join(out, f"rank{rank}.pt"))
