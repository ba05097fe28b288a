"""megatron-core's GPTDataset reading a prefix on object storage (s3://) through megatron-core's own reader: the
.idx downloaded once into the dataset cache, the .bin by ranged GETs of ``STORE_READ_BYTES``; a local prefix is
memory-mapped as before. Only the chunk size differs from GPTDataset's own object-storage path. A module of its
own (imported when datasets are built): DataLoader workers unpickle the dataset by its class's import path."""

from __future__ import annotations

from megatron.core.datasets.gpt_dataset import GPTDataset
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.object_storage_utils import ObjectStorageConfig, is_object_storage_path

# A sample of the shuffled order reads one piece of each document it spans, far apart in the .bin: each piece
# is one ranged GET of max(this, the piece), held in memory per dataset and worker until the next read.
# megatron-core's 256 MiB default suits sequential reads; here it would fetch 256 MiB per piece.
STORE_READ_BYTES = 256 << 10


class StoreReadingGPTDataset(GPTDataset):
    @staticmethod
    def build_low_level_dataset(dataset_path: str, config) -> IndexedDataset:
        if not is_object_storage_path(dataset_path):
            return GPTDataset.build_low_level_dataset(dataset_path, config)
        store = ObjectStorageConfig(path_to_idx_cache=config.object_storage_cache_path, bin_chunk_nbytes=STORE_READ_BYTES)
        return IndexedDataset(dataset_path, multimodal=False, mmap=False, object_storage_config=store)
