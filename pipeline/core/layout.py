"""The run directory: one folder per stage, each stage reading only the previous stage's ``output/``.

    RUN_DIR/
      .ruyi2-run         the marker: ruyi2 made (or was given empty) this folder, and may empty its stage folders
      recipe.yaml, manifest.json, report.json
      filter/    output/ removed/ quarantine/ logs/ stats.json
      dedup/     output/ removed/ work/ logs/ stats.json
      decontam/  index/ output/ removed/ logs/ stats.json contamination.json
      tokenize/  <source>[_heldout]_text_document.{bin,idx,docids} logs/ stats.json
      mix/       plan.json <stage>.blend.json <stage>.data_args.txt <stage>.valid_data_args.txt stats.json
      train/     metrics.jsonl checkpoint/ stats.json
      increments/NNN/  the files of one `ruyi2 add`, a run directory of their own (filter .. tokenize)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from pipeline.core.atomic import write_text
from pipeline.core.errors import StageError
from pipeline.core.run_lock import HOLDER, LOCK

RUN_MARKER = ".ruyi2-run"


class RunDirError(StageError):
    """The run directory is not one ruyi2 may write into, or a stage folder holds work a run would destroy."""


def is_run_dir(root: str) -> bool:
    return os.path.isfile(os.path.join(root, RUN_MARKER))


OWN_FILES = (LOCK, HOLDER)  # the run lock's files


def check_run_dir(root: str) -> None:
    """Refuses, naming it, a ``run_dir`` ruyi2 may not write into: a folder that holds anything but ruyi2's own
    files and is not marked as a run directory (``run_dir: ~`` or a project folder with a ``train/`` in it would
    otherwise lose that folder to the first stage). Reads only: called before anything is written."""
    if os.path.isdir(root):
        if is_run_dir(root):
            return
        entries = sorted(set(os.listdir(root)) - set(OWN_FILES))
        if entries:
            shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
            raise RunDirError(f"run_dir {root} is not empty and not a ruyi2 run directory (it holds {shown}); ruyi2 empties "
                              f"stage folders in its run directory, so it only writes into a new or empty folder or one it "
                              f"marked ({RUN_MARKER}): set run_dir to a new folder. (A run directory of an earlier ruyi2 "
                              f"version has no marker: `touch {os.path.join(root, RUN_MARKER)}` claims it.)")
    elif os.path.lexists(root):
        raise RunDirError(f"run_dir {root} exists and is not a folder")


def claim_run_dir(root: str) -> None:
    """Make ``root`` a run directory: a new or empty folder is marked as ruyi2's (``RUN_MARKER``); one already
    marked is taken as it is; any other is refused (``check_run_dir``)."""
    check_run_dir(root)
    if not is_run_dir(root):
        os.makedirs(root, exist_ok=True)
        write_text(os.path.join(root, RUN_MARKER), "ruyi2 run directory: ruyi2 may empty the stage folders here\n")


@dataclass(frozen=True)
class RunLayout:
    root: str

    def stage(self, stage: str) -> str:
        return os.path.join(self.root, stage)

    def output(self, stage: str) -> str:
        return os.path.join(self.root, stage, "output")

    def removed(self, stage: str) -> str:
        return os.path.join(self.root, stage, "removed")

    def quarantine(self, stage: str) -> str:
        return os.path.join(self.root, stage, "quarantine")

    def logs(self, stage: str, part: str | None = None) -> str:
        return os.path.join(self.root, stage, "logs", *([part] if part else []))

    def work(self, stage: str, part: str) -> str:
        return os.path.join(self.root, stage, "work", part)

    def stats(self, stage: str) -> str:
        return os.path.join(self.root, stage, "stats.json")

    def token_prefix(self, source: str, heldout: bool = False) -> str:
        return os.path.join(self.root, "tokenize", f"{source}{'_heldout' if heldout else ''}_text_document")

    def kept_work(self, stage: str, keeps: dict[str, str]) -> list[str]:
        """``"PATH (what)"`` for each sub-folder of ``stage`` named in ``keeps`` that holds something: the work
        that emptying the stage's folder would delete."""
        return [f"{path} ({what})" for sub, what in keeps.items()
                if os.path.isdir(path := os.path.join(self.stage(stage), sub)) and os.listdir(path)]

    def fresh_stage(self, stage: str, resume: bool = False) -> str:
        """Empty a stage folder before it runs (a stale shard would be read as output); keep it to resume. Only
        inside a marked run directory (``claim_run_dir``): nothing the run did not create is deleted."""
        path = self.stage(stage)
        if os.path.isdir(path) and not resume:
            if not is_run_dir(self.root):
                raise RunDirError(f"{path}: not emptied: {self.root} is not a ruyi2 run directory (no {RUN_MARKER})")
            shutil.rmtree(path)
        os.makedirs(path, exist_ok=True)
        return path
