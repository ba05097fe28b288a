"""Joint multi-branch continued pretraining over the curriculum planned by the mixture stage.

Each optimizer step runs megatron-core's own forward-backward schedule; the exit losses ride on the trunk
activations (``ExitLossInjector``), so the same loop serves tensor and pipeline parallelism. Every exit's
loss and lambda_k(t) is logged per step to ``metrics.jsonl``; each curriculum stage ends with a held-out
evaluation of every exit.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from functools import partial

import torch
from loguru import logger

from train_entry import checkpointing, cpu_support
from train_entry.data import DatasetTokenizer, build_datasets, build_eval_dataset, collate
from train_entry.init_from import HF, detect_format, load_hf_qwen3
from train_entry.loss_schedule import ExitWeight, StageSpan, exit_weights_at, lr_at
from train_entry.model import ExitLossInjector, FamilialGPTModel, build_model, masked_mean
from train_entry.model_config import FamilialConfig
from train_entry.optim import build_optimizer, clip_gradients
from train_entry.pipeline_balance import plan_pipeline


@dataclass
class CurriculumStage:
    name: str
    data_args_path: str
    tokens: int
    valid_data_args_path: str | None = None
    # held-out prefix per evaluation set ("domain/source" -> prefix): each exit is evaluated on each
    eval_sets: dict[str, str] = field(default_factory=dict)


@dataclass
class LoopSettings:
    steps: int
    micro_batch_size: int
    seq_length: int
    lr: float
    min_lr: float
    weight_decay: float
    seed: int
    eval_samples: int
    exit_weights: list[ExitWeight]
    warmup_steps: int = 0
    tp: int = 1
    pp: int = 1
    dae_exit: int | None = None  # DaE stage 1 on this exit (train_entry/dae.py); None: joint training
    dae_blocks: int = 3
    save_interval: int = 0  # checkpoint every N steps (0: only at the end)
    # "exits": stages balanced for the branch cost; "even": L / PP layers each; or layers per stage
    pipeline_balance: str | list[int] = "exits"
    init_from: str | None = None  # start from these weights: a Hugging Face Qwen3 folder or a checkpoint of ours
    init_format: str = "auto"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float = 1.0  # largest gradient norm (0: no clipping)
    document_masks: bool = False  # packed documents do not attend to each other; positions restart per document
    # curriculum stage -> lambda_k schedules over that stage's own steps (others follow exit_weights)
    stage_exit_weights: dict[str, list[ExitWeight]] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DistributedContext:
    """torch.distributed (gloo on CPU, nccl on GPU) plus megatron-core's parallel state.

    Under torchrun the environment gives rank and world size; otherwise a single local process group is
    created on 127.0.0.1 and torn down afterwards."""

    def __init__(self, tp: int = 1, pp: int = 1):
        self.tp, self.pp, self.owned = tp, pp, False

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
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=self.tp, pipeline_model_parallel_size=self.pp)
        return self

    def __exit__(self, *exc):
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        if self.owned:
            torch.distributed.destroy_process_group()
        return False


def stage_steps(stages: list[CurriculumStage], total: int) -> list[int]:
    """Optimizer steps per curriculum stage, proportional to its tokens, at least one each."""
    tokens = sum(s.tokens for s in stages)
    raw = [max(1, math.floor(total * s.tokens / tokens)) for s in stages]
    raw[-1] = max(1, total - sum(raw[:-1]))
    return raw


class FamilialTrainer:
    def __init__(self, fcfg: FamilialConfig, settings: LoopSettings, tokenizer: DatasetTokenizer, out_dir: str):
        if len(settings.exit_weights) != len(fcfg.exits):
            raise ValueError(f"{len(settings.exit_weights)} exit weight schedules for {len(fcfg.exits)} exits")
        self.fcfg, self.s, self.tokenizer, self.out_dir = fcfg, settings, tokenizer, out_dir
        os.makedirs(out_dir, exist_ok=True)
        torch.manual_seed(settings.seed)
        if torch.cuda.is_available():
            # megatron-core initialises weights on the GPU through its CUDA RNG tracker (tensor-parallel ranks
            # draw different shards, data-parallel replicas the same): it must be seeded before the build
            from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

            model_parallel_cuda_manual_seed(settings.seed)
        self.pipeline_plan = None
        if settings.pp > 1:
            self.pipeline_plan = plan_pipeline(fcfg, settings.pp, settings.seq_length, settings.pipeline_balance)
            logger.info(f"pipeline stages: layers {self.pipeline_plan.layers_per_stage}, cost in layer units "
                        f"{[round(c, 2) for c in self.pipeline_plan.stage_cost]} (even split: {self.pipeline_plan.even_stage_cost and [round(c, 2) for c in self.pipeline_plan.even_stage_cost]})")
        layout = self.pipeline_plan.layout if self.pipeline_plan else None
        self.model: FamilialGPTModel = build_model(fcfg, tp=settings.tp, pp=settings.pp, pipeline_layout=layout)
        if settings.dae_exit is not None:
            from train_entry.dae import append_dae_blocks, freeze_for_dae

            append_dae_blocks(self.model, settings.dae_exit, settings.dae_blocks)
            freeze_for_dae(self.model, settings.dae_exit)
        if torch.cuda.is_available():
            self.model.cuda()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, settings.lr, settings.weight_decay, settings.betas, settings.eps)
        self.step = 0
        self.started_from: dict | None = None  # the weights this run continued from (None: random or resumed)
        self.stage_span: StageSpan | None = None  # the curriculum stage being trained

    # ------------------------------------------------------------------------------------------- steps
    def _set_exit_weights(self) -> dict[int, float]:
        weights = exit_weights_at(self.step, self.s.steps, self.s.exit_weights, self.stage_span, self.s.stage_exit_weights)
        lambdas = dict(zip(self.fcfg.exits, weights))
        self.model.exit_weights.update(lambdas)
        return lambdas

    def _device_batch(self, batch: dict) -> dict:
        return {k: v.cuda(non_blocking=True) for k, v in batch.items()} if torch.cuda.is_available() else batch

    def _forward_step(self, data_iterator, model):
        batch = self._device_batch(next(data_iterator))
        output = model(batch["tokens"], batch["position_ids"], batch.get("attention_mask"), labels=batch["labels"],
                       loss_mask=batch["loss_mask"])
        return output, partial(self._loss_func, batch["loss_mask"])

    def _loss_func(self, loss_mask, output_tensor):
        final = self.fcfg.exits[-1]
        loss = masked_mean(output_tensor, loss_mask)
        self.model.exit_losses[final] = loss.detach().clone()
        return self.model.exit_weights[final] * loss, {"final": loss.detach().clone()}

    def _run_schedule(self, batch: dict, forward_only: bool) -> None:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        self.model.exit_losses.clear()
        with cpu_support.device_mode():
            get_forward_backward_func()(
                forward_step_func=self._forward_step,
                data_iterator=iter([batch]),
                model=[self.model],
                num_microbatches=1,
                seq_length=self.s.seq_length,
                micro_batch_size=batch["tokens"].shape[0],
                forward_only=forward_only,
            )

    def _all_exit_losses(self) -> dict[int, float]:
        """Every exit's loss on every rank: each pipeline stage only computes the exits it holds."""
        from megatron.core import parallel_state

        local = {e: float(v) for e, v in self.model.exit_losses.items()}
        if parallel_state.get_pipeline_model_parallel_world_size() == 1:
            return local
        gathered: list = [None] * parallel_state.get_pipeline_model_parallel_world_size()
        torch.distributed.all_gather_object(gathered, local, group=parallel_state.get_pipeline_model_parallel_group())
        return {e: v for part in gathered for e, v in part.items()}

    def _data_parallel_mean(self, losses: dict[int, float]) -> dict[int, float]:
        """The losses averaged over the data-parallel replicas: each saw its own samples, and the loss of the
        step is the mean over the global batch (equal micro-batches), not one replica's share."""
        from megatron.core import parallel_state

        dp = parallel_state.get_data_parallel_world_size()
        if dp == 1:
            return losses
        exits = sorted(losses)
        t = torch.tensor([losses[e] for e in exits], dtype=torch.float64)
        torch.distributed.all_reduce(t, group=parallel_state.get_data_parallel_group())
        return {e: float(v) / dp for e, v in zip(exits, t.tolist())}

    def _average_data_parallel_grads(self) -> None:
        # plain all-reduce of each gradient over the data-parallel group (megatron-core's bucketed DDP is
        # the faster path for large runs; the result is the same)
        from megatron.core import parallel_state

        dp = parallel_state.get_data_parallel_world_size()
        if dp == 1:
            return
        group = parallel_state.get_data_parallel_group()
        for p in self.params:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad, group=group)
                p.grad.div_(dp)

    def train_step(self, batch: dict) -> dict:
        lambdas = self._set_exit_weights()
        lr = lr_at(self.step, self.s.steps, self.s.lr, self.s.min_lr, self.s.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ExitLossInjector.scale = torch.tensor(1.0)  # one microbatch per step
        self.optimizer.zero_grad(set_to_none=True)
        self._run_schedule(batch, forward_only=False)
        self._average_data_parallel_grads()
        norm = clip_gradients(self.params, self.s.clip_grad)
        self.optimizer.step()
        self.step += 1
        local = self._all_exit_losses()
        return {"lr": lr, "lambdas": lambdas, "losses": self._data_parallel_mean(local), "replica_losses": local,
                "grad_norm": norm}

    @torch.no_grad()
    def evaluate(self, dataset, batches: int) -> dict[int, float]:
        """Mean held-out loss of every exit (through the schedule, so it works on every pipeline stage)."""
        self.model.eval()
        sums: dict[int, float] = {}
        n = 0
        for b in range(batches):
            idx = range(b * self.s.micro_batch_size, min(len(dataset), (b + 1) * self.s.micro_batch_size))
            if not idx:
                break
            self._run_schedule(collate([dataset[i] for i in idx]), forward_only=True)
            for e, v in self._all_exit_losses().items():
                sums[e] = sums.get(e, 0.0) + v
            n += 1
        self.model.train()
        return {e: v / max(1, n) for e, v in sums.items()}

    # ----------------------------------------------------------------------------------------- the run
    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.out_dir, "checkpoint")

    def _evaluate_stage(self, stage: CurriculumStage, valid_ds) -> dict:
        """Held-out loss of every exit on the stage's blend, then on each evaluation set and per domain."""
        batches = math.ceil(self.s.eval_samples / self.s.micro_batch_size)
        name = self.fcfg.exit_name
        out: dict = {"blend": {name(e): v for e, v in sorted(self.evaluate(valid_ds, batches).items())}}
        by_domain: dict[str, list[dict]] = {}
        for label, prefix in sorted(stage.eval_sets.items()):
            ds = build_eval_dataset(prefix, self.s.seq_length, self.s.eval_samples, self.tokenizer, self.s.seed,
                                    os.path.join(self.out_dir, "dataset_cache"), self.s.document_masks)
            out[label] = {name(e): v for e, v in sorted(self.evaluate(ds, batches).items())}
            by_domain.setdefault(label.split("/")[0], []).append(out[label])
        for domain, rows in sorted(by_domain.items()):
            if len(rows) > 1:  # one source: its row already is the domain's figure
                out[f"{domain}/*"] = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        return out

    def _resume(self, metrics_path: str) -> tuple[list[dict], dict]:
        """Load the latest checkpoint; keep the metrics rows up to its step (later ones were not saved)."""
        common = checkpointing.load(self.checkpoint_dir, self.model, self.optimizer)
        self.step = int(common["step"])
        rows = []
        if os.path.exists(metrics_path):
            with open(metrics_path) as f:
                rows = [r for r in map(json.loads, f) if r["step"] <= self.step]
        logger.info(f"resumed from {checkpointing.iteration_dir(self.checkpoint_dir, self.step)} at step {self.step}")
        return rows, common.get("evals", {})

    def init_weights(self) -> str:
        """Continued pretraining: every rank loads its slice of the starting weights (collective for a
        checkpoint of ours, rank-local reads for a Hugging Face folder). Returns the format read."""
        fmt = detect_format(self.s.init_from) if self.s.init_format == "auto" else self.s.init_format
        if fmt == HF:
            load_hf_qwen3(self.model, self.fcfg, self.s.init_from)
        else:
            checkpointing.load_weights(self.s.init_from, self.model)
        logger.info(f"initialised from {self.s.init_from} ({fmt})")
        return fmt

    def save_checkpoint(self, evals: dict) -> str:
        return checkpointing.save(self.checkpoint_dir, self.step, self.model, self.optimizer, {"evals": evals})

    def run(self, stages: list[CurriculumStage], resume: bool = False) -> dict:
        """Train over the curriculum. With ``resume`` and a checkpoint in the output folder, continue from
        it: the same samples, learning rate and lambda_k(t) at every later step as an uninterrupted run."""
        from megatron.core import parallel_state

        dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
        writer = torch.distributed.get_rank() == 0  # after the gathers, rank 0 knows every exit's loss
        metrics_path = os.path.join(self.out_dir, "metrics.jsonl")
        steps_per_stage = stage_steps(stages, self.s.steps)
        history, evals = [], {}
        if resume and checkpointing.latest_iteration(self.checkpoint_dir) is not None:
            history, evals = self._resume(metrics_path)
        elif self.s.init_from:
            self.started_from = {"path": self.s.init_from, "format": self.init_weights()}
        with open(metrics_path if writer else os.devnull, "w") as metrics:
            metrics.writelines(json.dumps(row) + "\n" for row in history)
            stage_end = 0
            for stage, n_steps in zip(stages, steps_per_stage):
                stage_start, stage_end = stage_end, stage_end + n_steps
                self.stage_span = StageSpan(stage.name, stage_start, n_steps)
                if self.step >= stage_end and (stage.name in evals or not self.s.eval_samples):
                    continue  # finished (and evaluated) before the checkpoint
                train_ds, valid_ds = build_datasets(
                    stage.data_args_path,
                    stage.valid_data_args_path,
                    self.s.seq_length,
                    train_samples=n_steps * self.s.micro_batch_size * dp,
                    eval_samples=max(1, self.s.eval_samples),
                    tokenizer=self.tokenizer,
                    seed=self.s.seed,
                    cache_dir=os.path.join(self.out_dir, "dataset_cache"),
                    document_masks=self.s.document_masks,
                )
                for i in range(self.step - stage_start, n_steps):
                    start = (i * dp + dp_rank) * self.s.micro_batch_size  # each data-parallel rank its own samples
                    idx = range(start, start + self.s.micro_batch_size)
                    t0 = time.perf_counter()
                    rec = self.train_step(collate([train_ds[j] for j in idx]))
                    seconds = time.perf_counter() - t0
                    row = {
                        "step": self.step,
                        "stage": stage.name,
                        "lr": rec["lr"],
                        "seconds": round(seconds, 4),
                        "tokens_per_s": round(self.s.micro_batch_size * self.s.seq_length * dp / seconds),
                        "grad_norm": rec["grad_norm"],
                        "loss": {self.fcfg.exit_name(e): v for e, v in sorted(rec["losses"].items())},
                        "lambda": {self.fcfg.exit_name(e): v for e, v in sorted(rec["lambdas"].items())},
                    }
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    history.append(row)
                    if writer:
                        logger.info(
                            f"step {self.step}/{self.s.steps} [{stage.name}] lr {rec['lr']:.2e} | grad norm "
                            f"{rec['grad_norm']:.3f} | {row['tokens_per_s']:,} tok/s | "
                            + " | ".join(f"{k} {v:.4f} (λ {row['lambda'][k]:.2f})" for k, v in row["loss"].items())
                        )
                    if self.s.save_interval and self.step % self.s.save_interval == 0 and self.step < self.s.steps:
                        self.save_checkpoint(evals)
                if self.s.eval_samples and valid_ds is not None:
                    evals[stage.name] = self._evaluate_stage(stage, valid_ds)
                    for label, losses in evals[stage.name].items():
                        logger.info(f"eval [{stage.name}] {label}: " + " | ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        ckpt = self.save_checkpoint(evals)
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "steps": self.step,
            "steps_per_stage": dict(zip([s.name for s in stages], steps_per_stage)),
            "parameters": n_params,
            "exits": list(self.fcfg.exits),
            "layers_per_stage": list(self.pipeline_plan.layers_per_stage) if self.pipeline_plan else None,
            "first_loss": history[0]["loss"] if history else {},
            "last_loss": history[-1]["loss"] if history else {},
            "eval": evals,
            "metrics": metrics_path,
            "checkpoint": ckpt,
            "init_from": self.started_from,
        }
