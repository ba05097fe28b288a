"""What a stage is: a name, the stage whose output it reads, and a ``run`` that turns that output into its
own, with its stats. Each stage package defines its stages in its ``stage.py``; ``pipeline/registry.py``
lists them in order and the runner iterates that list.

A stage receives the whole recipe (composed above this layer from every stage's schema) but reads only
its own section and the shared ones (sources, executor, tokenizer), and the run directory's layout.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipeline.core.accounting import previous_kept, stage_accounting
from pipeline.core.errors import StageError
from pipeline.core.layout import RunLayout


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
    # subfolders of the stage folder holding work that is costly to redo (checkpoints): a run that would empty
    # the folder is refused unless it resumes that work or the user asks for a restart
    keeps: ClassVar[dict[str, str]] = {}

    def run(self, ctx: StageContext) -> dict:
        raise NotImplementedError

    def preflight(self, recipe) -> list[str]:
        """What this stage needs beyond the recipe's own checks (e.g. a checkpoint to start from), checked
        before any stage of the run starts; each problem names its recipe key."""
        return []

    def start_problems(self, recipe, layout: RunLayout, resume: bool, restart: bool) -> list[str]:
        """Checked before any stage of the run starts: emptying this stage's folder would destroy kept work."""
        if resume or restart:
            return []
        held = layout.kept_work(self.name, self.keeps)
        return [f"stage {self.name!r} starts from an empty folder, which would delete {', '.join(held)}: rerun with --resume "
                "to continue from it, or with --restart to delete it and start over"] if held else []

    def require_previous(self, ctx: StageContext) -> None:
        if self.needs and not os.path.exists(ctx.layout.stats(self.needs)):
            raise MissingInput(f"stage {self.name!r} needs the output of {self.needs!r} ({ctx.layout.stats(self.needs)}); "
                               f"run `ruyi2 {self.needs}` first")

    def start(self, ctx: StageContext) -> None:
        """The previous stage's output must exist; this stage's folder starts empty (kept to resume)."""
        self.require_previous(ctx)
        ctx.layout.fresh_stage(self.name, ctx.resume)

    def pass_through(self, ctx: StageContext) -> None:
        """A switched-off document stage still produces its output folder: the previous one's, unchanged."""
        shutil.copytree(ctx.layout.output(self.needs), ctx.layout.output(self.name), dirs_exist_ok=True)

    def account(self, ctx: StageContext) -> dict:
        """The stage's document counts per source, checked against what the previous stage kept."""
        names = [s.name for s in ctx.recipe.sources]
        return stage_accounting(self.name, ctx.layout.stage(self.name), previous_kept(ctx.layout.stats(self.needs)), names)
