"""Running megatron-core 0.16 on a machine without CUDA (tests, CI, laptops).

megatron-core assumes CUDA in a few places (``torch.cuda.current_device()`` for RoPE and buffers, a CUDA
causal mask, literal ``device="cuda"`` tensors in the schedules). On a CPU-only torch these calls fail;
this module redirects them to the CPU. It changes nothing when CUDA is available.
"""

from __future__ import annotations

import functools

import torch
from torch.overrides import TorchFunctionMode

_installed = False


def install() -> None:
    """Patch megatron-core for CPU once per process (a no-op with CUDA)."""
    global _installed
    if _installed or torch.cuda.is_available():
        return
    torch.cuda.current_device = lambda: "cpu"
    # dist_checkpointing's writer synchronises the device after its (here CPU-to-CPU) copies
    torch.cuda.synchronize = lambda *args, **kwargs: None
    from megatron.core.fusions import fused_softmax
    from megatron.core.tensor_parallel import random as mcore_random
    from megatron.core.transformer import utils as transformer_utils

    # no CUDA RNG: a tracker whose fork() is a no-op context, so dropout uses the CPU generator
    mcore_random.initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
    # activation recompute saves and restores the CPU and CUDA generators around the re-run forward:
    # there is no CUDA generator, so only the CPU one is kept
    mcore_random._get_cuda_rng_state = lambda *args, **kwargs: None
    mcore_random._set_cuda_rng_state = lambda *args, **kwargs: None

    @functools.lru_cache(maxsize=8)
    def cpu_causal_mask(sq: int, sk: int | None = None) -> torch.Tensor:
        return torch.triu(torch.ones(sq, sk or sq, dtype=torch.bool), diagonal=1)

    transformer_utils.get_default_causal_mask = cpu_causal_mask
    fused_softmax.get_default_causal_mask = cpu_causal_mask

    # the optimizer's clipping asserts CUDA gradients; the same scaling on CPU tensors
    from megatron.core.optimizer import optimizer as mcore_optimizer

    def clip_by_total_norm(parameters, max_norm, total_norm, use_decoupled_grad=False):
        coeff = max_norm / (total_norm + 1.0e-6)
        if coeff < 1.0:
            for p in parameters:
                grad = p.decoupled_grad if use_decoupled_grad else p.grad
                if grad is not None:
                    grad.detach().mul_(coeff)

    mcore_optimizer.clip_grad_by_total_norm_fp32 = clip_by_total_norm
    _installed = True


class CudaToCpuMode(TorchFunctionMode):
    """Rewrites ``device="cuda"`` to the CPU for the megatron-core code that hard-codes it (schedules)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        device = kwargs.get("device")
        if device is not None and str(device).startswith("cuda"):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.cuda:
            return args[0]
        return func(*args, **kwargs)


def device_mode():
    """A context for megatron-core calls: CudaToCpuMode on CPU, nothing with CUDA."""
    import contextlib

    return contextlib.nullcontext() if torch.cuda.is_available() else CudaToCpuMode()
