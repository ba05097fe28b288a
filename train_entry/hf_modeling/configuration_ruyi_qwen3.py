"""Configuration of a Ruyi2-layout familial model: a Qwen3 configuration plus its exits.

Written for ruyi2-pipeline's exports (``ruyi2 export``) and shipped inside them; the keys are those of the
published Ruyi2 configuration (``early_exit_points``, ``shared_heads``, ``default_early_exit_point``), so the
same folder also loads in the published modeling code.
"""

from transformers import Qwen3Config


class RuyiQwen3Config(Qwen3Config):
    model_type = "ruyi_qwen3"

    def __init__(self, early_exit_points=None, shared_heads=False, default_early_exit_point=-1, dae_blocks=None,
                 dae_low_rank=None, low_rank_heads=None, **kwargs):
        super().__init__(**kwargs)
        # DaE (Decompose-after-Expansion): exit -> blocks appended after its branch layer; block j takes the
        # cache slot of backbone layer e + 1 + j, which does not run at that exit
        self.dae_blocks = {str(e): int(n) for e, n in (dae_blocks or {}).items()}
        # linears of the DaE blocks stored as two factors after SVD compression: "<e>.<j>.<module path>" -> rank
        self.dae_low_rank = {str(k): int(r) for k, r in (dae_low_rank or {}).items()}
        # LM heads stored as two factors (``ruyi2 compress --head-ratio``): head index k -> rank
        self.low_rank_heads = {str(k): int(r) for k, r in (low_rank_heads or {}).items()}
        self.early_exit_points = list(early_exit_points or [self.num_hidden_layers - 1])
        if self.early_exit_points != sorted(set(self.early_exit_points)) or self.early_exit_points[-1] != self.num_hidden_layers - 1:
            raise ValueError(f"early_exit_points must increase and end at num_hidden_layers - 1, got {self.early_exit_points}")
        for e, n in self.dae_blocks.items():
            if int(e) not in self.early_exit_points[:-1] or int(e) + n > self.num_hidden_layers - 1:
                raise ValueError(f"dae_blocks: {n} blocks after exit {e} need an early exit with {n} backbone layers above it")
        self.shared_heads = shared_heads
        self.default_early_exit_point = default_early_exit_point
