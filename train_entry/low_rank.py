"""A linear layer stored as two factors (W ~ A @ B, rank r), standing in for a megatron-core linear of the DaE
blocks after SVD compression: same call (``(output, bias)``), r (in + out) parameters instead of in x out."""

from __future__ import annotations

import torch


class LowRankLinear(torch.nn.Module):
    def __init__(self, a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.down = torch.nn.Parameter(b.to(dtype).contiguous())  # r x in
        self.up = torch.nn.Parameter(a.to(dtype).contiguous())  # out x r

    def forward(self, x: torch.Tensor):
        return torch.nn.functional.linear(torch.nn.functional.linear(x, self.down), self.up), None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None) -> dict:
        # one process (compression runs at TP = PP = 1): both factors are whole tensors
        from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

        return make_sharded_tensors_for_checkpoint(self.state_dict(prefix="", keep_vars=True), prefix, {}, sharded_offsets)
