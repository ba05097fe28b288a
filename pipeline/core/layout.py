"""The run directory: one folder per stage, each stage reading only the previous stage's ``output/``.

    RUN_DIR/
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

    def fresh_stage(self, stage: str, resume: bool = False) -> str:
        """Empty a stage folder before it runs (a stale shard would be read as output); keep it to resume."""
        path = self.stage(stage)
        if os.path.isdir(path) and not resume:
            shutil.rmtree(path)
        os.makedirs(path, exist_ok=True)
        return path
