"""Distributed checkpoints of the familial model and its optimizer, in megatron-core's sharded format.

Every tensor is saved as a ``ShardedTensor`` with its global shape and this rank's slice, through
``megatron.core.dist_checkpointing`` (PyTorch DCP underneath), so a checkpoint written at one TP/PP layout
loads at another. The branch modules (exit layers, norms, heads, DaE blocks) are part of the model's
sharded state dict like any backbone layer. The optimizer is megatron-core's: its own
``sharded_state_dict`` shards Adam's moments (and fp32 master weights under bf16) like their parameters.

Layout, as Megatron-LM writes it::

    checkpoint/latest_checkpointed_iteration.txt   # "12"
    checkpoint/iter_0000012/                       # dist_checkpointing folder (.distcp + metadata)
    checkpoint/iter_0000012/rng/rank_00000.pt      # each rank's random generators (torch, CUDA, megatron-core's
                                                   # tracker, numpy, Python), tensors only: loaded weights_only

``keep``: after a save, only the newest ``keep`` iteration folders are kept (a 14B save is ~238 GB).
"""

from __future__ import annotations

import os
import random
import re
import shutil

import numpy as np
import torch
from torch.distributed.checkpoint.api import CheckpointException

from pipeline.core.atomic import write_text
from pipeline.core.errors import StageError
from train_entry import cpu_support
from train_entry.hf_interop import DAE_BLOCK

LATEST = "latest_checkpointed_iteration.txt"
RNG = "rng"
ITERATION = re.compile(r"^iter_(\d{7})$")


class CheckpointError(StageError):
    """A checkpoint folder that cannot be read or does not fit the model; the message names it."""


def iteration_dir(folder: str, step: int) -> str:
    return os.path.join(folder, f"iter_{step:07d}")


def latest_iteration(folder: str) -> int | None:
    path = os.path.join(folder, LATEST)
    if not os.path.exists(path):
        return None
    text = open(path).read().strip()
    if not text.isdigit():
        raise CheckpointError(f"{path}: expected an iteration number, found {text[:40]!r}")
    step = int(text)
    if not os.path.isdir(iteration_dir(folder, step)):
        raise CheckpointError(f"{path} names iteration {step}, but {iteration_dir(folder, step)} does not exist")
    return step


def _init_adam_state(optimizer) -> None:
    """Adam creates its state lazily at the first step; a checkpoint taken before it still needs the
    moments (zero, exactly what Adam would create) and the step, so that it loads like any other."""
    from train_entry.optim import inner_optimizers

    for inner in inner_optimizers(optimizer):
        torch_optimizer = inner.optimizer
        for group in torch_optimizer.param_groups:
            for p in group["params"]:
                if not torch_optimizer.state[p]:
                    torch_optimizer.state[p] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }


def optimizer_kind(optimizer) -> str:
    """``distributed`` (state sharded over the data-parallel ranks) or ``plain``: their checkpoints differ."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    from train_entry.optim import inner_optimizers

    return "distributed" if any(isinstance(o, DistributedOptimizer) for o in inner_optimizers(optimizer)) else "plain"


# The distributed optimizer's state is saved as its data-parallel buckets, each rank its own (Megatron-LM's
# default): a parallel write with no gather, and it loads at another data-parallel size, not at another TP/PP
# layout. megatron-core 0.16's other formats do not work here: 'fully_sharded_model_space' is refused by its own
# dist_checkpointing (flattened ranges), 'fully_reshardable' cannot load a torch Adam state (it expects TE's
# or Apex's FusedAdam, which keep the step outside the per-parameter state).
DISTRIBUTED_OPTIMIZER_FORMAT = {"distrib_optim_sharding_type": "dp_reshardable"}


def as_chunks(model) -> list:
    """A model, or the list of a rank's model chunks (interleaved 1F1B), as a list of chunks."""
    return list(model) if isinstance(model, (list, tuple)) else [model]


def _model_keys(chunks: list) -> list[str]:
    """Megatron-LM's names: ``model``, or ``model0``, ``model1``... for chunks. Only the names of the
    nesting differ: every tensor is stored under its global key, so a checkpoint loads into any number of
    chunks."""
    return ["model"] if len(chunks) == 1 else [f"model{i}" for i in range(len(chunks))]


def _sharded_state(model, optimizer, common: dict, is_loading: bool) -> dict:
    # Adam's state exists from the first step; megatron-core builds its template from it, also when loading
    _init_adam_state(optimizer)
    chunks = as_chunks(model)
    models = {key: chunk.sharded_state_dict() for key, chunk in zip(_model_keys(chunks), chunks)}
    with cpu_support.device_mode():  # the distributed optimizer moves its buckets through CUDA tensors
        optimizer_sd = optimizer.sharded_state_dict(models, is_loading=is_loading, metadata=DISTRIBUTED_OPTIMIZER_FORMAT)
    return {**models, "optimizer": optimizer_sd, "common": common}


def save(folder: str, step: int, model, optimizer, common: dict, keep: int | None = None, asynchronous: bool = False):
    """Collective: every rank of the job calls it; ``model``: the model or the rank's model chunks. Each rank's
    random generators are saved beside (a resumed run draws what the uninterrupted one would); ``keep``: the
    newest iteration folders kept. Returns the iteration folder, or with ``asynchronous`` a ``PendingSave``
    whose ``finish`` publishes it (``train_entry/checkpoint_writer.py``)."""
    common = dict(common, step=step, optimizer=optimizer_kind(optimizer))
    return _save(folder, step, _sharded_state(model, optimizer, common, is_loading=False), rng=True, keep=keep,
                 asynchronous=asynchronous)


def rng_state() -> dict:
    """This process's random generators as tensors and numbers (``torch.load(weights_only=True)`` reads them)."""
    from megatron.core import tensor_parallel

    py = random.getstate()
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
             "numpy": {"state": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
        state["tracker"] = dict(tensor_parallel.get_cuda_rng_tracker().get_states())
    return state


def set_rng_state(state: dict) -> None:
    from megatron.core import tensor_parallel

    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
        tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _rank_file(path: str) -> str:
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return os.path.join(path, RNG, f"rank_{rank:05d}.pt")


def prune(folder: str, keep: int) -> list[str]:
    """Removes all but the newest ``keep`` iteration folders (never the latest); returns what it removed."""
    latest = latest_iteration(folder)
    steps = sorted(int(m.group(1)) for name in os.listdir(folder) if (m := ITERATION.match(name)))
    gone = [iteration_dir(folder, s) for s in steps[:-keep] if s != latest] if keep > 0 else []
    for path in gone:
        shutil.rmtree(path)
    return gone


def save_weights(folder: str, step: int, model, common: dict | None = None) -> str:
    """The model's weights only, in the same layout (read back with ``load_weights``)."""
    return _save(folder, step, {"model": model.sharded_state_dict(), "common": dict(common or {}, step=step)})


def _save(folder: str, step: int, state: dict, rng: bool = False, keep: int | None = None, asynchronous: bool = False):
    from megatron.core import dist_checkpointing

    from pipeline.core.atomic import atomic_open
    from train_entry.checkpoint_writer import PendingSave, SyncTorchDistSave, ThreadedTorchDistSave, checkpoint_group

    path = iteration_dir(folder, step)
    rank0 = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    if rank0:
        os.makedirs(path, exist_ok=True)
    torch.distributed.barrier()
    strategy = ThreadedTorchDistSave(checkpoint_group()) if asynchronous else SyncTorchDistSave()
    request = dist_checkpointing.save(state, path, sharded_strategy=strategy, async_sharded_save=asynchronous)
    if rng:
        os.makedirs(os.path.join(path, RNG), exist_ok=True)
        with atomic_open(_rank_file(path), "wb") as f:
            torch.save(rng_state(), f)

    def publish() -> None:
        torch.distributed.barrier()
        if rank0:  # written last: a crash mid-save leaves the previous iteration as the latest
            write_text(os.path.join(folder, LATEST), f"{step}\n")
            if keep:
                prune(folder, keep)
        torch.distributed.barrier()

    if asynchronous:
        return PendingSave(path, step, request, publish)
    publish()
    return path


def load_weights(folder: str, model, step: int | None = None) -> str:
    """The model's weights only (no optimizer state, which a new run does not want and which would double
    the host memory), from iteration ``step`` of a checkpoint of ours written at any TP/PP layout: the
    start of a continued run. ``model``: the model or the rank's model chunks. DaE blocks that the
    checkpoint lacks (added for this run) keep their fresh initialisation. Collective; returns the
    iteration folder read."""
    from megatron.core import dist_checkpointing

    step = latest_iteration(folder) if step is None else step
    if step is None:
        raise CheckpointError(f"{folder}: no {LATEST}: not a checkpoint folder of this project")
    path = iteration_dir(folder, step)
    chunks = as_chunks(model)
    try:
        stored = set(dist_checkpointing.load_tensors_metadata(path).keys())
        template = {}
        for key, chunk in zip(_model_keys(chunks), chunks):
            wanted = {name: sh for name, sh in chunk.sharded_state_dict().items()
                      if not (DAE_BLOCK.match(name) and sh.key not in stored)}
            absent = sorted(sh.key for sh in wanted.values() if sh.key not in stored and not name_is_extra_state(sh.key))
            if absent:
                raise CheckpointError(f"{path}: the checkpoint has no {absent[:5]} (a model of another shape or other exits)")
            template[key] = {name: sh for name, sh in wanted.items() if sh.key in stored}
        loaded = dist_checkpointing.load(template, path)
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as exc:  # DCP's error is a BaseException
        raise CheckpointError(f"{path}: cannot load the checkpoint ({type(exc).__name__}: {str(exc)[:500]})") from exc
    for key, chunk in zip(_model_keys(chunks), chunks):
        chunk.load_state_dict(loaded[key], strict=False)
    return path


def name_is_extra_state(key: str) -> bool:
    return key.endswith("_extra_state")


def load(folder: str, model, optimizer, step: int | None = None) -> dict:
    """Restore model (or the rank's model chunks) and optimizer in place from iteration ``step`` (default:
    the latest); returns the common state saved with it (``step`` included). Collective."""
    from megatron.core import dist_checkpointing

    step = latest_iteration(folder) if step is None else step
    if step is None:
        raise CheckpointError(f"{folder}: no {LATEST}, nothing to resume from")
    path = iteration_dir(folder, step)
    try:
        saved_with = dist_checkpointing.load_common_state_dict(path).get("common", {}).get("optimizer", "plain")
    except (Exception, CheckpointException) as exc:
        raise CheckpointError(f"{path}: cannot load the checkpoint ({type(exc).__name__}: {str(exc)[:500]})") from exc
    if saved_with != optimizer_kind(optimizer):
        raise CheckpointError(f"{path}: written with the {saved_with} optimizer, this run has the {optimizer_kind(optimizer)} "
                              f"one (train.distributed_optimizer): their states differ; resume with the same setting, or "
                              f"start a new run from its weights with train.init_from")
    template = _sharded_state(model, optimizer, {}, is_loading=True)
    try:
        loaded = dist_checkpointing.load(template, path)
    except (Exception, CheckpointException) as exc:  # a truncated or foreign folder: name it (DCP's error is a BaseException)
        raise CheckpointError(f"{path}: cannot load the checkpoint ({type(exc).__name__}: {str(exc)[:500]})") from exc
    chunks = as_chunks(model)
    for key, chunk in zip(_model_keys(chunks), chunks):
        missing, unexpected = chunk.load_state_dict(loaded[key], strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        if missing or unexpected:
            raise CheckpointError(f"{path}: checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    common = loaded["common"]
    _set_adam_step(loaded["optimizer"], int(common["step"]))
    with cpu_support.device_mode():
        optimizer.load_state_dict(loaded["optimizer"])
    if os.path.exists(_rank_file(path)):  # checkpoints before 2026-12-07 have none
        set_rng_state(torch.load(_rank_file(path), weights_only=True))
    return common


def _set_adam_step(optim_state, step: int) -> None:
    """Adam's bias correction counts the steps taken, which is the trainer's step (bf16 and fp32 runs never
    skip one). megatron-core stores it as one ``common_step``, but not when it is 0: set it everywhere."""
    if isinstance(optim_state, dict) and "state" in optim_state and "param_groups" in optim_state:
        optim_state["state"]["common_step"] = torch.tensor(float(step))
    elif isinstance(optim_state, dict):  # chained optimizers, or a mixed-precision optimizer's inner state
        for value in optim_state.values():
            _set_adam_step(value, step)
