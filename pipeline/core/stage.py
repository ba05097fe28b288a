"""What a stage is: a name, the stage whose output it reads, and a ``run`` that turns that output into its
own, with its stats. Each stage package defines its stages in its ``stage.py``; ``pipeline/registry.py``
lists them in order and the runner iterates that list.

A stage receives the whole recipe (composed above this layer from every stage's schema) but reads only
its own section and the shared ones (sources, executor, tokenizer), and the run directory's layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipeline.core.layout import RunLayout


class StageError(RuntimeError):
    """A stage could not run or finish; the message says why and what to do. (Exit status 1.)"""


class MissingInput(StageError):
    pass


@dataclass(frozen=True)
class StageContext:
    recipe: Any  # pipeline.recipe.Recipe
    layout: RunLayout
    resume: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # stage-specific command-line options (filter --retune)


class Stage:
    name: ClassVar[str]
    needs: ClassVar[str | None] = None  # the stage whose output this one reads
    help: ClassVar[str] = ""
    documents: ClassVar[bool] = False  # its output is documents (in = kept + removed + quarantined)
    section: ClassVar[str | None] = None  # an optional recipe section this stage cannot run without

    def run(self, ctx: StageContext) -> dict:
        raise NotImplementedError

    def require_previous(self, ctx: StageContext) -> None:
        if self.needs and not os.path.exists(ctx.layout.stats(self.needs)):
            raise MissingInput(f"stage {self.name!r} needs the output of {self.needs!r} ({ctx.layout.stats(self.needs)}); "
                               f"run `ruyi2 {self.needs}` first")
