"""SIGTERM and SIGUSR1 ask a training run to save a checkpoint and stop at the next step boundary.

Schedulers warn a job before they kill it (SLURM's ``--signal=USR1@120``, a Kubernetes pod's termination grace
period, a spot instance's notice); torchrun's agent passes SIGTERM on to every worker. The handler only notes
the signal; after each step the ranks agree through one all-reduce (a signal reaches the ranks at different
moments, and the checkpoint is collective), then every rank saves the same step and the run stops with a
message naming the checkpoint. ``ruyi2 train RECIPE --resume`` continues from it.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_received: list[int] = []


def _note(signum, frame) -> None:
    _received.append(signum)


def install() -> dict:
    """Note SIGTERM/SIGUSR1 instead of dying (main thread only); returns the handlers it replaced."""
    _received.clear()
    return {sig: signal.signal(sig, _note) for sig in SIGNALS}


def restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def agreed() -> str | None:
    """The signal any rank received so far (its name), the same answer on every rank; None if none."""
    import torch  # the command line imports this module; torch only when training asks

    local = _received[0] if _received else 0
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        t = torch.tensor([local], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        local = int(t.item())
    return signal.Signals(local).name if local else None
