"""DaE stage 1 (Ruyi2 section 4.3.2): deepen the smallest branch with N new decoder blocks.

The blocks are appended after the branch's own layer. Their internal weights are Gaussian random
(megatron-core's init), and the output projections of attention and MLP are zero, so each block starts
as the identity (its residual adds nothing) and the branch's outputs are unchanged at step 0. Everything
else is frozen: only the new blocks and the branch's LM head train, and the optimizer is built from the
trainable parameters alone.
"""

from __future__ import annotations

import torch
from megatron.core.transformer.spec_utils import build_module

from train_entry.model import FamilialGPTModel


def append_dae_blocks(model: FamilialGPTModel, exit_layer: int, blocks: int = 3) -> torch.nn.ModuleList:
    """Appends ``blocks`` identity-initialised decoder blocks to branch ``exit_layer`` (``exits.<e>.blocks``)."""
    key = str(exit_layer)
    if key not in model.exits:
        raise ValueError(f"exit {exit_layer} has no branch on this stage (branches: {sorted(model.exits.keys())})")
    branch = model.exits[key]
    for _ in range(blocks):
        block = build_module(model.layer_spec, config=model.config, layer_number=exit_layer + 2 + len(branch.blocks))
        with torch.no_grad():
            block.self_attention.linear_proj.weight.zero_()
            block.mlp.linear_fc2.weight.zero_()
        branch.blocks.append(block)
    return branch.blocks


def freeze_for_dae(model: FamilialGPTModel, exit_layer: int) -> list[torch.nn.Parameter]:
    """Freeze everything but the DaE blocks and the LM head of ``exit_layer``; returns the trainable params."""
    key = str(exit_layer)
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = list(model.exits[key].blocks.parameters()) + list(model.exits[key].head.parameters())
    for p in trainable:
        p.requires_grad_(True)
    return trainable
