"""Joint multi-branch continued pretraining over the curriculum planned by the mixture stage.

Each optimizer step runs megatron-core's own forward-backward schedule over the step's micro-batches
(``forward_backward.py``); the exit losses ride on the trunk activations (``ExitLossAutoScaler``), so the
same loop serves tensor, pipeline and data parallelism. Gradients are reduced by megatron-core's DDP and
applied by its optimizer, the learning rate follows its ``OptimizerParamScheduler`` (``optim.py``,
``lr_schedule.py``). Every exit's loss and lambda_k(t), the learning rate, gradient norm, throughput, MFU
and peak memory are logged per step (``metrics.py``); each curriculum stage ends with a held-out evaluation
of every exit.
"""

from __future__ import annotations

import math
import os
import time

import torch
from loguru import logger

from pipeline.core.atomic import write_json
from train_entry import checkpointing, stop_signals
from train_entry.data import DatasetTokenizer, build_datasets, build_eval_dataset, collate
from train_entry.forward_backward import ForwardBackward, data_parallel_mean
from train_entry.init_from import HF, detect_format, load_hf_qwen3
from train_entry.loop_settings import CurriculumStage, LoopSettings, micro_batches_per_step, stage_steps
from train_entry.loss_schedule import StageSpan, exit_weights_at
from train_entry.lr_schedule import build_scheduler
from train_entry.metrics import MetricsLog, peak_memory, read_metrics, throughput, training_flops_per_token
from train_entry.model import FamilialGPTModel, build_model_chunks
from train_entry.model_config import FamilialConfig
from train_entry.optim import build_optimizer, optimizer_step, wrap_model
from train_entry.pipeline_balance import plan_pipeline
from train_entry.step_batches import StepDataset, StepShape, broadcast_step, step_loader
from train_entry.step_guard import StepEvent, StepGuard, gradients_finite
from train_entry.stopped import STOPPED, TrainingStopped


def per_chunk(functions: list):
    """megatron-core's schedule config takes one function, or a list of one per model chunk."""
    return functions[0] if len(functions) == 1 else functions


class FamilialTrainer:
    def __init__(self, fcfg: FamilialConfig, settings: LoopSettings, tokenizer: DatasetTokenizer, out_dir: str):
        from megatron.core import parallel_state

        if len(settings.exit_weights) != len(fcfg.exits):
            raise ValueError(f"{len(settings.exit_weights)} exit weight schedules for {len(fcfg.exits)} exits")
        self.fcfg, self.s, self.tokenizer, self.out_dir = fcfg, settings, tokenizer, out_dir
        # document masks: batches carry each token's document id, from the end-of-document token
        self.document_eod = tokenizer.eod if settings.document_masks and tokenizer is not None else None
        self.dp = parallel_state.get_data_parallel_world_size()
        self.micro_batches = micro_batches_per_step(settings, self.dp)
        os.makedirs(out_dir, exist_ok=True)
        torch.manual_seed(settings.seed)
        if torch.cuda.is_available():
            # megatron-core initialises weights on the GPU through its CUDA RNG tracker (tensor-parallel ranks
            # draw different shards, data-parallel replicas the same): it must be seeded before the build
            from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

            model_parallel_cuda_manual_seed(settings.seed)
        self.pipeline_plan = None
        if settings.vp > 1 and settings.pp == 1:
            raise ValueError("train.virtual_pipeline_parallel: interleaving needs pipeline_parallel > 1")
        if settings.vp > 1 and settings.dae_exit is not None:
            raise ValueError("train.virtual_pipeline_parallel: DaE (a frozen trunk) is not trained with interleaved 1F1B")
        if settings.vp > 1 and self.micro_batches % settings.pp:
            raise ValueError(f"train.virtual_pipeline_parallel: interleaved 1F1B needs the micro-batches per step "
                             f"({self.micro_batches}) to be a multiple of pipeline_parallel ({settings.pp}); "
                             f"raise global_batch_size")
        if settings.pp > 1:
            # under interleaving the plan splits the layers over pp x vp virtual stages
            self.pipeline_plan = plan_pipeline(fcfg, settings.pp * settings.vp, settings.seq_length, settings.pipeline_balance)
            logger.info(f"pipeline stages: layers {self.pipeline_plan.layers_per_stage}, cost in layer units "
                        f"{[round(c, 2) for c in self.pipeline_plan.stage_cost]} (even split: {self.pipeline_plan.even_stage_cost and [round(c, 2) for c in self.pipeline_plan.even_stage_cost]})")
        layout = self.pipeline_plan.layout if self.pipeline_plan else None
        self.chunks: list[FamilialGPTModel] = build_model_chunks(
            fcfg, tp=settings.tp, pp=settings.pp, vp=settings.vp, pipeline_layout=layout,
            params_dtype=torch.bfloat16 if settings.bf16 else torch.float32, recompute=settings.recompute,
            attention=settings.attention)
        if settings.dae_exit is not None:
            from train_entry.dae import append_dae_blocks, freeze_for_dae

            append_dae_blocks(self.model, settings.dae_exit, settings.dae_blocks)
            freeze_for_dae(self.model, settings.dae_exit)
        if torch.cuda.is_available():
            for chunk in self.chunks:
                chunk.cuda()
        # DDP allocates gradient buffers for the trainable parameters only: freezing (DaE) comes first
        self.ddp = wrap_model(self.chunks, settings.optimizer_settings())  # one DDP per chunk
        self.optimizer = build_optimizer(self.ddp, settings.optimizer_settings())
        config = self.chunks[0].config  # the schedule defers the data-parallel reduction to the last micro-batch
        from megatron.core.distributed import finalize_model_grads

        config.no_sync_func = per_chunk([ddp.no_sync for ddp in self.ddp])
        if self.ddp[0].ddp_config.overlap_grad_reduce:
            # as Megatron-LM sets it: under interleaving each chunk's reduction starts when its last backward ends
            config.grad_sync_func = per_chunk([ddp.start_grad_sync for ddp in self.ddp])
        config.finalize_model_grads_func = finalize_model_grads
        self.scheduler = self._build_scheduler(["run"], [settings.steps])
        self.passes = ForwardBackward(self.chunks, self.ddp, settings.seq_length)
        extra = settings.dae_blocks if settings.dae_exit is not None else 0
        self.flops_per_token = training_flops_per_token(fcfg, settings.seq_length, extra)
        self.step = 0
        self.started_from: dict | None = None  # the weights this run continued from (None: random or resumed)
        self.guard = StepGuard(settings.guard, fcfg.exits[-1])
        self.stage_span: StageSpan | None = None  # the curriculum stage being trained
        self.pending_save = None  # a checkpoint being written in the background (train.async_save)

    @property
    def model(self) -> FamilialGPTModel:
        """The familial model of this rank, when it is one chunk (no interleaving)."""
        if len(self.chunks) != 1:
            raise ValueError(f"this rank holds {len(self.chunks)} model chunks (interleaved 1F1B): use .chunks")
        return self.chunks[0]

    def _build_scheduler(self, stage_names: list[str], steps_per_stage: list[int]):
        s = self.s
        return build_scheduler(self.optimizer, s.lr_schedule, s.lr, s.min_lr, s.weight_decay, stage_names, steps_per_stage)

    # ------------------------------------------------------------------------------------------- steps
    def _set_exit_weights(self) -> dict[int, float]:
        weights = exit_weights_at(self.step, self.s.steps, self.s.exit_weights, self.stage_span, self.s.stage_exit_weights)
        lambdas = dict(zip(self.fcfg.exits, weights))
        for chunk in self.chunks:
            chunk.exit_weights.update(lambdas)
        return lambdas

    def train_step(self, micro_batches: list[dict] | dict) -> dict:
        """One optimizer step over this rank's micro-batches of the global batch."""
        micro_batches = [micro_batches] if isinstance(micro_batches, dict) else micro_batches
        lambdas = self._set_exit_weights()
        lr = self.optimizer.param_groups[0]["lr"]
        for ddp in self.ddp:
            ddp.zero_grad_buffer()
        self.optimizer.zero_grad()
        local = self.passes.run(micro_batches, forward_only=False)
        losses = data_parallel_mean(local)
        event = self.guard.verdict(self.step, losses, gradients_finite(self.ddp))
        if event is None:
            stepped, norm = optimizer_step(self.optimizer)
            self.scheduler.step(1)
        else:  # the update is not applied: weights, moments and schedule stay as they were
            stepped, norm = False, None
            logger.warning(f"step {self.step + 1}: {event.reason} ({event.detail}): "
                           + ("update skipped" if event.action == "skip" else "the run stops"))
        if event is None or event.action == "skip":
            self.step += 1  # a skipped step's data is consumed; a stopping one is retried by a resumed run
        return {"lr": lr, "lambdas": lambdas, "losses": losses, "replica_losses": local, "grad_norm": norm,
                "stepped": stepped, "event": event}

    @torch.no_grad()
    def evaluate(self, dataset, batches: int) -> dict[int, float]:
        """Mean held-out loss of every exit (through the schedule, so it works on every pipeline stage)."""
        mbs = self.s.micro_batch_size
        micro = [collate([dataset[i] for i in range(b * mbs, min(len(dataset), (b + 1) * mbs))], self.document_eod)
                 for b in range(batches) if b * mbs < len(dataset)]
        if not micro:
            return {}
        for chunk in self.chunks:
            chunk.eval()
        try:
            return self.passes.run(micro, forward_only=True)
        finally:
            for chunk in self.chunks:
                chunk.train()

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
            seed = self.s.seed if self.s.eval_seed is None else self.s.eval_seed
            ds = build_eval_dataset(prefix, self.s.seq_length, self.s.eval_samples, self.tokenizer, seed,
                                    os.path.join(self.out_dir, "dataset_cache"), self.s.document_masks)
            out[label] = {name(e): v for e, v in sorted(self.evaluate(ds, batches).items())}
            by_domain.setdefault(label.split("/")[0], []).append(out[label])
        for domain, rows in sorted(by_domain.items()):
            if len(rows) > 1:  # one source: its row already is the domain's figure
                out[f"{domain}/*"] = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        return out

    def _resume(self, metrics_path: str) -> tuple[list[dict], int, dict]:
        """Load the latest checkpoint; keep the metrics rows up to its step (later ones were not saved)."""
        common = checkpointing.load(self.checkpoint_dir, self.chunks, self.optimizer)
        self.step = int(common["step"])
        if "lr_scheduler" in common:
            self.scheduler.load_state_dict(common["lr_scheduler"])
        rows, keep_bytes = read_metrics(metrics_path, self.step)
        self.guard.events[:0] = [StepEvent(**e) for e in common.get("events", [])]
        logger.info(f"resumed from {checkpointing.iteration_dir(self.checkpoint_dir, self.step)} at step {self.step}")
        return rows, keep_bytes, common.get("evals", {})

    def init_weights(self) -> str:
        """Continued pretraining: every rank loads its slice of the starting weights (collective for a
        checkpoint of ours, rank-local reads for a Hugging Face folder). Returns the format read."""
        fmt = detect_format(self.s.init_from) if self.s.init_format == "auto" else self.s.init_format
        if fmt == HF:
            for chunk in self.chunks:
                load_hf_qwen3(chunk, self.fcfg, self.s.init_from)
        else:
            checkpointing.load_weights(self.s.init_from, self.chunks)
        self.optimizer.reload_model_params()  # the fp32 master copy of bf16 parameters follows the loaded weights
        logger.info(f"initialised from {self.s.init_from} ({fmt})")
        return fmt

    def save_checkpoint(self, evals: dict, background: bool = False) -> str:
        """A checkpoint at this step (collective). ``background``: written by a thread while training goes on,
        published by ``finish_pending_save`` once every rank's write is done (``train.async_save``)."""
        self.finish_pending_save()
        if checkpointing.latest_iteration(self.checkpoint_dir) == self.step:  # saved already at this step
            return checkpointing.iteration_dir(self.checkpoint_dir, self.step)
        saved = checkpointing.save(self.checkpoint_dir, self.step, self.chunks, self.optimizer,
                                   {"evals": evals, "lr_scheduler": self.scheduler.state_dict(),
                                    "events": [e.as_dict() for e in self.guard.events]},
                                   keep=self.s.keep_checkpoints, asynchronous=background)
        if background:
            self.pending_save = saved
            return saved.path
        return saved

    def finish_pending_save(self) -> None:
        """Wait for a background save and publish it (collective)."""
        if self.pending_save is not None:
            self.pending_save.finish()
            self.pending_save = None

    def stop(self, why: str, evals: dict, log: "MetricsLog") -> None:
        """Save a checkpoint at this step, record why the run stopped, and raise ``TrainingStopped``."""
        log.close()
        path = self.save_checkpoint(evals)
        message = (f"training stopped at step {self.step} of {self.s.steps}: {why}; checkpoint {path} saved; continue "
                   f"with `ruyi2 train RECIPE --resume`")
        if torch.distributed.get_rank() == 0:
            write_json(os.path.join(self.out_dir, STOPPED), {"step": self.step, "why": why, "checkpoint": path,
                                                             "message": message})
        raise TrainingStopped(message)

    def _steps(self, train_ds, first: int, n_steps: int):
        """This rank's micro-batches for steps ``first`` .. ``n_steps - 1`` of a stage, with the seconds each
        took to arrive: built ahead by the DataLoader's workers on the tensor-parallel group's source rank,
        broadcast to the group's other ranks (which build nothing)."""
        from megatron.core import parallel_state

        shape = StepShape(self.micro_batches, self.s.micro_batch_size, self.s.seq_length, self.document_eod is not None)
        steps = None
        if parallel_state.get_tensor_model_parallel_rank() == 0 and first < n_steps:
            dataset = StepDataset(train_ds, n_steps, shape, parallel_state.get_data_parallel_rank(), self.dp,
                                  self.document_eod)
            steps = iter(step_loader(dataset, first, self.s.data_workers, self.s.data_prefetch, torch.cuda.is_available()))
        for _ in range(first, n_steps):  # the loader's workers stop with its iterator, when this generator ends
            t0 = time.perf_counter()
            micro = broadcast_step(next(steps) if steps is not None else None, shape)
            yield micro, time.perf_counter() - t0

    def _log_row(self, stage: str, rec: dict, seconds: float, data_seconds: float) -> dict:
        tokens = self.micro_batches * self.s.micro_batch_size * self.dp * self.s.seq_length
        name = self.fcfg.exit_name
        return {
            "step": self.step,
            "stage": stage,
            "lr": rec["lr"],
            "seconds": round(seconds, 4),  # the whole step, the wait for its data included
            "data_seconds": round(data_seconds, 4),
            **throughput(tokens, seconds, self.flops_per_token, torch.distributed.get_world_size()),
            "grad_norm": rec["grad_norm"],  # None: the update was skipped (see "skipped")
            **({"skipped": rec["event"].reason} if rec.get("event") else {}),
            "loss": {name(e): v for e, v in sorted(rec["losses"].items())},
            "lambda": {name(e): v for e, v in sorted(rec["lambdas"].items())},
            "memory": peak_memory(),
        }

    def run(self, stages: list[CurriculumStage], resume: bool = False) -> dict:
        """Train over the curriculum. With ``resume`` and a checkpoint in the output folder, continue from
        it: the same samples, learning rate and lambda_k(t) at every later step as an uninterrupted run."""
        dp, mbs = self.dp, self.s.micro_batch_size
        writer = torch.distributed.get_rank() == 0  # after the gathers, rank 0 knows every exit's loss
        steps_per_stage = stage_steps(stages, self.s.steps)
        self.scheduler = self._build_scheduler([st.name for st in stages], steps_per_stage)
        history, keep_bytes, evals = [], None, {}
        metrics_path = os.path.join(self.out_dir, "metrics.jsonl")
        if resume and checkpointing.latest_iteration(self.checkpoint_dir) is not None:
            history, keep_bytes, evals = self._resume(metrics_path)
        elif self.s.init_from:
            self.started_from = {"path": self.s.init_from, "format": self.init_weights()}
        log = MetricsLog(self.out_dir, writer, keep_bytes, self.s.tensorboard)
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
                train_samples=n_steps * mbs * dp * self.micro_batches,
                eval_samples=max(1, self.s.eval_samples),
                tokenizer=self.tokenizer,
                seed=self.s.seed,
                cache_dir=os.path.join(self.out_dir, "dataset_cache"),
                document_masks=self.s.document_masks,
            )
            for micro, data_seconds in self._steps(train_ds, self.step - stage_start, n_steps):
                t0 = time.perf_counter() - data_seconds
                rec = self.train_step(micro)
                event = rec["event"]
                if event is not None and event.action == "stop":
                    self.stop(f"{event.reason} at step {event.step + 1} ({event.detail})", evals, log)
                row = self._log_row(stage.name, rec, time.perf_counter() - t0, data_seconds)
                log.write(row)
                history.append(row)
                if writer:
                    norm = "skipped" if rec["grad_norm"] is None else f"{rec['grad_norm']:.3f}"
                    logger.info(
                        f"step {self.step}/{self.s.steps} [{stage.name}] lr {rec['lr']:.2e} | grad norm "
                        f"{norm} | {row['tokens_per_s']:,} tok/s (data {1e3 * data_seconds:.0f} ms) | "
                        + " | ".join(f"{k} {v:.4f} (λ {row['lambda'][k]:.2f})" for k, v in row["loss"].items())
                    )
                if self.pending_save is not None and self.pending_save.poll():  # published as soon as written
                    self.finish_pending_save()
                if self.s.save_interval and self.step % self.s.save_interval == 0 and self.step < self.s.steps:
                    self.save_checkpoint(evals, background=self.s.async_save)
                if (signal_name := stop_signals.agreed()) is not None:
                    self.stop(f"{signal_name} received", evals, log)
            if self.s.eval_samples and valid_ds is not None:
                evals[stage.name] = self._evaluate_stage(stage, valid_ds)
                for label, losses in evals[stage.name].items():
                    logger.info(f"eval [{stage.name}] {label}: " + " | ".join(f"{k} {v:.4f}" for k, v in losses.items()))
        log.close()
        ckpt = self.save_checkpoint(evals)
        n_params = sum(p.numel() for chunk in self.chunks for p in chunk.parameters())
        return {
            "steps": self.step,
            "steps_per_stage": dict(zip([s.name for s in stages], steps_per_stage)),
            "micro_batches_per_step": self.micro_batches,
            "global_batch_size": mbs * dp * self.micro_batches,
            "parameters": n_params,
            "exits": list(self.fcfg.exits),
            "layers_per_stage": list(self.pipeline_plan.layers_per_stage) if self.pipeline_plan else None,
            "first_loss": history[0]["loss"] if history else {},
            "last_loss": history[-1]["loss"] if history else {},
            "eval": evals,
            "metrics": metrics_path,
            "checkpoint": ckpt,
            "init_from": self.started_from,
            "events": [e.as_dict() for e in self.guard.events],  # skipped steps (non-finite, loss spikes)
        }
