"""An early exit as megatron-core modules: the branch built from a spec, the tap layer that feeds it, and
the auto-scaler that attaches its loss to the trunk.

Branch k (``ExitBranch``, built by ``build_module`` from ``exit_branch_spec``) is its own decoder layer (the
backbone's layer spec, so it is sharded like the backbone under tensor parallelism), the DaE blocks appended
after it (train_entry/dae.py), its own RMSNorm and its own vocab-parallel LM head.

Backbone layer e_k is built as an ``ExitTapLayer`` (the decoder's layer spec names that class at the tap
positions): after its own forward it hands its output to the model, which runs the branch and attaches the
weighted exit loss with ``ExitLossAutoScaler``, in the style of megatron-core's ``MTPLossAutoScaler``: the
identity forward, d(lambda_k * CE_k) = scale in backward. The loss rides on the trunk activation, so every
stock schedule (no pipelining, 1F1B, interleaved) trains the exits on whichever pipeline stage holds them,
and under activation recompute the tap layer is recomputed with the branch inside it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from megatron.core.transformer.transformer_layer import TransformerLayer


class ExitLossAutoScaler(torch.autograd.Function):
    """Identity on ``hidden``; in backward, the gradient of the attached scalar loss is ``main_loss_backward_scale``."""

    main_loss_backward_scale = torch.tensor(1.0)

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(loss)
        return hidden

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (loss,) = ctx.saved_tensors
        return grad, torch.ones_like(loss) * ExitLossAutoScaler.main_loss_backward_scale.to(loss.device)

    @staticmethod
    def set_loss_scale(scale: torch.Tensor) -> None:
        """1/num_microbatches, as the schedule divides the final exit's loss (times the loss scale under fp16)."""
        ExitLossAutoScaler.main_loss_backward_scale = scale


def tp_sharded_state_dict(children, prefix: str, sharded_offsets: tuple, metadata: dict | None) -> dict:
    """The distributed-checkpoint state of ``children`` ((name, module) pairs), each through its own
    ``sharded_state_dict``, with the tensor-parallel group explicit: without it replicated tensors (norms)
    get TP rank 0 in their replica id on every rank, and loading rejects the duplicate main replicas."""
    from megatron.core.transformer.utils import sharded_state_dict_default

    tp_group = parallel_state.get_tensor_model_parallel_group()
    out = {}
    for name, module in children:
        out.update(sharded_state_dict_default(module, f"{prefix}{name}.", sharded_offsets, metadata, tp_group=tp_group))
    return out


class ShardedModuleDict(torch.nn.ModuleDict):
    """A ModuleDict whose distributed-checkpoint state delegates to each child: megatron-core treats a plain
    ModuleDict as replicated across tensor-parallel ranks, which would save every rank's slice of a branch
    layer or head under one global shape."""

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None) -> dict:
        return tp_sharded_state_dict(self.items(), prefix, sharded_offsets, metadata)


class ShardedModuleList(torch.nn.ModuleList):
    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None) -> dict:
        return tp_sharded_state_dict(((str(i), m) for i, m in enumerate(self)), prefix, sharded_offsets, metadata)


@dataclass
class ExitBranchSubmodules:
    layer: ModuleSpec  # the backbone's decoder layer spec
    norm: ModuleSpec | type  # the backbone's final norm
    head: ModuleSpec | type = tensor_parallel.ColumnParallelLinear


def exit_branch_spec(layer_spec: ModuleSpec, norm: ModuleSpec | type) -> ModuleSpec:
    return ModuleSpec(module=ExitBranch, submodules=ExitBranchSubmodules(layer=layer_spec, norm=norm))


class ExitBranch(MegatronModule):
    """One early exit: ``layer`` (initialised from backbone layer e_k + 1), DaE ``blocks``, ``norm``, ``head``."""

    def __init__(self, config, submodules: ExitBranchSubmodules, exit_layer: int, layer_number: int, vocab_size: int,
                 parallel_output: bool = True, vp_stage: int | None = None):
        """``layer_number``: local to this model chunk (``vp_stage`` under interleaving), as a decoder layer's."""
        super().__init__(config=config)
        self.exit_layer = exit_layer
        self.layer = build_module(submodules.layer, config=config, layer_number=layer_number, vp_stage=vp_stage)
        self.blocks = ShardedModuleList()  # DaE stage 1 appends here
        self.norm = build_module(submodules.norm, config=config, hidden_size=config.hidden_size, eps=config.layernorm_epsilon)
        self.head = build_module(submodules.head, config.hidden_size, vocab_size, config=config, init_method=config.init_method,
                                 bias=False, skip_bias_add=False, gather_output=not parallel_output)

    def forward(self, hidden: torch.Tensor, layer_kwargs: dict, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [s, b, v/tp] of the trunk activation ``hidden`` [s, b, h] after layer e_k; ``layer_kwargs``
        are the tap layer's own (attention mask, rotary embeddings, packed-sequence parameters); ``positions``
        [b, k]: the logits at those positions only ([k, b, v/tp])."""
        h, _ = self.layer(**dict(layer_kwargs, hidden_states=hidden))
        for block in self.blocks:
            h, _ = block(**dict(layer_kwargs, hidden_states=h))
        h = self.norm(h)
        if positions is not None:
            h = at_positions(h, positions)
        logits, _ = self.head(h)
        return logits

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None) -> dict:
        return tp_sharded_state_dict(self.named_children(), prefix, sharded_offsets, metadata)


class ExitTapLayer(TransformerLayer):
    """A backbone decoder layer that hands its output to its model's exit branch (``FamilialGPTModel.tap``)."""

    _model: weakref.ref | None = None  # set by attach

    def attach(self, model) -> None:
        self._model = weakref.ref(model)  # not a submodule: the model owns this layer

    def forward(self, *args, **kwargs):
        output, context = super().forward(*args, **kwargs)
        model = self._model() if self._model is not None else None
        if model is not None:
            layer_input = kwargs.get("hidden_states", args[0] if args else None)
            output = model.tap(self.layer_number, layer_input, output, kwargs)
        return output, context


def at_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """hidden [s, b, h] at positions [b, k] of each row -> [k, b, h]."""
    index = positions.t().to(hidden.device)
    return hidden.gather(0, index.unsqueeze(-1).expand(*index.shape, hidden.shape[-1]))
