"""``ruyi2 export RUN_DIR --out DIR``: a run's trained model as a Hugging Face checkpoint: the Ruyi2 layout
for a familial model, the stock Qwen3 layout for a model without branches (a base trained here, which a
familial run can then start from with ``train.init_from``).

The model is rebuilt at TP=PP=1 from the shape the train stage recorded, and only its weights are read
from the sharded checkpoint (whatever TP/PP layout wrote it; no optimizer state). It runs in a spawned
process, so the command line that calls it keeps no torch.distributed state behind.
"""

from __future__ import annotations

import json
import multiprocessing
import os

from pipeline.core.errors import StageError


class ExportError(StageError):
    pass


def _export_main(run_dir: str, out: str, conn) -> None:
    try:
        from train_entry import checkpointing
        from train_entry.hf_interop import export_ruyi_hf
        from train_entry.model import build_model
        from train_entry.model_config import FamilialConfig
        from train_entry.trainer import DistributedContext

        with open(os.path.join(run_dir, "train", "stats.json")) as f:
            stats = json.load(f)
        fcfg = FamilialConfig(**{**stats["model"], "exits": tuple(stats["model"]["exits"])})
        with DistributedContext():
            model = build_model(fcfg)
            read = checkpointing.load_weights(os.path.join(run_dir, "train", "checkpoint"), model)
            export_ruyi_hf(model, fcfg, out)
        conn.send(("ok", read))
    except Exception as e:  # reported by the parent, which names the run
        conn.send(("error", f"{type(e).__name__}: {e}"))


def export_run(run_dir: str, out: str) -> str:
    """Write the run's latest checkpoint to ``out`` in Hugging Face format; returns the checkpoint read."""
    if not os.path.exists(os.path.join(run_dir, "train", "stats.json")):
        raise ExportError(f"{run_dir}: no trained model (train/stats.json); run `ruyi2 train` first")
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_export_main, args=(run_dir, out, child), name="ruyi2-export")
    proc.start()
    child.close()  # the child holds the only writing end: its exit without an answer is an EOF here
    try:
        status, detail = parent.recv()
    except EOFError:
        status, detail = "error", "the export process died without an answer (its error is printed above)"
    proc.join()
    if status != "ok":
        raise ExportError(f"export of {run_dir}: {detail}")
    return detail
