"""The error every stage raises for a run that cannot go on: the command line prints its message (which
says why and what to do) and exits with status 1."""

from __future__ import annotations


class StageError(RuntimeError):
    """A stage could not run or finish; the message says why and what to do."""
