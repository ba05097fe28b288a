"""Time-dependent exit loss weights lambda_k(t) of Ruyi2's joint loss L = sum_k lambda_k(t) CE_k.

The report supervises the early exits strongly at the start and lets that decay so the auxiliary
objectives do not fight the main one late in training: e.g. ``start=1.0, end=0.1, schedule=cosine``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ExitWeight:
    start: float = 1.0
    end: float = 1.0
    schedule: str = "constant"  # constant | linear | cosine
    warmup_steps: int = 0

    def at(self, step: int, total_steps: int) -> float:
        """Weight at optimizer step ``step`` (0-based) of ``total_steps``; linear warm-up from 0."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.start * (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return self.start
        span = max(1, total_steps - 1 - self.warmup_steps)
        frac = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        if self.schedule == "linear":
            return self.start + (self.end - self.start) * frac
        if self.schedule == "cosine":
            return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * frac))
        raise ValueError(f"unknown exit weight schedule {self.schedule!r}")


@dataclass(frozen=True)
class StageSpan:
    """Where a curriculum stage sits in the run: its name, first step and number of steps."""

    name: str
    start: int
    steps: int


def exit_weights_at(step: int, total_steps: int, run_schedule: list[ExitWeight], stage: StageSpan | None = None,
                    per_stage: dict[str, list[ExitWeight]] | None = None) -> list[float]:
    """lambda_k at ``step``: a curriculum stage with its own schedules restarts them over its own steps (e.g.
    the annealing stage); every other stage continues the run's schedules over all steps."""
    if stage is not None and per_stage and stage.name in per_stage:
        return [w.at(step - stage.start, stage.steps) for w in per_stage[stage.name]]
    return [w.at(step, total_steps) for w in run_schedule]
