"""torch.distributed and megatron-core's parallel state for one training or export process."""

from __future__ import annotations

import os
import socket

import torch

from train_entry import cpu_support


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DistributedContext:
    """torch.distributed (gloo on CPU, nccl on GPU) plus megatron-core's parallel state.

    Under torchrun the environment gives rank and world size; otherwise a single local process group is
    created on 127.0.0.1 and torn down afterwards."""

    def __init__(self, tp: int = 1, pp: int = 1, vp: int = 1):
        """``vp``: model chunks per pipeline rank (interleaved 1F1B); 1 for none."""
        self.tp, self.pp, self.vp, self.owned = tp, pp, vp, False

    def __enter__(self):
        from megatron.core import parallel_state

        if not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if "RANK" in os.environ and "MASTER_ADDR" in os.environ:
                torch.distributed.init_process_group(backend)
            else:
                torch.distributed.init_process_group(
                    backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
                )
            self.owned = True
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        cpu_support.install()
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=self.tp, pipeline_model_parallel_size=self.pp,
                                                 virtual_pipeline_model_parallel_size=self.vp if self.vp > 1 else None)
        return self

    def __exit__(self, *exc):
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        if self.owned:
            torch.distributed.destroy_process_group()
        return False
