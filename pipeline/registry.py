"""The stages of a run, in order. The runner, the command line and the report iterate this list; each stage
is defined by its own package (its ``stage.py``)."""

from __future__ import annotations

from decontam.stage import DecontamStage
from dedup.stage import DedupStage
from filters.stage import FilterStage
from mixtures.stage import MixStage, TokenizeStage
from pipeline.core.stage import Stage
from train_entry.stage import TrainStage

STAGES: tuple[Stage, ...] = (FilterStage(), DedupStage(), DecontamStage(), TokenizeStage(), MixStage(), TrainStage())
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
DOC_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES if s.documents)


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r}; stages are {list(STAGE_NAMES)}")
