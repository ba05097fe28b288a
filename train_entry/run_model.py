"""A run's trained model rebuilt in one process (TP = PP = 1) from what the train stage recorded: its shape
(``train/stats.json``), its DaE blocks and, after ``ruyi2 compress``, its low-rank linears, then the weights
of a checkpoint (whatever TP/PP layout wrote it; no optimizer state). Export and compression both start here.
"""

from __future__ import annotations

import json
import os


def trained_config(run_dir: str):
    """The ``FamilialConfig`` the run trained."""
    from train_entry.model_config import FamilialConfig

    with open(os.path.join(run_dir, "train", "stats.json")) as f:
        model = json.load(f)["model"]
    return FamilialConfig(**{**model, "exits": tuple(model["exits"])})


def run_checkpoint(run_dir: str, compressed: bool = False) -> tuple[str, dict[str, int]]:
    """(checkpoint folder, low-rank ranks by matrix) of a run: its trained model, or the output of
    ``ruyi2 compress`` (its DaE blocks low-rank)."""
    if not compressed:
        return os.path.join(run_dir, "train", "checkpoint"), {}
    stats = os.path.join(run_dir, "compress", "stats.json")
    if not os.path.exists(stats):
        raise FileNotFoundError(f"{run_dir}: no compressed model (compress/stats.json); run `ruyi2 compress` first")
    with open(stats) as f:
        return os.path.join(run_dir, "compress", "checkpoint"), {row["matrix"]: row["rank"] for row in json.load(f)["matrices"]}


def checkpoint_dae_blocks(checkpoint: str) -> dict[int, int]:
    """exit -> DaE blocks the checkpoint holds (train.dae)."""
    from megatron.core import dist_checkpointing

    from train_entry import checkpointing
    from train_entry.hf_interop import dae_blocks_in

    step = checkpointing.latest_iteration(checkpoint)
    if step is None:
        return {}
    return dae_blocks_in(dist_checkpointing.load_tensors_metadata(checkpointing.iteration_dir(checkpoint, step)).keys())


def build_trained(fcfg, dae: dict[int, int], ranks: dict[str, int] | None = None, init_branches: bool = True,
                  cpu_init: bool | None = None):
    """The model the run trained: ``dae`` blocks (exit -> count) and the low-rank linears ``ranks``
    (``exits.<e>.blocks.<j>.<path>`` -> rank) in place, weights freshly initialised. Call inside a
    ``DistributedContext`` (and inside ``torch.device("meta")`` with ``cpu_init`` for a skeleton without
    memory). ``cpu_init``: megatron-core's CPU initialisation whatever CUDA says (None: only without CUDA)."""
    import torch

    from train_entry.dae import append_dae_blocks
    from train_entry.low_rank import LowRankLinear
    from train_entry.model import build_model

    model = build_model(fcfg, init_branches=init_branches, cpu_init=cpu_init)
    for e, n in dae.items():
        append_dae_blocks(model, e, n)
    for name, rank in (ranks or {}).items():
        out_features, in_features = model.get_submodule(name).weight.shape
        replace_module(model, name, LowRankLinear(torch.zeros(out_features, rank), torch.zeros(rank, in_features),
                                                  model.get_submodule(name).weight.dtype))
    return model


def rebuild(fcfg, checkpoint: str, dae: dict[int, int], ranks: dict[str, int] | None = None):
    """``build_trained`` with the checkpoint's weights loaded, the whole model on the compute device (the GPU
    when there is one; ``train_entry/devices.py``); returns (model, iteration folder read). Call inside a
    ``DistributedContext``."""
    from train_entry import checkpointing
    from train_entry.devices import compute_device

    model = build_trained(fcfg, dae, ranks)
    read = checkpointing.load_weights(checkpoint, model)
    return model.to(compute_device()), read


def skeleton(fcfg, dae: dict[int, int], ranks: dict[str, int] | None = None):
    """The trained model's structure on the meta device (no memory, no values): its names and checkpoint
    keys, for reading the checkpoint module by module."""
    import torch

    # megatron-core passes an explicit CUDA device when CUDA is present (its GPU initialisation), which the meta
    # device context does not override: ~68 GB allocated and initialised on GPU 0 for a 14B familial model
    with torch.device("meta"):
        return build_trained(fcfg, dae, ranks, init_branches=False, cpu_init=True)


def replace_module(root, name: str, module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)
