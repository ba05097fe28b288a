"""The familial model: megatron-core's GPTModel with Ruyi2's early-exit branches.

Branch k taps the backbone after layer e_k (global ``layer_number == e_k``): that layer is built as an
``ExitTapLayer`` from the decoder's layer spec, and the branch is an ``ExitBranch`` built from its own spec
(train_entry/exit_branch.py): its own decoder layer (sharded like the backbone under tensor parallelism), DaE
blocks, RMSNorm and vocab-parallel LM head. The last exit is the full model.

The exit loss is attached to the trunk activation with ``ExitLossAutoScaler`` (megatron-core's MTP / MoE
auxiliary-loss pattern), so every stock schedule trains the exits on whichever pipeline stage holds them.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from megatron.core.transformer.transformer_block import _get_block_submodules
from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

from train_entry import cpu_support
from train_entry.exit_branch import (
    ExitLossAutoScaler,
    ExitTapLayer,
    ShardedModuleDict,
    at_positions,
    exit_branch_spec,
)
from train_entry.model_config import FamilialConfig

ATTENTION = ("fused", "unfused")


def layer_spec(attention: str = "fused") -> ModuleSpec:
    """megatron-core's local layer spec (RMSNorm, QK-norm) with its core attention: ``fused``, PyTorch's fused
    attention (``train_entry/attention.py``: no s x s scores kept); ``unfused``, megatron-core's own
    ``DotProductAttention`` (the scores and fp32 probabilities kept per layer)."""
    if attention not in ATTENTION:
        raise ValueError(f"attention: {attention!r} is not one of {ATTENTION}")
    spec = get_gpt_layer_local_spec(qk_layernorm=True, normalization="RMSNorm")
    if attention == "fused":
        from train_entry.attention import FusedCoreAttention

        spec.submodules.self_attention.submodules.core_attention = FusedCoreAttention
    return spec


def familial_block_spec(fcfg: FamilialConfig, config, layer_spec: ModuleSpec, vp_stage: int | None = None):
    """This pipeline stage's (or model chunk's) decoder layers: the backbone's layer spec, with
    ``ExitTapLayer`` at the taps."""
    block = _get_block_submodules(config, layer_spec, vp_stage=vp_stage)
    offset = get_transformer_layer_offset(config, vp_stage)
    tap = ModuleSpec(module=ExitTapLayer, submodules=layer_spec.submodules)
    block.layer_specs = [tap if offset + i + 1 in fcfg.aux_exits else spec for i, spec in enumerate(block.layer_specs)]
    return block


class FamilialGPTModel(GPTModel):
    def __init__(self, fcfg: FamilialConfig, transformer_config, pre_process: bool = True, post_process: bool = True,
                 vp_stage: int | None = None, attention: str = "fused"):
        """``vp_stage``: which of this pipeline rank's model chunks this is (interleaved 1F1B), or None;
        ``attention``: the core attention of every layer (``layer_spec``)."""
        from train_entry.rope_scaling import megatron_rope

        spec = layer_spec(attention)
        block = familial_block_spec(fcfg, transformer_config, spec, vp_stage)
        rope = megatron_rope(fcfg.rope_scaling)
        super().__init__(
            config=transformer_config,
            transformer_layer_spec=block,
            vocab_size=fcfg.model_vocab_size,
            max_sequence_length=fcfg.max_sequence_length,
            pre_process=pre_process,
            post_process=post_process,
            share_embeddings_and_output_weights=fcfg.tie_embeddings,
            position_embedding_type=rope.position_embedding_type,
            seq_len_interpolation_factor=rope.seq_len_interpolation_factor,
            rotary_base=int(fcfg.rope_theta),
            vp_stage=vp_stage,
        )
        self.fcfg = fcfg
        self.attention = attention
        self.layer_spec = spec  # the DaE blocks are built from it
        self.exit_weights: dict[int, float] = {e: 1.0 for e in fcfg.exits}  # lambda_k(t), set each step
        self.exit_losses: dict[int, torch.Tensor] = {}  # last forward's per-exit CE (detached)
        self._batch_ctx: dict | None = None
        # exit losses not attached to the trunk (nothing below their tap trains): the caller adds them to its loss
        self.pending_exit_losses: list[torch.Tensor] = []
        self._recompute_ctx: dict[int, dict] = {}  # layer input storage -> batch, for layers recomputed in the backward
        self.exits = ShardedModuleDict()
        offset = get_transformer_layer_offset(self.config, self.vp_stage)
        branch = exit_branch_spec(spec, block.layer_norm)
        for layer in self.decoder.layers:
            if isinstance(layer, ExitTapLayer):
                e = layer.layer_number
                self.exits[str(e)] = build_module(branch, config=self.config, exit_layer=e, layer_number=e + 1 - offset,
                                                  vocab_size=self.vocab_size, parallel_output=self.parallel_output,
                                                  vp_stage=self.vp_stage)
                layer.attach(self)

    @property
    def local_exits(self) -> list[int]:
        """Exits whose loss this pipeline stage computes (the full-model exit on the last stage)."""
        out = [int(k) for k in self.exits.keys()]
        if self.post_process:
            out.append(self.fcfg.exits[-1])
        return out

    def tap(self, e: int, layer_input: torch.Tensor | None, output: torch.Tensor, layer_kwargs: dict) -> torch.Tensor:
        """Called by the ``ExitTapLayer`` e_k with its output: runs branch k on the batch of this forward and
        returns the output with the weighted exit loss attached (or collects the logits, for evaluation)."""
        ctx = self._batch_ctx
        if ctx is None and torch.is_grad_enabled() and layer_input is not None:
            # activation recompute re-runs this layer in the backward, after forward() has returned: the
            # batch's labels were kept for it under the storage of the layer's saved input
            ctx = self._recompute_ctx.pop(layer_input.data_ptr(), None)
        elif ctx is not None and not torch.is_grad_enabled() and tensor_parallel.random.is_checkpointing():
            self._recompute_ctx[layer_input.data_ptr()] = ctx  # the no-grad first pass of a recomputed layer
        if ctx is None or (ctx.get("labels") is None and not ctx.get("collect_logits")):
            return output
        positions = ctx.get("positions") if ctx.get("collect_logits") else None
        logits = self.exits[str(e)](output, layer_kwargs, positions)
        if ctx.get("collect_logits"):
            ctx["logits"][e] = logits.transpose(0, 1).contiguous()  # [s, b, v] -> [b, s, v]
            return output
        token_loss = self.compute_language_model_loss(ctx["labels"], logits)  # [b, s]
        loss = masked_mean(token_loss, ctx.get("loss_mask"))
        self.exit_losses[e] = loss.detach().clone()
        if not torch.is_grad_enabled():
            return output
        weighted = self.exit_weights[e] * loss
        if not output.requires_grad and self.post_process:
            # nothing below the tap trains (DaE): attached to the trunk, the loss would pull every frozen layer
            # above the tap into the backward; the caller adds it to the loss of the final exit instead
            self.pending_exit_losses.append(weighted)
            return output
        return ExitLossAutoScaler.apply(output, weighted)

    @torch.no_grad()
    def exit_logits(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                    positions: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        """Logits [b, s, v] of every exit held by this stage (TP=PP=1: all of them), for evaluation,
        export checks and early-exit inference. ``positions`` [b, k]: only the logits at those positions of
        each row ([b, k, v]): the heads then see k positions, not s (scoring a continuation, generating)."""
        self._batch_ctx = {"collect_logits": True, "logits": {}, "positions": positions}
        try:
            final = super().forward(input_ids, position_ids, None)
            logits = dict(self._batch_ctx["logits"])
        finally:
            self._batch_ctx = None
        if self.post_process:
            logits[self.fcfg.exits[-1]] = final
        if self.fcfg.model_vocab_size != self.fcfg.vocab_size:  # the tensor-parallel padding is no token
            logits = {e: lg[..., : self.fcfg.vocab_size] for e, lg in logits.items()}
        return logits

    def _postprocess(self, hidden_states, **kwargs):
        """The final exit's head; under ``exit_logits(positions=...)`` it sees only those positions."""
        ctx = self._batch_ctx
        if self.post_process and ctx is not None and ctx.get("collect_logits") and ctx.get("positions") is not None:
            hidden_states = at_positions(hidden_states, ctx["positions"])
        return super()._postprocess(hidden_states=hidden_states, **kwargs)

    def forward(self, input_ids, position_ids, attention_mask, *args, labels=None, loss_mask=None, **kwargs):
        if attention_mask is not None and attention_mask.dtype != torch.bool and self.attention == "unfused":
            attention_mask = dense_document_mask(attention_mask)  # megatron-core's DotProductAttention takes no ids
        self._batch_ctx = {"labels": labels, "loss_mask": loss_mask}
        try:
            return super().forward(input_ids, position_ids, attention_mask, *args, labels=labels, **kwargs)
        finally:
            self._batch_ctx = None


def init_branches_from_backbone(chunks: list[FamilialGPTModel]) -> None:
    """Branch layer k <- backbone layer e_k + 1 (the layer right after the exit), as in Ruyi2.

    ``chunks``: every model chunk of this rank (one without interleaving). Under pipeline parallelism layer
    e_k + 1 can live on another stage or chunk: every rank contributes the source layers it holds (its own
    tensor-parallel shard) through an all-gather over its pipeline group. Collective: every rank of the
    pipeline group must call it."""
    needed = {e + 1 for e in chunks[0].fcfg.aux_exits}
    sources = {
        layer.layer_number: {k: v.detach().cpu() for k, v in layer.state_dict().items() if isinstance(v, torch.Tensor)}
        for chunk in chunks
        for layer in chunk.decoder.layers
        if layer.layer_number in needed
    }
    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        gathered: list = [None] * parallel_state.get_pipeline_model_parallel_world_size()
        torch.distributed.all_gather_object(gathered, sources, group=parallel_state.get_pipeline_model_parallel_group())
        sources = {n: sd for part in gathered for n, sd in part.items()}
    with torch.no_grad():
        for chunk in chunks:
            for key, branch in chunk.exits.items():
                branch.layer.load_state_dict(sources[int(key) + 1], strict=False)


def masked_mean(token_loss: torch.Tensor, loss_mask: torch.Tensor | None) -> torch.Tensor:
    token_loss = token_loss.float()
    if loss_mask is None:
        return token_loss.mean()
    mask = loss_mask.float()
    return (token_loss * mask).sum() / mask.sum().clamp(min=1.0)


def dense_document_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """[b, 1, s, s] bool, True where a token may not attend (a later position or another document): the dense
    mask megatron-core's ``DotProductAttention`` reads, from [b, 1, 1, s] document ids."""
    doc = document_ids.reshape(document_ids.shape[0], -1)
    s = doc.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=doc.device).tril()
    return ~(causal & (doc[:, :, None] == doc[:, None, :])).unsqueeze(1)


def build_model(
    fcfg: FamilialConfig, tp: int = 1, pp: int = 1, params_dtype=torch.float32, pipeline_layout: list | None = None,
    recompute: str = "none", init_branches: bool = True, attention: str = "fused", cpu_init: bool | None = None,
) -> FamilialGPTModel:
    """The familial model of this rank (one model chunk). ``pipeline_layout``: megatron-core's per-stage
    layer layout (train_entry/pipeline_balance.py); None splits the layers evenly. ``recompute``: see
    ``FamilialConfig.transformer_config``. ``init_branches``: copy the backbone layers into the branches (not
    for a skeleton on the meta device, which has no values). ``attention``: see ``layer_spec``. ``cpu_init``:
    megatron-core's CPU initialisation even with CUDA present (None: only without CUDA)."""
    (model,) = build_model_chunks(fcfg, tp, pp, 1, params_dtype, pipeline_layout, recompute, init_branches, attention,
                                  cpu_init)
    return model


def build_model_chunks(
    fcfg: FamilialConfig, tp: int = 1, pp: int = 1, vp: int = 1, params_dtype=torch.float32,
    pipeline_layout: list | None = None, recompute: str = "none", init_branches: bool = True, attention: str = "fused",
    cpu_init: bool | None = None,
) -> list[FamilialGPTModel]:
    """This rank's model chunks: ``vp`` of them under interleaved 1F1B (``pipeline_layout`` then has
    ``pp x vp`` virtual stages, in megatron-core's order: chunk 0 of every rank, then chunk 1, ...), else one."""
    if vp > 1 and pipeline_layout is None:  # megatron-core reads the number of chunks from the layout
        from train_entry.pipeline_balance import plan_pipeline

        pipeline_layout = plan_pipeline(fcfg, pp * vp, fcfg.max_sequence_length, "even").layout
    tcfg = fcfg.transformer_config(tp=tp, pp=pp, params_dtype=params_dtype, pipeline_layout=pipeline_layout,
                                   recompute=recompute, cpu_init=cpu_init)
    stages = [None] if vp == 1 else list(range(vp))
    # device_mode: a tied model's last pipeline stage takes the embedding's values through a `.cuda()` copy
    with cpu_support.device_mode():
        chunks = [_chunk(fcfg, tcfg, stage, vp, attention) for stage in stages]
    if init_branches:
        init_branches_from_backbone(chunks)
    return chunks


def _chunk(fcfg: FamilialConfig, tcfg, stage: int | None, vp: int, attention: str) -> FamilialGPTModel:
    return FamilialGPTModel(
        fcfg,
        tcfg,
        pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=vp == 1, vp_stage=stage),
        post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=vp == 1, vp_stage=stage),
        vp_stage=stage,
        attention=attention,
    )
