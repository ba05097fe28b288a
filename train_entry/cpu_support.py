"""Running megatron-core 0.16 on a machine without CUDA (tests, CI, laptops).

megatron-core assumes CUDA in a few places (``torch.cuda.current_device()`` for RoPE and buffers, a CUDA
causal mask, literal ``device="cuda"`` tensors and ``.cuda()`` copies in the schedules and the distributed
optimizer, CUDA type names by which its optimizers sort parameters). On a CPU-only torch these calls fail;
this module redirects them to the CPU, so the same megatron-core code paths (bf16 with fp32 master weights,
the distributed optimizer) run in the tests. It changes nothing when CUDA is available.
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
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # megatron-core's optimizers sort parameters by their CUDA type name ("torch.cuda.BFloat16Tensor"
            # gets an fp32 main copy); a CPU tensor answers with its CUDA twin's name
            return func(*args).replace("torch.", "torch.cuda.", 1)
        return func(*args, **kwargs)


def device_mode():
    """A context for megatron-core calls: CudaToCpuMode on CPU, nothing with CUDA."""
    import contextlib

    return contextlib.nullcontext() if torch.cuda.is_available() else CudaToCpuMode()
