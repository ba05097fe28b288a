"""``ruyi2 ablate``: the mixture ablation (``mixtures/ablation``) with the project's familial trainer
(``train_entry``) as its proxy. The composition lives here, at the top: the ablation package schedules,
fits and reports; this module trains one proxy and prices the planned run."""

from __future__ import annotations

import json


def train_proxy(spec: dict) -> dict:
    """Train one proxy run described by ``spec`` (see ``mixtures.ablation.ablate.Ablation.spec``) in this
    process; returns what the ablation records of it."""
    import torch

    from pipeline.core.config import TokenizerConfig
    from train_entry.config import TrainConfig
    from train_entry.loop_settings import CurriculumStage
    from train_entry.metrics import training_flops_per_token
    from train_entry.stage import model_config, train_curriculum

    cfg = TrainConfig.model_validate(spec["train"])
    torch.set_num_threads(cfg.threads or 1)
    stage = CurriculumStage(spec["stage"], spec["data_args"], spec["tokens"], spec["valid_data_args"], spec["eval_sets"])
    stats = train_curriculum(cfg, TokenizerConfig.model_validate(spec["tokenizer"]), [stage], spec["train_dir"],
                             eval_seed=spec["eval_seed"])
    tokens = stats["steps"] * stats["global_batch_size"] * cfg.seq_length
    benchmark = _score_benchmark(spec) if spec.get("benchmark") else None
    with open(stats["metrics"]) as f:
        curve = [{"step": r["step"], "loss": r["loss"]} for r in map(json.loads, f)]
    return {
        "eval": stats["eval"][spec["stage"]],
        "first_loss": stats["first_loss"],
        "last_loss": stats["last_loss"],
        "curve": curve,
        "tokens": tokens,
        "flops": training_flops_per_token(model_config(cfg), cfg.seq_length) * tokens,
        "parameters": stats["parameters"],
    } | ({"benchmark": benchmark} if benchmark else {})


def _score_benchmark(spec: dict) -> dict[str, float]:
    """exit -> the primary metric of the target benchmark for the proxy just trained (its checkpoint)."""
    import os

    from train_entry.eval_tasks import PRIMARY_METRIC
    from train_entry.evaluate import EvalOptions, score_run

    b = spec["benchmark"]
    options = EvalOptions(tasks=(b["task"],), limit=b["limit"], mmlu_shots=b["mmlu_shots"], max_new_tokens=b["max_new_tokens"])
    tasks, _, _ = score_run(os.path.dirname(spec["train_dir"]), options,
                            tokenizer=(spec["tokenizer"]["path"], spec["tokenizer"]["eos_token"]))
    metric = PRIMARY_METRIC[b["task"]]
    return {name: m[metric] for name, m in tasks[b["task"]]["exits"].items()}


def planned_run_flops(recipe) -> float:
    """Training FLOPs of the run the recipe plans: its model over every curriculum stage's tokens."""
    from train_entry.metrics import training_flops_per_token
    from train_entry.stage import model_config

    tokens = sum(st.tokens for st in recipe.mixture.stages)
    return training_flops_per_token(model_config(recipe.train), recipe.train.seq_length) * tokens


def ablate(recipe, layout, resume: bool = False, restart: bool = False) -> dict:
    """The ablation of the run at ``layout`` (mixture weights, or pipeline variants), holding its run lock (it
    writes RUN_DIR/ablate)."""
    from mixtures.ablation.ablate import AblationError, run_ablation
    from pipeline.core.run_lock import run_lock
    from pipeline.recipe import proxy_train

    if recipe.ablation is None:
        raise AblationError("the recipe has no ablation section (see README, 'Mixture ablation')")
    with run_lock(layout.root):
        if recipe.ablation.kind == "pipeline":
            from pipeline.ablate_pipeline import run_pipeline_ablation

            return run_pipeline_ablation(recipe, layout, proxy_train(recipe).model_dump(mode="json"), train_proxy,
                                         resume, restart)
        return run_ablation(recipe, layout, proxy_train(recipe).model_dump(mode="json"), train_proxy,
                            planned_run_flops(recipe), resume, restart)
