"""The optimizer side of a training step: AdamW over megatron-style parameter groups, and the gradient norm
over the whole model-parallel model with clipping.

Weight decay shrinks weight matrices; applied to norms' gains, biases and embedding rows it pulls them
towards zero for no benefit (Megatron-LM and most LLM recipes exempt them), so those form a group without it.
The gradient norm is megatron-core's ``get_grad_norm_fp32`` over the model-parallel group, counting each
parameter once (a tensor-parallel duplicate, e.g. a replicated norm, and a shared embedding are not counted
twice), so every rank sees the norm of the whole model and clips by the same factor.
"""

from __future__ import annotations

import torch

from train_entry import cpu_support


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Norm gains, biases and embeddings (1-D tensors and the word embedding) get no weight decay."""
    return param.ndim < 2 or name.endswith(".bias") or "word_embeddings" in name


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if no_decay(name, p) else decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}) if g["params"]]


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float):
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


def grad_norm(params: list[torch.nn.Parameter]) -> float:
    """The L2 norm of the whole model's gradient (all pipeline stages and tensor-parallel shards). Collective
    over the model-parallel group."""
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.optimizer.clip_grads import get_grad_norm_fp32
    from megatron.core.transformer.module import param_is_not_shared

    grads = [p.grad.float() for p in params if p.grad is not None and param_is_not_shared(p)
             and tensor_parallel.param_is_not_tensor_parallel_duplicate(p)]
    with cpu_support.device_mode():
        return float(get_grad_norm_fp32(grads, grad_stats_parallel_group=parallel_state.get_model_parallel_group()))


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Scale every gradient so the total norm is at most ``max_norm`` (0: no clipping); returns the norm
    before clipping."""
    norm = grad_norm(params)
    if max_norm and norm > max_norm:
        coeff = max_norm / (norm + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(coeff)
    return norm
