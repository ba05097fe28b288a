"""The familial model: megatron-core's GPTModel with Ruyi2's early-exit branches.

Branch k taps the backbone after layer e_k - 1 (global ``layer_number == e_k``), runs its own decoder layer
(built from the same layer spec, so it is sharded like the backbone under tensor parallelism), its own
RMSNorm and its own vocab-parallel LM head. The last exit is the full model.

The exit loss is attached to the trunk activation with ``ExitLossInjector``, an autograd function that is
the identity forward and injects d(lambda_k * CE_k) = scale in backward, the same trick megatron-core uses
for the MoE auxiliary loss (``MoEAuxLossAutoScaler``). Every stock megatron-core schedule (no pipelining,
1F1B, interleaved) then trains the exits without a forked schedule, on whichever pipeline stage holds them.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.transformer.spec_utils import build_module
from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

from train_entry.model_config import FamilialConfig


class ExitLossInjector(torch.autograd.Function):
    """Identity on ``hidden``; in backward, the gradient of the attached scalar loss is ``scale``."""

    scale = torch.tensor(1.0)  # the trainer sets 1/num_microbatches (times the loss scale under fp16)

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(loss)
        return hidden

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (loss,) = ctx.saved_tensors
        return grad, torch.ones_like(loss) * ExitLossInjector.scale.to(loss.device)


class ShardedModuleDict(torch.nn.ModuleDict):
    """A ModuleDict whose distributed-checkpoint state delegates to each child's ``sharded_state_dict``.

    megatron-core treats a plain ModuleDict as replicated across tensor-parallel ranks, which would save
    every rank's slice of a branch layer or head under one global shape."""

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None) -> dict:
        from megatron.core.transformer.utils import sharded_state_dict_default

        # the tensor-parallel group must be explicit: without it replicated tensors (norms) get TP rank 0
        # in their replica id on every rank, and loading rejects the duplicate main replicas
        tp_group = parallel_state.get_tensor_model_parallel_group()
        out = {}
        for name, module in self.items():
            out.update(sharded_state_dict_default(module, f"{prefix}{name}.", sharded_offsets, metadata, tp_group=tp_group))
        return out


class ShardedModuleList(torch.nn.ModuleList):
    sharded_state_dict = ShardedModuleDict.sharded_state_dict

    def items(self):
        return ((str(i), m) for i, m in enumerate(self))


class FamilialGPTModel(GPTModel):
    def __init__(self, fcfg: FamilialConfig, transformer_config, pre_process: bool = True, post_process: bool = True):
        spec = get_gpt_layer_local_spec(qk_layernorm=True, normalization="RMSNorm")
        super().__init__(
            config=transformer_config,
            transformer_layer_spec=spec,
            vocab_size=fcfg.vocab_size,
            max_sequence_length=fcfg.max_sequence_length,
            pre_process=pre_process,
            post_process=post_process,
            share_embeddings_and_output_weights=False,
            position_embedding_type="rope",
            rotary_base=int(fcfg.rope_theta),
        )
        self.fcfg = fcfg
        self.exit_weights: dict[int, float] = {e: 1.0 for e in fcfg.exits}  # lambda_k(t), set each step
        self.exit_losses: dict[int, torch.Tensor] = {}  # last forward's per-exit CE (detached)
        self._batch_ctx: dict | None = None
        # exit losses not attached to the trunk (nothing below their tap trains): the caller adds them to its loss
        self.pending_exit_losses: list[torch.Tensor] = []
        self._recompute_ctx: dict[int, dict] = {}  # layer input storage -> batch, for layers recomputed in the backward
        self.ee_layers = ShardedModuleDict()
        self.ee_norms = ShardedModuleDict()
        self.ee_heads = ShardedModuleDict()
        self.dae_blocks = ShardedModuleDict()  # DaE: extra blocks after a branch layer (train_entry/dae.py)
        offset = get_transformer_layer_offset(self.config, self.vp_stage)
        cfg = self.config
        for e in fcfg.aux_exits:
            local = [layer for layer in self.decoder.layers if layer.layer_number == e]
            if not local:
                continue  # this exit's tap layer lives on another pipeline stage
            key = str(e)
            self.ee_layers[key] = build_module(spec, config=cfg, layer_number=e + 1 - offset)
            self.ee_norms[key] = build_module(
                self.decoder.submodules.layer_norm, config=cfg, hidden_size=cfg.hidden_size, eps=cfg.layernorm_epsilon
            )
            self.ee_heads[key] = tensor_parallel.ColumnParallelLinear(
                cfg.hidden_size,
                self.vocab_size,
                config=cfg,
                init_method=cfg.init_method,
                bias=False,
                skip_bias_add=False,
                gather_output=not self.parallel_output,
            )
            local[0].register_forward_hook(self._exit_hook(e), with_kwargs=True)

    @property
    def local_exits(self) -> list[int]:
        """Exits whose loss this pipeline stage computes (the full-model exit on the last stage)."""
        out = [int(k) for k in self.ee_layers.keys()]
        if self.post_process:
            out.append(self.fcfg.exits[-1])
        return out

    def init_branches_from_backbone(self) -> None:
        """Branch layer k <- backbone layer e_k (the layer right after the exit), as in Ruyi2.

        Under pipeline parallelism layer e_k can live on the next stage: every stage contributes the
        source layers it holds (its own tensor-parallel shard) through an all-gather over its pipeline
        group. Collective: every rank of the pipeline group must call it."""
        needed = {e + 1 for e in self.fcfg.aux_exits}
        sources = {
            layer.layer_number: {k: v.detach().cpu() for k, v in layer.state_dict().items() if isinstance(v, torch.Tensor)}
            for layer in self.decoder.layers
            if layer.layer_number in needed
        }
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            gathered: list = [None] * parallel_state.get_pipeline_model_parallel_world_size()
            torch.distributed.all_gather_object(gathered, sources, group=parallel_state.get_pipeline_model_parallel_group())
            sources = {n: sd for part in gathered for n, sd in part.items()}
        with torch.no_grad():
            for key, branch in self.ee_layers.items():
                branch.load_state_dict(sources[int(key) + 1], strict=False)

    def _exit_hook(self, e: int):
        key = str(e)

        def hook(module, args, kwargs, output):
            ctx = self._batch_ctx
            layer_input = kwargs.get("hidden_states", args[0] if args else None)
            if ctx is None and torch.is_grad_enabled() and layer_input is not None:
                # activation recompute re-runs this layer in the backward, after forward() has returned: the
                # batch's labels were kept for it under the storage of the layer's saved input
                ctx = self._recompute_ctx.pop(layer_input.data_ptr(), None)
            elif ctx is not None and not torch.is_grad_enabled() and tensor_parallel.random.is_checkpointing():
                self._recompute_ctx[layer_input.data_ptr()] = ctx  # the no-grad first pass of a recomputed layer
            if ctx is None or (ctx.get("labels") is None and not ctx.get("collect_logits")):
                return output
            hidden, context = output
            branch_kwargs = dict(kwargs)
            branch_kwargs["hidden_states"] = hidden
            h, _ = self.ee_layers[key](**branch_kwargs)
            for block in self.dae_blocks[key] if key in self.dae_blocks else ():
                h, _ = block(**dict(branch_kwargs, hidden_states=h))
            h = self.ee_norms[key](h)
            if ctx.get("collect_logits") and ctx.get("positions") is not None:
                h = _at_positions(h, ctx["positions"])
            logits, _ = self.ee_heads[key](h)
            if ctx.get("collect_logits"):
                ctx["logits"][e] = logits.transpose(0, 1).contiguous()  # [s, b, v] -> [b, s, v]
                return output
            token_loss = self.compute_language_model_loss(ctx["labels"], logits)  # [b, s]
            loss = masked_mean(token_loss, ctx.get("loss_mask"))
            self.exit_losses[e] = loss.detach().clone()
            if not torch.is_grad_enabled():
                return output
            weighted = self.exit_weights[e] * loss
            if not hidden.requires_grad and parallel_state.is_pipeline_last_stage():
                # nothing below the tap trains (DaE): attached to the trunk, the loss would pull every frozen layer
                # above the tap into the backward; the caller adds it to the loss of the final exit instead
                self.pending_exit_losses.append(weighted)
                return output
            return ExitLossInjector.apply(hidden, weighted), context

        return hook

    @torch.no_grad()
    def exit_logits(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                    positions: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        """Logits [b, s, v] of every exit held by this stage (TP=PP=1: all of them), for evaluation,
        export checks and early-exit inference. ``positions`` [b, k]: only the logits at those positions of
        each row ([b, k, v]): the heads then see k positions, not s (scoring a continuation, generating)."""
        self._batch_ctx = {"collect_logits": True, "logits": {}, "positions": positions}
        gather = None
        if positions is not None and self.post_process:
            gather = self.output_layer.register_forward_pre_hook(lambda mod, args: (_at_positions(args[0], positions), *args[1:]))
        try:
            final = super().forward(input_ids, position_ids, None)
            logits = dict(self._batch_ctx["logits"])
        finally:
            self._batch_ctx = None
            if gather is not None:
                gather.remove()
        if self.post_process:
            logits[self.fcfg.exits[-1]] = final
        return logits

    def forward(self, input_ids, position_ids, attention_mask, *args, labels=None, loss_mask=None, **kwargs):
        self._batch_ctx = {"labels": labels, "loss_mask": loss_mask}
        try:
            return super().forward(input_ids, position_ids, attention_mask, *args, labels=labels, **kwargs)
        finally:
            self._batch_ctx = None


def _at_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """hidden [s, b, h] at positions [b, k] of each row -> [k, b, h]."""
    index = positions.t().to(hidden.device)
    return hidden.gather(0, index.unsqueeze(-1).expand(*index.shape, hidden.shape[-1]))


def masked_mean(token_loss: torch.Tensor, loss_mask: torch.Tensor | None) -> torch.Tensor:
    token_loss = token_loss.float()
    if loss_mask is None:
        return token_loss.mean()
    mask = loss_mask.float()
    return (token_loss * mask).sum() / mask.sum().clamp(min=1.0)


def build_model(
    fcfg: FamilialConfig, tp: int = 1, pp: int = 1, params_dtype=torch.float32, pipeline_layout: list | None = None,
    recompute: str = "none", init_branches: bool = True,
) -> FamilialGPTModel:
    """``pipeline_layout``: megatron-core's per-stage layer layout (train_entry/pipeline_balance.py); None
    splits the layers evenly. ``recompute``: see ``FamilialConfig.transformer_config``. ``init_branches``:
    copy the backbone layers into the branches (not for a skeleton on the meta device, which has no values)."""
    tcfg = fcfg.transformer_config(tp=tp, pp=pp, params_dtype=params_dtype, pipeline_layout=pipeline_layout,
                                   recompute=recompute)
    model = FamilialGPTModel(
        fcfg,
        tcfg,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
    )
    if init_branches:
        model.init_branches_from_backbone()
    return model
