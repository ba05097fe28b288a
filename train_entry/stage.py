"""The train stage: joint multi-branch continued pretraining over the curriculum the mix stage planned.

Under torchrun every rank runs it in its own process. Otherwise it runs in a freshly spawned process:
torch.distributed and megatron-core's parallel state leave threads and process groups behind, the data
stages fork worker processes, and forking a process in that state can crash; a spawned process keeps the
driver clean, so stages can run in any order in one process. torch and megatron-core are imported when the
stage runs, not when the command line starts.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

from pipeline.core.accounting import read_stats, write_stats
from pipeline.core.executors import StageFailed
from pipeline.core.layout import RunLayout
from pipeline.core.paths import inside
from pipeline.core.publish import boto3_environment
from pipeline.core.stage import Stage, StageContext
from pipeline.core.tokens import token_id
from train_entry import stop_signals
from train_entry.stopped import STOPPED, STOPPED_STATUS, TrainingStopped


class TrainStage(Stage):
    name = "train"
    needs = "mix"
    help = "joint multi-branch (early-exit) continued pretraining on megatron-core"
    section = "mixture"
    keeps = {"checkpoint": "checkpoints"}

    def start_problems(self, recipe, layout: RunLayout, resume: bool, restart: bool) -> list[str]:
        problems = super().start_problems(recipe, layout, resume, restart)
        init = recipe.train.init_from.path if recipe.train.init_from else None
        if init and not resume and inside(os.path.realpath(init), os.path.realpath(layout.stage(self.name))):
            problems.append(f"train.init_from: {init} lies inside {layout.stage(self.name)}, which the train stage empties "
                            "before it loads it; copy (or `ruyi2 export`) the model out of the run directory and start from there")
        return problems

    def preflight(self, recipe) -> list[str]:
        from train_entry.init_from import InitError

        try:
            fcfg = model_config(recipe.train)
        except (InitError, ValueError, KeyError, OSError) as e:
            return [f"train.{e}" if str(e).startswith(("init_from", "model.")) else f"train: {e}"]
        train, exits = recipe.train, fcfg.exits
        problems = tensor_parallel_problems(fcfg, train.tensor_parallel)
        schedules = [("exit_weights", train.exit_weights or [])] + [(f"stage_exit_weights.{k}", v) for k, v in train.stage_exit_weights.items()]
        problems += [f"train.{key}: {len(ws)} schedules for {len(exits)} exits {list(exits)}" for key, ws in schedules
                     if ws and len(ws) != len(exits)]
        stage_names = [st.name for st in recipe.mixture.stages] if recipe.mixture else []
        problems += [f"train.stage_exit_weights.{k}: no curriculum stage of that name (mixture.stages: {stage_names})"
                     for k in train.stage_exit_weights if k not in stage_names]
        if train.lr_anneal_stage is not None:
            if train.lr_schedule != "wsd":
                problems.append(f"train.lr_anneal_stage: only the wsd schedule anneals in a stage (lr_schedule: {train.lr_schedule})")
            elif train.lr_anneal_stage not in stage_names:
                problems.append(f"train.lr_anneal_stage: no curriculum stage {train.lr_anneal_stage!r} (mixture.stages: {stage_names})")
        if train.data_from == "published" and not (recipe.mixture and recipe.mixture.publish):
            problems.append("train.data_from: published needs mixture.publish (where the mix stage publishes the token files)")
        if train.dae.enabled and train.recompute == "full":
            # the frozen trunk's recomputed chunks take no part in the backward, so the branch inside one
            # would get no gradient
            problems.append("train.recompute: full recompute cannot train DaE blocks behind a frozen trunk; use selective or none")
        if train.virtual_pipeline_parallel > 1:
            if train.pipeline_parallel == 1:
                problems.append("train.virtual_pipeline_parallel: interleaving needs pipeline_parallel > 1")
            if train.dae.enabled:
                problems.append("train.virtual_pipeline_parallel: DaE (a frozen trunk) is not trained with interleaved 1F1B")
            if train.global_batch_size is None or (train.global_batch_size // train.micro_batch_size) % train.pipeline_parallel:
                problems.append(f"train.global_batch_size: interleaved 1F1B needs the micro-batches per step (global_batch_size / "
                                f"micro_batch_size / data-parallel size) to be a multiple of pipeline_parallel "
                                f"({train.pipeline_parallel}); got {train.global_batch_size}")
        stages = train.pipeline_parallel * train.virtual_pipeline_parallel
        if isinstance(train.pipeline_balance, list) and (len(train.pipeline_balance) != stages
                                                         or sum(train.pipeline_balance) != exits[-1] + 1):
            problems.append(f"train.pipeline_balance: {len(train.pipeline_balance)} stages summing to "
                            f"{sum(train.pipeline_balance)} layers; needs {stages} (pipeline_parallel x "
                            f"virtual_pipeline_parallel) summing to num_layers {exits[-1] + 1}")
        if train.global_batch_size is not None and train.global_batch_size % train.micro_batch_size:
            problems.append(f"train.global_batch_size: {train.global_batch_size} is not a multiple of micro_batch_size "
                            f"{train.micro_batch_size}")
        return problems

    def run(self, ctx: StageContext) -> dict:
        self.require_previous(ctx)
        if "RANK" in os.environ:  # launched by torchrun: this process is one rank of the job
            return train_in_process(ctx.recipe, ctx.layout, ctx.resume)
        ctx.layout.fresh_stage(self.name, ctx.resume)
        # the recipe travels as JSON and is validated again by its own class in the child
        args = (type(ctx.recipe), ctx.recipe.model_dump(mode="json"), ctx.layout.root, ctx.resume)
        proc = multiprocessing.get_context("spawn").Process(target=_train_main, args=args, name="ruyi2-train")
        proc.start()
        # a scheduler's SIGTERM/SIGUSR1 reaches this process: the training process gets it, saves and stops
        forward = {sig: signal.signal(sig, lambda signum, frame: os.kill(proc.pid, signum)) for sig in stop_signals.SIGNALS}
        try:
            proc.join()
        finally:
            stop_signals.restore(forward)
        stopped = os.path.join(ctx.layout.stage(self.name), STOPPED)
        if proc.exitcode == STOPPED_STATUS and os.path.exists(stopped):
            raise TrainingStopped(read_stats(stopped)["message"])
        if proc.exitcode != 0:
            raise StageFailed(f"train: the training process exited with status {proc.exitcode} (its error is printed above)")
        return read_stats(ctx.layout.stats(self.name))


def _train_main(recipe_class, recipe_json: dict, root: str, resume: bool) -> None:
    try:
        train_in_process(recipe_class.model_validate(recipe_json), RunLayout(root), resume, prepared=True)
    except TrainingStopped:  # the parent reads stopped.json and reports it
        sys.exit(STOPPED_STATUS)


def curriculum(recipe, layout: RunLayout) -> list:
    """The mix stage's plan as curriculum stages; each source's held-out prefix is an evaluation set of its
    own, labelled "domain/source" (by file name: a plan may point at the token files of another run)."""
    from train_entry.loop_settings import CurriculumStage

    mix = read_stats(layout.stats("mix"))
    eval_label = {os.path.basename(layout.token_prefix(s.name, heldout=True)): f"{s.domain}/{s.name}" for s in recipe.sources}
    data_args, where = mix["data_args"], {}
    if recipe.train.data_from == "published":
        if "published" not in mix:
            raise StageFailed("train.data_from: published, but the mix stage published nothing (mixture.publish was not set "
                              "when it ran): rerun `ruyi2 mix`")
        data_args, where = mix["published"]["data_args"], mix["published"]["prefixes"]
        # megatron-core's reader is a plain boto3 client: it finds the store where boto3 looks (this process's
        # environment; DataLoader workers inherit it)
        os.environ.update(boto3_environment(recipe.mixture.publish.storage.model_dump()))
    return [
        CurriculumStage(
            st["name"],
            data_args[st["name"]]["train"],
            st["tokens"],
            data_args[st["name"]]["valid"],
            eval_sets={eval_label[os.path.basename(r["prefix"])]: where[r["prefix"]] if where else r["prefix"] for r in st["valid"]},
        )
        for st in mix["plan"]["stages"]
    ]


def init_format(train) -> str | None:
    """hf or mcore for ``train.init_from`` (told apart by the folder when ``format: auto``), or None."""
    from train_entry.init_from import InitError, detect_format

    if train.init_from is None:
        return None
    path = train.init_from.path
    if not os.path.isdir(path):
        raise InitError(f"init_from.path: {path} is not a folder")
    return detect_format(path) if train.init_from.format == "auto" else train.init_from.format


def model_config(train):
    """The familial model the recipe trains (a ``FamilialConfig``): a preset with overrides, or, when it
    starts from a Hugging Face Qwen3 folder, that checkpoint's shape with the recipe's exits (other shape
    keys would contradict it)."""
    from dataclasses import replace

    from train_entry.init_from import HF, InitError, config_from_qwen3
    from train_entry.model_config import build_config, padded_vocab

    if init_format(train) != HF:
        fcfg = build_config(train.model.preset, train.seq_length, **train.model.model_dump(exclude={"preset"}))
    else:
        shape = sorted(k for k, v in train.model.model_dump(exclude={"preset", "exits"}).items() if v is not None)
        if shape:
            raise InitError(f"model.{shape[0]}: the shape comes from init_from's config.json; set only model.exits")
        if not train.model.exits:
            raise InitError("model.exits: starting from a Hugging Face folder needs the exits (the last is num_hidden_layers - 1)")
        fcfg = config_from_qwen3(train.init_from.path, tuple(train.model.exits), train.seq_length, train.untie_embeddings)
    return replace(fcfg, padded_vocab_size=padded_vocab(fcfg.vocab_size, train.tensor_parallel,
                                                        train.make_vocab_size_divisible_by))


def embeddings(train, fcfg) -> str:
    """How the model's embedding and full-model head relate, said where a user reads it (train stats, export)."""
    from train_entry.init_from import HF, hf_config

    if fcfg.tie_embeddings:
        return "tied (the full model's head is the embedding, as in the base)"
    if init_format(train) == HF and hf_config(train.init_from.path).get("tie_word_embeddings") and train.untie_embeddings:
        return "untied by train.untie_embeddings: the base tied them; the full model's head started as the embedding"
    return "untied"


def tensor_parallel_problems(fcfg, tp: int) -> list[str]:
    """Shapes a tensor-parallel size cannot split evenly (megatron-core gives each rank an equal share of the
    attention heads, the key/value groups and the FFN), named with the Hugging Face config key they come from."""
    shares = (("num_attention_heads", "num_attention_heads", fcfg.num_attention_heads),
              ("num_query_groups", "num_key_value_heads", fcfg.num_query_groups),
              ("ffn_hidden_size", "intermediate_size", fcfg.ffn_hidden_size))
    return [f"train.tensor_parallel: {tp} does not divide model.{key} {value} ({hf} in a Hugging Face config.json); "
            f"choose a tensor_parallel that divides it" for key, hf, value in shares if value % tp]


def loop_settings(cfg, fcfg):
    """The training loop's settings from a recipe's ``train`` section and the model it builds."""
    from train_entry.loop_settings import LoopSettings
    from train_entry.loss_schedule import ExitWeight
    from train_entry.lr_schedule import LRSchedule
    from train_entry.step_guard import GuardSettings

    weights = cfg.exit_weights or [None] * len(fcfg.exits)
    return LoopSettings(
        **cfg.model_dump(include={"steps", "micro_batch_size", "seq_length", "lr", "min_lr", "weight_decay", "seed",
                                  "eval_samples", "global_batch_size", "save_interval", "pipeline_balance", "clip_grad",
                                  "distributed_optimizer", "recompute", "attention", "tensorboard", "document_masks",
                                  "keep_checkpoints", "data_workers", "data_prefetch", "async_save"}),
        guard=GuardSettings(**cfg.guard.model_dump()),
        lr_schedule=LRSchedule(cfg.lr_schedule, cfg.warmup_steps, cfg.lr_anneal_stage, cfg.lr_wsd_decay_style),
        stage_exit_weights={st: [ExitWeight(**w.model_dump()) for w in ws] for st, ws in cfg.stage_exit_weights.items()},
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        bf16=cfg.precision == "bf16",
        init_from=cfg.init_from.path if cfg.init_from else None,
        init_format=init_format(cfg) or "auto",
        exit_weights=[ExitWeight(**w.model_dump()) if w else ExitWeight() for w in weights],
        tp=cfg.tensor_parallel,
        pp=cfg.pipeline_parallel,
        vp=cfg.virtual_pipeline_parallel,
        dae_exit=(cfg.dae.exit if cfg.dae.exit is not None else fcfg.exits[0]) if cfg.dae.enabled else None,
        dae_blocks=cfg.dae.blocks,
    )


def train_in_process(recipe, layout: RunLayout, resume: bool = False, prepared: bool = False, out_dir: str | None = None) -> dict:
    import torch

    def before_training(rank0: bool) -> None:
        if not prepared:  # under torchrun: one rank empties the stage folder, the others wait for it
            if rank0:
                layout.fresh_stage("train", resume)
            torch.distributed.barrier()

    out_dir = out_dir or layout.stage("train")
    return train_curriculum(recipe.train, recipe.tokenizer, lambda: curriculum(recipe, layout), out_dir, resume,
                            before_training)


def train_curriculum(cfg, tokenizer_cfg, stages, out_dir: str, resume: bool = False, before_training=None,
                     eval_seed: int | None = None) -> dict:
    """Train the model of a ``train`` section over curriculum stages (a list, or a function that makes
    it once the process group is up) in this process; rank 0 writes ``out_dir/stats.json``. The train
    stage and the mixture ablation's proxy runs both train through here."""
    import torch

    from train_entry.data import DatasetTokenizer
    from train_entry.distributed import DistributedContext
    from train_entry.trainer import FamilialTrainer

    fcfg = model_config(cfg)
    tokenizer = DatasetTokenizer(fcfg.vocab_size, token_id(tokenizer_cfg.path, tokenizer_cfg.eos_token), tokenizer_cfg.path)
    settings = loop_settings(cfg, fcfg)
    settings.eval_seed = eval_seed
    tp, pp, vp = cfg.tensor_parallel, cfg.pipeline_parallel, cfg.virtual_pipeline_parallel
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with DistributedContext(tp=tp, pp=pp, vp=vp):
        rank0 = torch.distributed.get_rank() == 0
        if before_training:
            before_training(rank0)
        if rank0 and os.path.exists(os.path.join(out_dir, STOPPED)):
            os.remove(os.path.join(out_dir, STOPPED))  # an earlier stop's record, written by this stage
        plan = stages() if callable(stages) else stages
        handlers = stop_signals.install()  # SIGTERM/SIGUSR1: a checkpoint, then stop
        try:
            result = FamilialTrainer(fcfg, settings, tokenizer, out_dir).run(plan, resume=resume)
        finally:
            stop_signals.restore(handlers)
        stats = {"stage": "train", "model": dict(fcfg.__dict__), "embeddings": embeddings(cfg, fcfg),
                 "parallel": {"tp": tp, "pp": pp, "vp": vp, "world_size": torch.distributed.get_world_size()}, **result}
        if rank0:
            write_stats(os.path.join(out_dir, "stats.json"), stats)
        torch.distributed.barrier()
    return stats
