"""A Ruyi2-layout familial model for transformers: one Qwen3 backbone, exits chosen at call time.

Exit e (a 0-based layer index in ``early_exit_points``) runs backbone layers [0, e), then its own decoder
layer (``model.eelayers[k]``; the backbone's own layer e for the last exit), its DaE blocks if it has any
(``model.dae_blocks[e]``, ours only), its norm ``model.norms[k]`` and head ``lm_head[k]``. Weight names are those of the published Ruyi2 layout. Choose the exit per call or per
``generate`` with ``early_exit_point=E`` (default: ``config.default_early_exit_point``, -1 = the last).

The KV cache needs no extra slots: for exit e the backbone layers above e do not run, so the branch layer
uses cache slot e (its ``layer_idx``), and a generation keeps one exit throughout.

Written for ruyi2-pipeline's exports (``ruyi2 export``) on transformers' own Qwen3 modules; tested with
transformers 5.x.
"""

import inspect

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3PreTrainedModel, Qwen3RMSNorm, Qwen3RotaryEmbedding

from .configuration_ruyi_qwen3 import RuyiQwen3Config

# transformers renamed the cache argument (past_key_values -> cache); pass it under the name this version reads
_LAYER_CACHE_KW = "cache" if "cache" in inspect.signature(Qwen3DecoderLayer.forward).parameters else "past_key_values"
_MASK_PARAMS = set(inspect.signature(create_causal_mask).parameters)
# ... and the output field that carries it
_OUT_CACHE = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def _exit_index(config, exit_point) -> tuple[int, int]:
    """(k, e): the exit's position in early_exit_points and its layer index."""
    exits = config.early_exit_points
    e = config.default_early_exit_point if exit_point is None else exit_point
    e = exits[-1] if e == -1 else e
    if e not in exits:
        raise ValueError(f"early_exit_point {e}: this model's exits are {exits}")
    return exits.index(e), e


class LowRankLinear(nn.Module):
    """W ~ up @ down: a linear of the DaE blocks, or an LM head, after SVD compression (rank r instead of in x out)."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)

    def forward(self, x):
        return self.up(self.down(x))


class RuyiQwen3Model(Qwen3PreTrainedModel):
    config_class = RuyiQwen3Config

    def __init__(self, config: RuyiQwen3Config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(Qwen3DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        # branch k stands in for backbone layer e_k: same layer type, same cache slot
        self.eelayers = nn.ModuleList(Qwen3DecoderLayer(config, e) for e in config.early_exit_points[:-1])
        self.dae_blocks = nn.ModuleDict({e: nn.ModuleList(Qwen3DecoderLayer(config, int(e) + 1 + j) for j in range(n))
                                         for e, n in config.dae_blocks.items()})
        self.norms = nn.ModuleList(Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps) for _ in config.early_exit_points)
        for path, rank in config.dae_low_rank.items():
            dense = self.dae_blocks.get_submodule(path)
            parent, _, name = path.rpartition(".")
            setattr(self.dae_blocks.get_submodule(parent), name, LowRankLinear(dense.in_features, dense.out_features, rank))
        self.rotary_emb = Qwen3RotaryEmbedding(config=config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                use_cache=None, early_exit_point=None, past_key_values=None, cache_position=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        k, e = _exit_index(self.config, early_exit_point)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if cache_position is None:
            cache_position = torch.arange(past, past + inputs_embeds.shape[1], device=inputs_embeds.device)
        if position_ids is None:
            position_ids = cache_position.unsqueeze(0)
        candidates = {"config": self.config, "inputs_embeds": inputs_embeds, "input_embeds": inputs_embeds,
                      "attention_mask": attention_mask, "cache": cache, "past_key_values": cache,
                      "position_ids": position_ids, "cache_position": cache_position}
        mask = create_causal_mask(**{n: v for n, v in candidates.items() if n in _MASK_PARAMS})
        hidden = inputs_embeds
        rope = self.rotary_emb(hidden, position_ids)
        last = self.layers[e] if k == len(self.norms) - 1 else self.eelayers[k]
        extra = list(self.dae_blocks[str(e)]) if str(e) in self.dae_blocks else []
        for layer in list(self.layers[:e]) + [last] + extra:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=rope,
                           use_cache=use_cache, cache_position=cache_position, **{_LAYER_CACHE_KW: cache})
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return BaseModelOutputWithPast(last_hidden_state=self.norms[k](hidden), **{_OUT_CACHE: cache if use_cache else None})


class RuyiQwen3ForCausalLM(Qwen3PreTrainedModel, GenerationMixin):
    config_class = RuyiQwen3Config

    def __init__(self, config: RuyiQwen3Config):
        super().__init__(config)
        self.model = RuyiQwen3Model(config)
        n_heads = 1 if config.shared_heads else len(config.early_exit_points)
        if config.shared_heads:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        else:
            self.lm_head = nn.ModuleList(
                LowRankLinear(config.hidden_size, config.vocab_size, config.low_rank_heads[str(k)])
                if str(k) in config.low_rank_heads else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
                for k in range(n_heads))
            if config.tie_word_embeddings:  # the full model's head is the embedding (a tied Qwen3 base)
                self._tied_weights_keys = {f"lm_head.{n_heads - 1}.weight": "model.embed_tokens.weight"}
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None, labels=None,
                use_cache=None, logits_to_keep=0, early_exit_point=None, past_key_values=None, cache_position=None, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache if cache is not None else past_key_values, inputs_embeds=inputs_embeds,
                         use_cache=use_cache, early_exit_point=early_exit_point, cache_position=cache_position)
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int) and logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        k, _ = _exit_index(self.config, early_exit_point)
        head = self.lm_head if self.config.shared_heads else self.lm_head[k]
        logits = head(hidden)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                               ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_OUT_CACHE: getattr(out, _OUT_CACHE)})
