"""Where a command's model and its inputs live: one device for both, the GPU when there is one.

megatron-core builds linears and embeddings on the current CUDA device (``use_cpu_initialization`` off) but
the local spec's torch RMSNorm on the CPU, and a batch comes off the dataset on the CPU: every command that
runs a model (eval, compress) moves the whole model to ``compute_device()`` and each input to the model's
device at the call, and gets results back on the CPU (``tests/test_devices.py`` checks each call site).
"""

from __future__ import annotations

import torch


def compute_device() -> torch.device:
    """The current CUDA device when CUDA is present, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def model_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch's tensors on ``device`` (from pinned memory without blocking)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
