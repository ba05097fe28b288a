"""Whether a training step's update is applied: a weeks-long run meets NaN gradients and loss spikes, and
an update computed from either damages weights that took days to train.

After the forward-backward and before the optimizer, every rank checks its gradient buffers for NaN or
infinity (megatron-core's DDP buffers, the same check as its ``check_for_nan_in_grad``) and the ranks agree
through one all-reduce; the step's losses are already the same on every rank (gathered over the pipeline,
averaged over the replicas), so each rank decides a spike alike without talking. A spike is a final-exit loss
above ``loss_spike`` times the median of the last ``spike_window`` applied steps (the median: one spike does
not move it). The action is the recipe's: skip the update (the weights, the optimizer's moments and the
learning-rate schedule stay as they were; the step's data is consumed, as Megatron-LM skips an iteration) or
stop the run (the trainer saves a checkpoint of the weights before the step and names the event). Too many
skipped steps in a row stop the run too: a skip is for a passing glitch, not a diverged model.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GuardSettings:
    nonfinite: str = "stop"  # skip | stop
    loss_spike: float | None = None  # factor over the running median; None: no spike rule
    spike_window: int = 50
    on_spike: str = "skip"  # skip | stop
    max_skips: int = 10  # consecutive skipped steps that stop the run


@dataclass(frozen=True)
class StepEvent:
    step: int
    reason: str  # nonfinite_gradients | nonfinite_loss | loss_spike | too_many_skips
    action: str  # skip | stop
    detail: str

    def as_dict(self) -> dict:
        return {"step": self.step, "reason": self.reason, "action": self.action, "detail": self.detail}


def gradients_finite(ddp_chunks: list) -> bool:
    """True on every rank when no rank's gradient buffers hold NaN or infinity (one all-reduce)."""
    # Bucket by bucket (megatron-core's ~40M-element buckets): isfinite's boolean copy stays bucket-sized, and
    # the verdicts stay on the device until the one .item() below.
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    verdicts = [torch.isfinite(bucket.grad_data).all() for ddp in ddp_chunks
                for buffer in [*ddp.buffers, *getattr(ddp, "expert_parallel_buffers", [])] for bucket in buffer.buckets]
    ok = (torch.stack(verdicts).all() if verdicts else torch.tensor(True)).to(device=device, dtype=torch.float32).reshape(1)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok.item())


class StepGuard:
    def __init__(self, settings: GuardSettings, final_exit: int):
        self.s, self.final_exit = settings, final_exit
        self.recent: deque[float] = deque(maxlen=settings.spike_window)
        self.skips_in_a_row = 0
        self.events: list[StepEvent] = []

    def verdict(self, step: int, losses: dict[int, float], grads_finite: bool) -> StepEvent | None:
        """The event that stops this step's update (None: apply it); recorded in ``events``."""
        event = None
        final = losses.get(self.final_exit)
        if not all(math.isfinite(v) for v in losses.values()):
            event = StepEvent(step, "nonfinite_loss", self.s.nonfinite, f"losses {losses}")
        elif not grads_finite:
            event = StepEvent(step, "nonfinite_gradients", self.s.nonfinite, "NaN or infinity in the gradient buffers")
        elif (self.s.loss_spike and final is not None and len(self.recent) >= min(5, self.recent.maxlen)
              and final > self.s.loss_spike * (median := statistics.median(self.recent))):
            event = StepEvent(step, "loss_spike", self.s.on_spike,
                              f"final-exit loss {final:.4f} > {self.s.loss_spike} x the median {median:.4f} of the last "
                              f"{len(self.recent)} applied steps")
        if event is None:
            self.skips_in_a_row = 0
            if final is not None:
                self.recent.append(final)
            return None
        if event.action == "skip":
            self.skips_in_a_row += 1
            if self.skips_in_a_row > self.s.max_skips:
                event = StepEvent(step, "too_many_skips", "stop", f"{self.skips_in_a_row} steps skipped in a row; the last: "
                                                                   f"{event.reason} ({event.detail})")
        self.events.append(event)
        return event
