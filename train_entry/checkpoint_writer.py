"""How a checkpoint's tensors reach the disk: megatron-core's torch_dist format written by PyTorch DCP, either
synchronously or in a background thread while training goes on (``train.async_save``).

megatron-core's own writer (``FileSystemWriterAsync``, scheduled by its ``AsyncCallsQueue``) forks writer
processes; a process that already runs torch.distributed threads can hang in a forked child (observed on CPU
with gloo). These strategies translate the ShardedTensors exactly as megatron-core does and hand them to DCP's
``FileSystemWriter`` (threads, no fork); the files are the same format, read back by megatron-core's loader.

The asynchronous one is DCP's ``async_save``: the state is staged (copied to host memory) before the call
returns, so the next optimizer steps cannot change what is written; planning and writing run in a thread on a
gloo group of their own (DCP's collectives from that thread must not interleave with the training's). A save is
published (``latest_checkpointed_iteration.txt`` written, old iterations pruned) only once every rank's write
has finished (``PendingSave``): a job killed mid-write resumes from the previous checkpoint.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace
from typing import Callable

import torch
import torch.distributed.checkpoint as dcp
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncRequest
from megatron.core.dist_checkpointing.strategies.torch import (
    MCoreSavePlanner,
    TorchDistSaveShardedStrategy,
    _replace_state_dict_keys_with_sharded_keys,
    mcore_to_pyt_state_dict,
)
from torch.distributed.checkpoint import FileSystemWriter


class SyncTorchDistSave(TorchDistSaveShardedStrategy):
    def __init__(self):
        super().__init__("torch_dist", 1)

    def _dcp_args(self, sharded_state_dict, checkpoint_dir) -> dict:
        sharded_state_dict, _, _ = _replace_state_dict_keys_with_sharded_keys(sharded_state_dict, self.keep_only_main_replica)
        return {"state_dict": mcore_to_pyt_state_dict(sharded_state_dict, False),
                "storage_writer": FileSystemWriter(checkpoint_dir, thread_count=self.thread_count),
                "planner": MCoreSavePlanner(dedup_replicated_tensors=not self.keep_only_main_replica, flatten_state_dict=False)}

    def save(self, sharded_state_dict, checkpoint_dir):
        dcp.save(**self._dcp_args(sharded_state_dict, checkpoint_dir))


def staged(sharded_state_dict) -> dict:
    """The state's local tensors copied to host memory (pinned on a GPU machine, for a fast copy) and its
    objects deep-copied: what the optimizer steps after the save changes is not what gets written. Done here,
    on megatron-core's ShardedTensors, because DCP's own stager cannot copy the tensor type megatron-core
    converts them to."""
    from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor

    pin = torch.cuda.is_available()

    def copy(value):
        if isinstance(value, ShardedTensor):
            data = value.data.detach()
            host = torch.empty(data.shape, dtype=data.dtype, pin_memory=pin)
            host.copy_(data, non_blocking=pin)
            return replace(value, data=host)
        if isinstance(value, ShardedObject):
            return replace(value, data=deepcopy(value.data))
        return value

    out = dict_list_map_inplace(copy, dict(sharded_state_dict))
    if pin:
        torch.cuda.synchronize()  # the non-blocking copies have landed before training changes the sources
    return out


class _AlreadyStaged:
    """DCP's stager protocol for a state that ``staged`` copied already."""

    should_synchronize_after_execute = False

    def stage(self, state_dict):
        return state_dict

    def synchronize_staging(self) -> None:
        pass

    def close(self) -> None:
        pass


class ThreadedTorchDistSave(SyncTorchDistSave):
    """``async_save``: staged now, written by a background thread; the request's first finalize function waits
    for the write (and raises its error)."""

    def __init__(self, group):
        super().__init__()
        self.group = group

    def async_save(self, sharded_state_dict, checkpoint_dir) -> AsyncRequest:
        future = dcp.async_save(**self._dcp_args(staged(sharded_state_dict), checkpoint_dir), process_group=self.group,
                                async_stager=_AlreadyStaged())
        return AsyncRequest(None, (), [WriteDone(future)])

    def save(self, sharded_state_dict, checkpoint_dir):
        self.async_save(sharded_state_dict, checkpoint_dir).finalize_fns[0]()


class WriteDone:
    """A background write as megatron-core's finalize function: calling it waits for the write (raising its
    error); ``done`` asks without waiting."""

    def __init__(self, future):
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def __call__(self) -> None:
        self.future.result()


_GROUP = None


def checkpoint_group():
    """A gloo group over every rank for the background writes (created once; collective the first time)."""
    global _GROUP
    if _GROUP is None:
        _GROUP = torch.distributed.new_group(backend="gloo")
    return _GROUP


class PendingSave:
    """A checkpoint being written in the background. ``poll`` (collective, cheap: one integer reduced) says
    whether every rank's write has finished; ``finish`` (collective) waits for it, runs megatron-core's
    finalization (its metadata file) and publishes the iteration."""

    def __init__(self, path: str, step: int, request: AsyncRequest, publish: Callable[[], None]):
        self.path, self.step, self._request, self._publish = path, step, request, publish
        self._write = request.finalize_fns[0]  # WriteDone: megatron-core appends its own finalization after it

    def poll(self) -> bool:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        flag = torch.tensor([int(self._write.done())], dtype=torch.int32, device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def finish(self) -> str:
        for fn in self._request.finalize_fns:
            fn()
        self._publish()
        return self.path
