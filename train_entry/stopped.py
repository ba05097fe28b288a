"""A training run that stopped before its last step (SIGTERM/SIGUSR1, or a bad step the recipe stops on): its
error and the record it leaves (``RUN_DIR/train/stopped.json``: the step, why, the checkpoint saved, the message),
which the train stage reads back from its training process. No torch here: the command line imports it."""

from __future__ import annotations

from pipeline.core.errors import StageError

STOPPED = "stopped.json"
STOPPED_STATUS = 3  # the training process's exit status when it stopped early after saving


class TrainingStopped(StageError):
    """The run stopped early after saving a checkpoint; the message names it and how to continue."""
