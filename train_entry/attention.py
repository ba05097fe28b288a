"""Core attention on PyTorch's fused kernels, for megatron-core's local layer spec (no Transformer Engine).

megatron-core's ``DotProductAttention`` computes the s x s scores with ``baddbmm``, softmaxes them in fp32 and
keeps both for the backward: 6 bytes per score, 6.4 GB a layer for 2 x 32 heads x 4,096 tokens. This module
takes its place in the layer spec (same constructor and forward) and calls ``scaled_dot_product_attention``
(flash or memory-efficient kernels on a GPU: the scores are never stored; grouped-query attention without
repeating the keys and values).

Documents packed in one sequence (``train.document_masks``) do not attend to each other. Their boundaries come
as per-token document ids ([b, s] int32 from the end-of-document tokens, ``document_ids``) in place of
megatron-core's dense [b, 1, s, s] mask, which its dataset builds per sample (268 MB in fp32 at 8,192 tokens).
On a GPU they become a FlexAttention block mask (causal and same document; one compiled kernel, memory O(s^2 /
128^2)); elsewhere (FlexAttention has no CPU backward) each document runs as its own causal SDPA call, which is
the same function. A boolean mask (True where masked, megatron-core's convention) is still accepted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core.transformer.module import MegatronModule


def document_ids(tokens: torch.Tensor, eod: int) -> torch.Tensor:
    """[b, s] int32: the index of each token's document in its sequence. An end-of-document token belongs to
    the document it ends (Megatron-LM's ``--reset-attention-mask``: the tokens after it start a new one)."""
    is_eod = (tokens == eod).to(torch.int32)
    return torch.cumsum(is_eod, dim=1, dtype=torch.int32) - is_eod


def _segments(doc: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per sequence, the [start, end) spans of its documents (ids are non-decreasing along the sequence)."""
    out = []
    for row in doc.tolist():
        spans, start = [], 0
        for i in range(1, len(row) + 1):
            if i == len(row) or row[i] != row[start]:
                spans.append((start, i))
                start = i
        out.append(spans)
    return out


def segment_attention(q, k, v, doc: torch.Tensor, scale: float, gqa: bool) -> torch.Tensor:
    """Causal attention within each document: one SDPA call per document (q, k, v as [b, heads, s, d])."""
    rows = []
    for i, spans in enumerate(_segments(doc)):
        parts = [F.scaled_dot_product_attention(q[i : i + 1, :, a:b], k[i : i + 1, :, a:b], v[i : i + 1, :, a:b],
                                                is_causal=True, scale=scale, enable_gqa=gqa) for a, b in spans]
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0)


# The block mask of the last document-id tensor seen: every layer of a forward gets the same tensor object,
# so an identity check (the tensor held here, its id never reused) finds it without a per-layer device sync.
_BLOCK_MASK: dict = {}


def flex_document_attention(q, k, v, doc: torch.Tensor, scale: float, gqa: bool, compiled: bool = True) -> torch.Tensor:
    """Causal attention within each document as one FlexAttention call (``compiled`` on a GPU); ``doc`` holds
    the document ids, [b, s] or megatron-core's [b, 1, 1, s]."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if _BLOCK_MASK.get("doc") is not doc:
        b, s = q.shape[0], q.shape[2]
        ids = doc.reshape(b, s)

        def same_document_causal(bi, hi, qi, ki):
            return (ki <= qi) & (ids[bi, qi] == ids[bi, ki])

        _BLOCK_MASK.update(doc=doc, mask=create_block_mask(same_document_causal, b, None, s, s, device=doc.device,
                                                           _compile=compiled))
    fn = _compiled_flex() if compiled else flex_attention
    return fn(q, k, v, block_mask=_BLOCK_MASK["mask"], scale=scale, enable_gqa=gqa)


_FLEX = {}


def _compiled_flex():
    if "fn" not in _FLEX:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    return _FLEX["fn"]


class FusedCoreAttention(MegatronModule):
    """``DotProductAttention``'s place in the layer spec, on ``scaled_dot_product_attention``; the same heads
    per tensor-parallel rank, softmax scale and causal masking."""

    def __init__(self, config, layer_number: int, attn_mask_type, attention_type: str, attention_dropout: float | None = None,
                 softmax_scale: float | None = None, cp_comm_type: str | None = None, pg_collection=None):
        super().__init__(config=config)
        from megatron.core.process_groups_config import ProcessGroupCollection
        from megatron.core.utils import divide

        if config.context_parallel_size != 1:
            raise ValueError("FusedCoreAttention: context parallelism is not supported (it needs Transformer Engine)")
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp = pg_collection.tp.size()
        self.heads = divide(config.num_attention_heads, tp)
        self.groups = divide(config.num_query_groups, tp)
        head_size = config.kv_channels
        self.softmax_scale = 1.0 / math.sqrt(head_size) if softmax_scale is None else softmax_scale
        if config.apply_query_key_layer_scaling:
            raise ValueError("FusedCoreAttention: apply_query_key_layer_scaling is not supported")
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None, packed_seq_params=None):
        """query [s, b, heads, d], key and value [s, b, groups, d] -> [s, b, heads * d]."""
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("FusedCoreAttention: packed sequence parameters and attention biases are not supported")
        s, b = query.shape[:2]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, n, s, d]
        gqa = self.heads != self.groups
        dropout = self.dropout_p if self.training else 0.0
        if attention_mask is None:
            out = self._sdpa(q, k, v, dropout, gqa, is_causal=True)
        elif attention_mask.dtype == torch.bool:  # a dense mask, True where masked (megatron-core's convention)
            out = self._sdpa(q, k, v, dropout, gqa, attn_mask=~attention_mask)
        else:
            if dropout:
                raise ValueError("FusedCoreAttention: attention dropout with document masks is not supported")
            out = (flex_document_attention(q, k, v, attention_mask, self.softmax_scale, gqa) if q.is_cuda
                   else segment_attention(q, k, v, attention_mask.reshape(b, s), self.softmax_scale, gqa))
        return out.permute(2, 0, 1, 3).reshape(s, b, self.heads * q.shape[-1])

    def _sdpa(self, q, k, v, dropout: float, gqa: bool, **mask):
        if dropout:  # each tensor-parallel rank drops its own heads' probabilities (megatron-core's RNG tracker)
            from megatron.core import tensor_parallel

            with tensor_parallel.get_cuda_rng_tracker().fork():
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.softmax_scale, enable_gqa=gqa, **mask)
        return F.scaled_dot_product_attention(q, k, v, scale=self.softmax_scale, enable_gqa=gqa, **mask)
