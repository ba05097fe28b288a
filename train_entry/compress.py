"""``ruyi2 compress RUN_DIR [--ratio 0.4]``: DaE stage 2, SVD-LLM v2 compression of the DaE blocks.

The run's DaE-trained checkpoint is loaded at TP = PP = 1; calibration inputs of every linear layer of the
DaE blocks are taken from held-out sequences of the run's last curriculum stage (the covariance X X^T only,
so memory does not grow with the calibration set); each matrix is replaced by its whitened low-rank factors
(``svd_llm.py``) at the rank eq. 6 gives it within its group (one group per kind of matrix across the blocks);
with ``--head-ratio`` the deepened branch's LM head is compressed the same way (the report compresses the
branch-specific heads too);
held-out loss of every exit is measured before and after on other held-out sequences. Writes
``RUN_DIR/compress/checkpoint`` (weights) and ``RUN_DIR/compress/stats.json``: parameters added by DaE
before and after, each matrix's rank, ratio and truncation loss, the losses.
"""

from __future__ import annotations

import os

from pipeline.core.atomic import write_json
from pipeline.core.errors import StageError
from train_entry.spawned import run_spawned

KINDS = ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")
HEAD = "head."  # covariance key of a branch's LM head: head.<exit>


class CompressError(StageError):
    pass


def _losses(model, batches: list[dict]) -> dict[int, float]:
    import torch

    from train_entry.devices import model_device, to_device
    from train_entry.model import masked_mean

    sums: dict[int, float] = {}
    with torch.no_grad():
        for b in batches:
            b = to_device(b, model_device(model))
            for e, logits in model.exit_logits(b["tokens"], b["position_ids"]).items():
                # [b*s, v] rows: a class dimension in the middle (transpose) makes cross_entropy ~10x slower on CPU
                ce = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), b["labels"].long().flatten(),
                                                       reduction="none").view(b["labels"].shape)
                sums[e] = sums.get(e, 0.0) + float(masked_mean(ce, b["loss_mask"]))
    return {e: v / len(batches) for e, v in sorted(sums.items())}


def _covariances(model, batches: list[dict], heads: bool = False) -> dict:
    """X X^T of the inputs of every DaE linear layer (``heads``: and of the LM head of each branch that has DaE
    blocks, keyed ``head.<exit>``), accumulated in float64 over the calibration batches."""
    import torch

    from train_entry.hf_interop import DAE_BLOCK

    cov: dict[str, torch.Tensor] = {}
    hooks = []
    targets = [(name, module) for name, module in model.named_modules() if DAE_BLOCK.match(name + ".") and name.endswith(KINDS)]
    if heads:
        targets += [(f"{HEAD}{e}", branch.head) for e, branch in model.exits.items() if len(branch.blocks)]
    for name, module in targets:
        def hook(mod, args, name=name):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            cov[name] = cov.get(name, 0) + x.T @ x
        hooks.append(module.register_forward_pre_hook(hook))
    from train_entry.devices import model_device, to_device

    try:
        with torch.no_grad():
            for b in batches:
                b = to_device(b, model_device(model))
                model.exit_logits(b["tokens"], b["position_ids"])
    finally:
        for h in hooks:
            h.remove()
    return cov


def compress_model(model, cov: dict, ratio: float, head_ratio: float = 0.0) -> list[dict]:
    """Replace every DaE linear by its low-rank factors (and, with ``head_ratio``, the LM head of each branch
    with DaE blocks, as the report compresses the branch-specific heads too); returns one row per matrix."""
    from train_entry.low_rank import LowRankLinear
    from train_entry.run_model import replace_module
    from train_entry.svd_llm import factors, group_ratios, rank_for, truncation_loss, whiten

    rows = []
    by_kind: dict[str, list[str]] = {}
    for name in sorted(n for n in cov if not n.startswith(HEAD)):
        by_kind.setdefault(next(k for k in KINDS if name.endswith(k)), []).append(name)
    modules = dict(model.named_modules())
    for kind, names in sorted(by_kind.items()):
        whitened, shapes = {}, {}
        for n in names:
            w = modules[n].weight.detach()
            shapes[n] = tuple(w.shape)
            whitened[n] = whiten(w, cov[n])
        reference = [truncation_loss(whitened[n], rank_for(*shapes[n], ratio)) for n in names]
        for n, loss, r in zip(names, reference, group_ratios(reference, ratio)):
            rank = rank_for(*shapes[n], r)
            a, b = factors(whitened[n], rank)
            replace_module(model, n, LowRankLinear(a, b, modules[n].weight.dtype))
            rows.append({"matrix": n, "kind": kind, "shape": list(shapes[n]), "ratio": round(r, 4),
                         "rank": rank, "truncation_loss": truncation_loss(whitened[n], rank), "reference_loss": loss})
    for key in sorted(n for n in cov if n.startswith(HEAD)) if head_ratio else ():
        e = key[len(HEAD):]
        w = model.exits[e].head.weight.detach()
        rank = rank_for(*w.shape, head_ratio)  # a group of its own: eq. 6 gives it the target ratio
        white = whiten(w, cov[key])
        a, b = factors(white, rank)
        replace_module(model, f"exits.{e}.head", LowRankLinear(a, b, w.dtype))
        rows.append({"matrix": f"exits.{e}.head", "kind": "lm_head", "shape": list(w.shape), "ratio": head_ratio, "rank": rank,
                     "truncation_loss": truncation_loss(white, rank), "reference_loss": truncation_loss(white, rank)})
    return rows


def heldout_batches(recipe, layout, vocab_size: int, calibration: int, evaluation: int, cache_dir: str) -> tuple[list, list]:
    """(calibration batches, evaluation batches): held-out sequences of the run's last curriculum stage, the
    first ``calibration`` for the covariances, the next ``evaluation`` for the losses (deterministic)."""
    from pipeline.core.tokens import token_id
    from train_entry.data import DatasetTokenizer, build_datasets, collate
    from train_entry.stage import curriculum

    last = curriculum(recipe, layout)[-1]
    tok = DatasetTokenizer(vocab_size, token_id(recipe.tokenizer.path, recipe.tokenizer.eos_token), recipe.tokenizer.path)
    seq, mbs = recipe.train.seq_length, recipe.train.micro_batch_size
    _, valid = build_datasets(last.data_args_path, last.valid_data_args_path, seq, train_samples=1,
                              eval_samples=calibration + evaluation, tokenizer=tok, seed=recipe.train.seed, cache_dir=cache_dir)
    # the dataset holds whole epochs of the held-out split (GPTDataset's length is at least what was asked): take
    # only the sequences asked for
    wanted = min(len(valid), calibration + evaluation)
    batches = [collate([valid[j] for j in range(i, min(i + mbs, wanted))]) for i in range(0, wanted, mbs)]
    n_cal = max(1, calibration // mbs)
    return batches[:n_cal], batches[n_cal:] or batches[:n_cal]


def _compress(recipe_class, recipe_json: dict, root: str, ratio: float, calibration: int, evaluation: int,
              head_ratio: float = 0.0) -> dict:
    from pipeline.core.layout import RunLayout
    from train_entry import checkpointing
    from train_entry.distributed import DistributedContext
    from train_entry.run_model import checkpoint_dae_blocks, rebuild, trained_config

    recipe = recipe_class.model_validate(recipe_json)  # validated again by its own class in this process
    layout = RunLayout(root)
    fcfg = trained_config(root)
    checkpoint = os.path.join(layout.stage("train"), "checkpoint")
    out = os.path.join(root, "compress")
    with DistributedContext():
        dae = checkpoint_dae_blocks(checkpoint)
        if not dae:
            raise CompressError(f"{checkpoint} has no DaE blocks: train with train.dae enabled first (DaE stage 1)")
        model, read = rebuild(fcfg, checkpoint, dae)
        model.eval()
        calib, held = heldout_batches(recipe, layout, fcfg.vocab_size, calibration, evaluation, os.path.join(out, "dataset_cache"))
        mbs = recipe.train.micro_batch_size
        added = lambda: sum(p.numel() for branch in model.exits.values() for p in branch.blocks.parameters())  # noqa: E731
        heads = lambda: sum(p.numel() for e in dae for p in model.exits[str(e)].head.parameters())  # noqa: E731
        before, params_before, heads_before = _losses(model, held), added(), heads()
        rows = compress_model(model, _covariances(model, calib, heads=head_ratio > 0), ratio, head_ratio)
        after, params_after, heads_after = _losses(model, held), added(), heads()
        path = checkpointing.save_weights(os.path.join(out, "checkpoint"), 0, model, {"ranks": {r["matrix"]: r["rank"] for r in rows}})
    name = fcfg.exit_name
    result = {"checkpoint_read": read, "checkpoint": path, "ratio": ratio, "dae_blocks": {str(e): n for e, n in dae.items()},
              "calibration_sequences": len(calib) * mbs, "heldout_sequences": len(held) * mbs,
              "added_parameters_before": params_before, "added_parameters_after": params_after, "head_ratio": head_ratio,
              "head_parameters_before": heads_before, "head_parameters_after": heads_after,
              "loss_before": {name(e): v for e, v in before.items()}, "loss_after": {name(e): v for e, v in after.items()},
              "matrices": rows}
    write_json(os.path.join(out, "stats.json"), result, indent=1)
    return result


def compress_run(recipe, root: str, ratio: float = 0.4, calibration: int = 32, evaluation: int = 32,
                 head_ratio: float = 0.0) -> dict:
    """Compress the DaE blocks of the run at ``root`` (its recorded recipe ``recipe``), in a spawned process."""
    if not os.path.exists(os.path.join(root, "train", "stats.json")):
        raise CompressError(f"{root}: no trained model (train/stats.json); run `ruyi2 train` with train.dae first")
    if not 0 < ratio < 1:
        raise CompressError(f"--ratio {ratio}: the share of the DaE parameters to remove, between 0 and 1")
    if not 0 <= head_ratio < 1:
        raise CompressError(f"--head-ratio {head_ratio}: the share of the deepened branch's LM head to remove, in [0, 1)")
    args = (type(recipe), recipe.model_dump(mode="json"), root, ratio, calibration, evaluation, head_ratio)
    return run_spawned(_compress, args, "ruyi2-compress", CompressError, f"compression of {root}",
                       os.path.join(root, "compress"))
