"""megatron-core's transformer config with the YaRN fields its GPT model reads for ``position_embedding_type
="yarn"``: megatron-core 0.16 declares them only on its multi-latent-attention config, which a Qwen3 model
(grouped-query attention) cannot use."""

from dataclasses import dataclass

from megatron.core.transformer.transformer_config import TransformerConfig


@dataclass
class YarnTransformerConfig(TransformerConfig):
    yarn_rotary_scaling_factor: float = 1.0
    yarn_original_max_position_embeddings: int = 4096
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    yarn_mscale: float = 1.0
    yarn_mscale_all_dim: float = 0.0
    yarn_correction_range_round_to_int: bool = True
