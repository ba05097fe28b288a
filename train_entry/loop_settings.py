"""What a training loop runs, before it runs: its settings, its curriculum stages, and which samples each
step and micro-batch takes (Megatron-LM's order, so one process and N data-parallel replicas see the same
global batch)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from train_entry.loss_schedule import ExitWeight
from train_entry.lr_schedule import LRSchedule
from train_entry.optim import OptimizerSettings
from train_entry.step_guard import GuardSettings


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
    global_batch_size: int | None = None  # samples per optimizer step over all replicas (None: one micro-batch each)
    lr_schedule: LRSchedule = LRSchedule()
    tp: int = 1
    pp: int = 1
    vp: int = 1  # model chunks per pipeline rank: interleaved 1F1B when > 1
    dae_exit: int | None = None  # DaE stage 1 on this exit (train_entry/dae.py); None: joint training
    dae_blocks: int = 3
    save_interval: int = 0  # checkpoint every N steps (0: only at the end)
    async_save: bool = False  # interval checkpoints written by a background thread while training goes on
    keep_checkpoints: int | None = None  # the newest N checkpoints are kept (None: all)
    guard: GuardSettings = field(default_factory=GuardSettings)  # non-finite gradients and loss spikes
    # "exits": stages balanced for the branch cost; "even": L / PP layers each; or layers per stage
    pipeline_balance: str | list[int] = "exits"
    init_from: str | None = None  # start from these weights: a Hugging Face Qwen3 folder or a checkpoint of ours
    init_format: str = "auto"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float = 1.0  # largest gradient norm (0: no clipping)
    bf16: bool = False  # bf16 parameters and activations with fp32 master weights
    distributed_optimizer: bool = False
    recompute: str = "none"  # none | selective | full
    attention: str = "fused"  # fused (PyTorch SDPA / FlexAttention) | unfused (megatron-core's DotProductAttention)
    tensorboard: bool = True
    data_workers: int = 2  # DataLoader worker processes building the next steps' batches (0: in the training process)
    data_prefetch: int = 2  # steps each worker builds ahead
    document_masks: bool = False  # packed documents do not attend to each other; positions restart per document
    # curriculum stage -> lambda_k schedules over that stage's own steps (others follow exit_weights)
    stage_exit_weights: dict[str, list[ExitWeight]] = field(default_factory=dict)
    # the per-domain evaluation sets' samples (None: ``seed``); runs compared with each other (the mixture
    # ablation's proxies, several seeds each) fix it so every run is scored on the same sequences
    eval_seed: int | None = None

    def optimizer_settings(self) -> OptimizerSettings:
        return OptimizerSettings(self.lr, self.min_lr, self.weight_decay, self.betas, self.eps, self.clip_grad,
                                 self.bf16, self.distributed_optimizer)


def micro_batches_per_step(settings: LoopSettings, dp: int) -> int:
    """Gradient accumulation: the global batch over (micro-batch x data-parallel replicas)."""
    if settings.global_batch_size is None:
        return 1
    per_pass = settings.micro_batch_size * dp
    if settings.global_batch_size % per_pass:
        raise ValueError(f"train.global_batch_size {settings.global_batch_size} is not a multiple of micro_batch_size "
                         f"{settings.micro_batch_size} x data-parallel size {dp}")
    return settings.global_batch_size // per_pass


def sample_indices(step_in_stage: int, micro_batch: int, dp_rank: int, dp: int, mbs: int, n_micro: int) -> range:
    """The samples of one micro-batch, in Megatron-LM's order: a step takes the next global batch; each
    micro-batch pass takes the next micro_batch_size x dp samples, and replica r its r-th slice. One
    process with accumulation and several replicas therefore see the same global batch."""
    start = (step_in_stage * n_micro + micro_batch) * mbs * dp + dp_rank * mbs
    return range(start, start + mbs)


def stage_steps(stages: list[CurriculumStage], total: int) -> list[int]:
    """Optimizer steps per curriculum stage, proportional to its tokens, at least one each."""
    tokens = sum(s.tokens for s in stages)
    raw = [max(1, math.floor(total * s.tokens / tokens)) for s in stages]
    raw[-1] = max(1, total - sum(raw[:-1]))
    return raw
