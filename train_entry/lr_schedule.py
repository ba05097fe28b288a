"""The learning rate over the run, by megatron-core's ``OptimizerParamScheduler``.

Warm-up rises linearly from 0 to ``lr``; then ``cosine``, ``linear`` or ``constant``, or ``wsd``
(warm-up, stable, decay): the rate stays at ``lr`` until the annealing curriculum stage and decays to
``min_lr`` over that stage's own steps, as Ruyi2 anneals the learning rate at the end of its mid-training
phase (report §3.3.1). Later stages, if any, train at ``min_lr``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LRSchedule:
    style: str = "cosine"  # cosine | linear | constant | wsd
    warmup_steps: int = 0
    anneal_stage: str | None = None  # wsd: the curriculum stage that decays (default: the last)
    decay_style: str = "linear"  # wsd: linear | cosine | exponential | minus_sqrt


def decay_span(schedule: LRSchedule, stage_names: list[str], steps_per_stage: list[int]) -> tuple[int, int]:
    """(steps until the decay ends, steps the WSD decay takes) for the run's curriculum."""
    total = sum(steps_per_stage)
    if schedule.style != "wsd":
        return total, 0
    name = schedule.anneal_stage or stage_names[-1]
    if name not in stage_names:
        raise ValueError(f"lr_anneal_stage: no curriculum stage {name!r} (stages: {stage_names})")
    i = stage_names.index(name)
    return sum(steps_per_stage[: i + 1]), steps_per_stage[i]


def build_scheduler(optimizer, schedule: LRSchedule, lr: float, min_lr: float, weight_decay: float,
                    stage_names: list[str], steps_per_stage: list[int]):
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    decay_steps, wsd_steps = decay_span(schedule, stage_names, steps_per_stage)
    # megatron-core requires decay beyond warm-up; a run shorter than its warm-up simply never decays
    decay_steps = max(decay_steps, schedule.warmup_steps + 1)
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=lr,
        min_lr=min_lr,
        lr_warmup_steps=schedule.warmup_steps,
        lr_decay_steps=decay_steps,
        lr_decay_style="WSD" if schedule.style == "wsd" else schedule.style,
        start_wd=weight_decay,
        end_wd=weight_decay,
        wd_incr_steps=decay_steps,
        wd_incr_style="constant",
        wsd_decay_steps=max(1, wsd_steps) if schedule.style == "wsd" else None,
        lr_wsd_decay_style=schedule.decay_style if schedule.style == "wsd" else None,
    )
