"""What a training step logs beyond its losses: throughput, model FLOP/s and MFU, peak memory; and where
the rows go (``metrics.jsonl``, and TensorBoard event files under ``tensorboard/`` as Megatron-LM writes
them, so the usual dashboards read a run of ours).

Model FLOPs count the forward and backward of every decoder layer, every exit branch layer and every LM
head (the branches are real work: two aux exits of Ruyi2-14B add ~17% at 4k tokens), not recomputation.
"""

from __future__ import annotations

import json
import os
import resource

import torch

from train_entry.model_config import FamilialConfig
from train_entry.pipeline_balance import head_flops, layer_flops

# dense bf16 tensor-core peak per device, TFLOP/s (vendor data sheets), matched against torch's device name in
# this order: the PCIe and NVL parts run at lower clocks and power than the SXM ones of the same name
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200 NVL", 835.0), ("H200", 989.0),
                    ("H800 PCIe", 756.0), ("H800", 989.0), ("A100", 312.0), ("A800", 312.0), ("B200", 2250.0),
                    ("L40S", 362.0))


def training_flops_per_token(fcfg: FamilialConfig, seq_length: int, extra_branch_layers: int = 0) -> float:
    """Forward + backward (3x forward) FLOPs per token of the familial model: L backbone layers, one layer
    per aux exit (plus ``extra_branch_layers``, e.g. DaE blocks) and one LM head per exit."""
    layers = fcfg.num_layers + len(fcfg.aux_exits) + extra_branch_layers
    return 3.0 * (layers * layer_flops(fcfg, seq_length) + len(fcfg.exits) * head_flops(fcfg))


def peak_tflops_per_device() -> float | None:
    """The device's dense bf16 peak, or None where it is not known (CPUs, unlisted GPUs): no MFU then."""
    if not torch.cuda.is_available():
        return None
    return peak_for(torch.cuda.get_device_name())


def peak_for(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS if k in device_name), None)


def peak_memory() -> dict[str, float]:
    """Peak memory of this process so far, GiB: the GPU's allocator peak and the host's resident set."""
    out = {"peak_host_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if torch.cuda.is_available():
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def throughput(tokens: int, seconds: float, flops_per_token: float, devices: int) -> dict[str, float | None]:
    """tokens/s of the job, model TFLOP/s per device, and MFU against the device's bf16 peak."""
    per_device = tokens * flops_per_token / seconds / devices / 1e12
    peak = peak_tflops_per_device()
    return {"tokens_per_s": round(tokens / seconds), "tflops_per_device": round(per_device, 4),
            "mfu": round(per_device / peak, 4) if peak else None}


def read_metrics(path: str, up_to_step: int) -> tuple[list[dict], int]:
    """The rows of ``metrics.jsonl`` up to ``up_to_step`` (a resumed run's checkpoint), and the byte length of
    the file they fill. Rows after the checkpoint belong to steps the resumed run repeats; a last line cut off
    by a kill mid-write (no newline, or not JSON) and anything after it are not rows."""
    rows, keep = [], 0
    if not os.path.exists(path):
        return rows, keep
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except ValueError:
                break
            if not isinstance(row, dict) or not isinstance(row.get("step"), int) or row["step"] > up_to_step:
                break
            rows.append(row)
            keep += len(line)
    return rows, keep


class MetricsLog:
    """Rows of ``metrics.jsonl`` and the same scalars in TensorBoard; only the writer rank writes.

    The file is only ever appended to: a resumed run first cuts it back to ``keep_bytes`` (the rows up to its
    checkpoint, ``read_metrics``), so a kill at any moment loses at most the row being written."""

    def __init__(self, out_dir: str, writer: bool, keep_bytes: int | None = None, tensorboard: bool = True):
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.writer = writer
        if writer and keep_bytes is not None and os.path.exists(self.path):
            os.truncate(self.path, keep_bytes)
        self._file = open(self.path if writer else os.devnull, "a" if keep_bytes is not None else "w")
        self._tb = None
        if writer and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(out_dir, "tensorboard"), max_queue=100)

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is None:
            return
        step = row["step"]
        scalars = {"learning-rate": row["lr"], "grad-norm": row["grad_norm"], "throughput/tokens_per_s": row["tokens_per_s"],
                   "throughput/tflops_per_device": row["tflops_per_device"], "throughput/mfu": row["mfu"],
                   "throughput/step_seconds": row["seconds"], "throughput/data_seconds": row.get("data_seconds"),
                   **{f"lm loss/{k}": v for k, v in row["loss"].items()}, **{f"lambda/{k}": v for k, v in row["lambda"].items()},
                   **{f"memory/{k}": v for k, v in row["memory"].items()}}
        for tag, value in scalars.items():
            if value is not None:
                self._tb.add_scalar(tag, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
