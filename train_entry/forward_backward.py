"""One pass of megatron-core's forward-backward schedule over a step's micro-batches, with every exit's
loss collected.

The schedule (no pipelining, 1F1B, interleaved) runs ``num_microbatches`` micro-batches and accumulates
their gradients; it divides the final exit's loss by the number of micro-batches, and the exits' injected
losses are divided the same way (``ExitLossAutoScaler.set_loss_scale``), so a step's gradient is that of the mean
joint loss over the global batch. Each pipeline stage sees only the exits it holds: losses are averaged
over micro-batches where they are computed, gathered over the pipeline group and averaged over the
data-parallel replicas, so every rank logs the loss of the whole global batch.
"""

from __future__ import annotations

from functools import partial

import torch

from train_entry import cpu_support
from train_entry.exit_branch import ExitLossAutoScaler
from train_entry.model import FamilialGPTModel, masked_mean


class ForwardBackward:
    def __init__(self, chunks: list[FamilialGPTModel], wrapped: list, seq_length: int):
        """``chunks``: this rank's familial model chunks (one, or one per virtual pipeline stage under
        interleaved 1F1B); ``wrapped``: the modules the schedule runs (DDP around each chunk)."""
        self.chunks, self.wrapped, self.seq_length = chunks, wrapped, seq_length
        self._chunk_of = {id(w): c for w, c in zip(wrapped, chunks)}
        self._sums: dict[int, list[torch.Tensor]] = {}

    def _device_batch(self, batch: dict) -> dict:
        return {k: v.cuda(non_blocking=True) for k, v in batch.items()} if torch.cuda.is_available() else batch

    def _forward_step(self, data_iterator, model):
        chunk = self._chunk_of[id(model)]  # the schedule hands over the wrapped chunk it runs
        batch = self._device_batch(next(data_iterator))
        chunk.exit_losses.clear()
        chunk.pending_exit_losses.clear()
        output = model(batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"],
                       loss_mask=batch["loss_mask"])
        for e, loss in chunk.exit_losses.items():  # the branches this chunk holds ran in that forward
            self._sums.setdefault(e, []).append(loss)  # detached; read after the pass (no sync)
        return output, partial(self._loss_func, chunk, batch["loss_mask"])

    def _loss_func(self, chunk: FamilialGPTModel, loss_mask, output_tensor):
        final = chunk.fcfg.exits[-1]
        loss = masked_mean(output_tensor, loss_mask)
        self._sums.setdefault(final, []).append(loss.detach().clone())
        # the schedule divides this in place by the number of micro-batches: the logged copy is taken first
        total = chunk.exit_weights[final] * loss + sum(chunk.pending_exit_losses)
        return total, {"final": loss.detach().clone()}

    def run(self, micro_batches: list[dict], forward_only: bool) -> dict[int, float]:
        """Forward (and backward) over the micro-batches; the per-exit mean loss of the pass on every rank."""
        from megatron.core import parallel_state
        from megatron.core.pipeline_parallel import get_forward_backward_func

        self._sums = {}
        n = len(micro_batches)
        pp = parallel_state.get_pipeline_model_parallel_world_size()
        if forward_only and len(self.chunks) > 1 and n % pp:
            # megatron-core's interleaved schedule takes a multiple of the pipeline size (the trainer checks a
            # training step's count up front); an evaluation is padded with repeats of its last micro-batch,
            # whose losses are left out below (each chunk runs the micro-batches in order)
            micro_batches = micro_batches + [micro_batches[-1]] * (pp - n % pp)
        ExitLossAutoScaler.set_loss_scale(torch.tensor(1.0 / len(micro_batches)))
        # interleaved 1F1B reads one iterator per chunk; every chunk needs the labels (its exits' losses)
        data = iter(micro_batches) if len(self.chunks) == 1 else [iter(micro_batches) for _ in self.chunks]
        with cpu_support.device_mode():
            get_forward_backward_func()(
                forward_step_func=self._forward_step,
                data_iterator=data,
                model=self.wrapped,
                num_microbatches=len(micro_batches),
                seq_length=self.seq_length,
                micro_batch_size=micro_batches[0]["tokens"].shape[0],
                forward_only=forward_only,
            )
        local = {e: float(torch.stack(v[:n]).float().mean()) for e, v in self._sums.items()}
        return self._gather_pipeline(local)

    @staticmethod
    def _gather_pipeline(local: dict[int, float]) -> dict[int, float]:
        """Every exit's loss on every rank: each pipeline stage only computes the exits it holds."""
        from megatron.core import parallel_state

        if parallel_state.get_pipeline_model_parallel_world_size() == 1:
            return local
        gathered: list = [None] * parallel_state.get_pipeline_model_parallel_world_size()
        torch.distributed.all_gather_object(gathered, local, group=parallel_state.get_pipeline_model_parallel_group())
        return {e: v for part in gathered for e, v in part.items()}


def data_parallel_mean(losses: dict[int, float]) -> dict[int, float]:
    """The losses averaged over the data-parallel replicas: each saw its own samples, and the loss of the
    step is the mean over the global batch (equal micro-batches), not one replica's share."""
    from megatron.core import parallel_state

    dp = parallel_state.get_data_parallel_world_size()
    if dp == 1:
        return losses
    exits = sorted(losses)
    t = torch.tensor([losses[e] for e in exits], dtype=torch.float64)
    if torch.cuda.is_available():
        t = t.cuda()
    torch.distributed.all_reduce(t, group=parallel_state.get_data_parallel_group())
    return {e: float(v) / dp for e, v in zip(exits, t.tolist())}
