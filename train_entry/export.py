"""``ruyi2 export RUN_DIR --out DIR [--dtype] [--exit] [--max-shard-size]``: a run's trained model as a Hugging
Face checkpoint: the Ruyi2 layout for a familial model, the stock Qwen3 layout for a model without branches
(a base trained here, which a familial run can then start from with ``train.init_from``), with the run's
tokenizer files and a generation config.

The model's structure is rebuilt on the meta device (no memory) from the shape the train stage recorded;
its weights are read from the sharded checkpoint one module at a time (whatever TP/PP layout wrote it; no
optimizer state), converted, cast and written into shards as they come, so host memory holds one module and
one shard, never the model. It runs in a spawned process, so the command line that calls it keeps no
torch.distributed state behind.
"""

from __future__ import annotations

import os

from pipeline.core.errors import StageError
from train_entry.spawned import run_spawned


class ExportError(StageError):
    pass


def _export(run_dir: str, out: str, options: dict) -> str:
    """The export job (in a spawned process): the checkpoint's weights module by module, config, tokenizer
    and generation config."""
    from train_entry import checkpointing
    from train_entry.checkpoint_slices import CheckpointSlices
    from train_entry.distributed import DistributedContext
    from train_entry.hf_folder import write_generation_config, write_tokenizer
    from train_entry.hf_interop import context_length, head_written_out, hf_units, write_hf
    from train_entry.run_model import checkpoint_dae_blocks, run_checkpoint, skeleton, trained_config

    fcfg = trained_config(run_dir)
    exit_ = options.get("exit")
    if exit_ is not None and exit_ not in fcfg.exits:
        raise ExportError(f"--exit {exit_}: the model's exits are {list(fcfg.exits)}")
    checkpoint, ranks = run_checkpoint(run_dir, options.get("compressed", False))
    step = checkpointing.latest_iteration(checkpoint)
    if step is None:
        raise ExportError(f"{checkpoint}: no {checkpointing.LATEST}: nothing to export")
    read = checkpointing.iteration_dir(checkpoint, step)
    with DistributedContext():
        dae = checkpoint_dae_blocks(checkpoint)
        if dae and options.get("published"):
            raise ExportError(f"{checkpoint} holds DaE blocks after exit(s) {sorted(dae)} (train.dae); the published "
                              "Ruyi2 layout has no place for them, and exporting without them would change those "
                              "exits' outputs: export without --published-layout (our modeling code carries them)")
        # the model's structure without memory; its weights are read from the checkpoint one module at a time
        slices = CheckpointSlices(read, skeleton(fcfg, dae, ranks).sharded_state_dict())
        names = [n for n in slices.template if not n.endswith("_extra_state")]
        absent = [n for n in names if not slices.stored(n)]
        if absent:
            raise ExportError(f"{read}: the checkpoint has no {absent[:5]} (a model of another shape than train/stats.json says)")
        published = options.get("published", False)
        write_hf(hf_units(names, slices.load, fcfg, head_written_out(fcfg, published)), fcfg, out, options["dtype"],
                 options["max_shard_size"], exit_, published, dae)
    tokenizer = run_tokenizer(run_dir)
    if tokenizer:
        from pipeline.core.assets import resolve_asset
        from pipeline.core.tokens import token_id

        path, eos = tokenizer
        write_tokenizer(out, resolve_asset(path), eos, context_length(fcfg))
        write_generation_config(out, token_id(path, eos))
    return read


def run_tokenizer(run_dir: str) -> tuple[str, str] | None:
    """(tokenizer.json location, end-of-document token) from the run's recorded recipe."""
    import yaml

    path = os.path.join(run_dir, "recipe.yaml")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        tok = (yaml.safe_load(f) or {}).get("tokenizer") or {}
    return (tok["path"], tok.get("eos_token", "<|endoftext|>")) if tok.get("path") else None


def export_run(run_dir: str, out: str, dtype: str = "bfloat16", exit: int | None = None, max_shard_size: str = "5GB",
               published: bool = False, compressed: bool = False, overwrite: bool = False) -> str:
    """Write the run's latest checkpoint to ``out`` in Hugging Face format (weights in ``dtype``, sharded past
    ``max_shard_size``, the run's tokenizer and a generation config beside them; ``exit``: the exit
    generation uses by default; ``published``: only what the published Ruyi2 modeling code loads, without our
    modeling code; ``compressed``: the output of ``ruyi2 compress`` instead of the trained checkpoint); returns
    the checkpoint read. A non-empty ``out`` is refused unless ``overwrite``, which removes the files an export
    writes (and nothing else) before writing."""
    if not os.path.exists(os.path.join(run_dir, "train", "stats.json")):
        raise ExportError(f"{run_dir}: no trained model (train/stats.json); run `ruyi2 train` first")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise ExportError(f"--out {out} is not empty: export into a new or empty folder, or pass --overwrite to replace "
                              "the files an export writes there (model shards, config, tokenizer; other files are kept)")
        from train_entry.hf_folder import remove_export_files  # imports torch: only when it is needed

        remove_export_files(out)
    options = {"dtype": dtype, "exit": exit, "max_shard_size": max_shard_size, "published": published, "compressed": compressed}
    return run_spawned(_export, (run_dir, out, options), "ruyi2-export", ExportError, f"export of {run_dir}", out)
