"""The optimizer side of training, as megatron-core runs it: the model wrapped in megatron-core's
``DistributedDataParallel`` (gradients in contiguous fp32 buckets, reduced over the data-parallel group,
overlapped with the backward on GPU) and ``get_megatron_optimizer`` (Adam with decoupled weight decay;
fp32 master weights when the parameters are bf16; the distributed optimizer as an option), whose step
computes the gradient norm over the whole model-parallel model, clips by it and returns it.

Weight decay shrinks weight matrices; applied to norms' gains, biases and embedding rows it pulls them
towards zero for no benefit (Megatron-LM and most LLM recipes exempt them), so those get ``wd_mult`` 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from train_entry import cpu_support


@dataclass(frozen=True)
class OptimizerSettings:
    lr: float
    min_lr: float
    weight_decay: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float = 1.0  # largest gradient norm (0: no clipping)
    bf16: bool = False  # bf16 parameters and activations, fp32 master weights and gradient reduction
    distributed: bool = False  # optimizer state sharded over the data-parallel ranks (ZeRO-1)


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Norm gains, biases and embeddings (1-D tensors and the word embedding) get no weight decay."""
    return param.ndim < 2 or name.endswith(".bias") or "word_embeddings" in name


def wrap_model(chunks: list, s: OptimizerSettings) -> list:
    """megatron-core's DDP around each model chunk; trainable parameters (``requires_grad``) must be final.
    Under interleaved 1F1B the chunks after the first reduce their gradients in one bucket each (as
    Megatron-LM's ``get_model`` sets them up).

    bf16: the model goes inside megatron-core's ``Float16Module`` first (as Megatron-LM's ``get_model``
    does): every parameter becomes bf16, norms included (the local spec builds them in fp32 whatever
    ``params_dtype`` says, and an fp32 norm would hand fp32 activations to the next bf16 layer), floating
    inputs are cast to bf16 on the first pipeline stage and the loss back to fp32 on the last."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.transformer.module import Float16Module

    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=torch.cuda.is_available(),  # gloo on CPU: reduce after the backward
        use_distributed_optimizer=s.distributed,
    )
    with cpu_support.device_mode():
        return [DistributedDataParallel(chunk.config, ddp_config, Float16Module(chunk.config, chunk) if s.bf16 else chunk,
                                        disable_bucketing=i > 0)
                for i, chunk in enumerate(chunks)]


def build_optimizer(ddp_chunks: list, s: OptimizerSettings):
    from megatron.core.optimizer import OptimizerConfig, ParamKey, get_megatron_optimizer
    from megatron.core.optimizer.optimizer_config import ParamWithNamePredicate

    config = OptimizerConfig(
        optimizer="adam",
        lr=s.lr,
        min_lr=s.min_lr,
        weight_decay=s.weight_decay,
        adam_beta1=s.betas[0],
        adam_beta2=s.betas[1],
        adam_eps=s.eps,
        clip_grad=s.clip_grad,
        bf16=s.bf16,
        params_dtype=torch.bfloat16 if s.bf16 else torch.float32,
        use_distributed_optimizer=s.distributed,
    )
    exempt = ParamKey(with_name_predicate=ParamWithNamePredicate(name="no_decay", fn=lambda p, n: no_decay(n, p)))
    with cpu_support.device_mode():
        return get_megatron_optimizer(config, ddp_chunks, config_overrides={exempt: {"wd_mult": 0.0}})


def inner_optimizers(optimizer) -> list:
    """The megatron optimizers inside a ChainedOptimizer (or the optimizer itself)."""
    return list(getattr(optimizer, "chained_optimizers", [optimizer]))


def optimizer_step(optimizer) -> tuple[bool, float]:
    """Clip and step; returns (stepped, gradient norm before clipping)."""
    with cpu_support.device_mode():
        ok, norm, _ = optimizer.step()
    return bool(ok), float(norm) if norm is not None else 0.0
