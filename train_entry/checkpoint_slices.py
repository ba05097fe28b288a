"""Part of a distributed checkpoint without the rest: the tensors of some modules (one decoder layer, the
embedding, one exit's head) read from a megatron-core ``torch_dist`` checkpoint in one process, so an
export holds one module at a time instead of the whole model.

The names, slices and fused-tensor splits come from megatron-core itself: a skeleton of the model on the
meta device (no memory) gives its ``sharded_state_dict`` (the key of each parameter in the checkpoint, its
offset in a layer-stacked tensor, the gate/up factories of ``linear_fc1``). Only the read is written here,
because megatron-core's loader expects every fragment of a stacked tensor in a one-process world and
PyTorch DCP's default planner reads whole tensors: the read items come from DCP's own resharding helper
(``create_read_items_for_chunk_list``) and are served by DCP's ``FileSystemReader``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadPlan
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list


class _Destinations:
    """What DCP's reader calls while reading: where each read item lands (a view of the destination)."""

    def __init__(self, chunks: dict[str, list[torch.Tensor]]):
        self.chunks = chunks

    def resolve_tensor(self, read_item) -> torch.Tensor:
        t = self.chunks[read_item.dest_index.fqn][read_item.dest_index.index]
        for dim, (start, length) in enumerate(zip(read_item.dest_offsets, read_item.lengths)):
            t = t.narrow(dim, start, length)
        return t

    def commit_tensor(self, read_item, tensor) -> None:
        pass

    def load_bytes(self, read_item, value) -> None:
        raise ValueError(f"{read_item.dest_index.fqn}: not a tensor")


class CheckpointSlices:
    """One iteration folder of a ``torch_dist`` checkpoint, read a few modules at a time."""

    def __init__(self, path: str, template: dict):
        """``template``: the model skeleton's ``sharded_state_dict()`` (state-dict name -> ShardedTensor,
        ShardedTensorFactory or ShardedObject)."""
        self.path, self.template = path, template
        self.reader = FileSystemReader(path)
        self.metadata = self.reader.read_metadata()
        self.reader.set_up_storage_reader(self.metadata, is_coordinator=True)

    def stored(self, name: str) -> bool:
        sh = self.template.get(name)
        return sh is not None and getattr(sh, "key", None) in self.metadata.state_dict_metadata

    def load(self, names: list[str]) -> dict[str, torch.Tensor]:
        """The tensors of state-dict ``names`` (their ``_extra_state`` entries skipped), read from disk."""
        from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace, nested_values
        from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories, apply_factory_merges

        wanted = {}
        for name in names:
            if name.endswith("_extra_state"):
                continue
            sh = copy.copy(self.template[name])  # the template keeps its meta tensor: nothing read stays referenced
            sh.data = torch.empty(sh.data.shape, dtype=sh.data.dtype)
            wanted[name] = sh
        factories = {k: v for k, v in wanted.items() if not isinstance(v, ShardedTensor)}
        apply_factories(wanted)  # gate/up halves of linear_fc1 become ShardedTensors over views of one tensor
        chunks: dict[str, list[torch.Tensor]] = {}
        offsets: dict[str, list[ChunkStorageMetadata]] = {}
        for st in nested_values(wanted):
            md = self.metadata.state_dict_metadata.get(st.key)
            if not isinstance(md, TensorStorageMetadata):
                raise KeyError(f"{self.path}: the checkpoint has no tensor {st.key!r}")
            # a layer-stacked tensor has ``prepend_axis_num`` leading axes (the layer) of length 1 here;
            # unsqueeze is always a view, so what DCP writes into it lands in ``st.data``
            view = st.data
            for _ in range(st.prepend_axis_num):
                view = view.unsqueeze(0)
            chunks.setdefault(st.key, []).append(view)
            offsets.setdefault(st.key, []).append(ChunkStorageMetadata(offsets=torch.Size(st.global_offset), sizes=view.shape))
        items = [item for key, local in offsets.items()
                 for item in create_read_items_for_chunk_list(key, self.metadata.state_dict_metadata[key], local)]
        covered: dict[tuple[str, int], int] = {}  # elements each destination receives, to refuse a partial read
        for item in items:
            dest = (item.dest_index.fqn, item.dest_index.index)
            covered[dest] = covered.get(dest, 0) + math.prod(item.lengths)
        for key, views in chunks.items():
            for i, v in enumerate(views):
                if covered.get((key, i), 0) != v.numel():
                    raise KeyError(f"{self.path}: {key!r} at {tuple(offsets[key][i].offsets)} is not (wholly) in the checkpoint")
        self.reader.read_data(LoadPlan(items), _Destinations(chunks)).wait()
        state = dict_list_map_inplace(lambda st: st.data, wanted)
        if factories:
            state = apply_factory_merges(state, factories)
        return state
