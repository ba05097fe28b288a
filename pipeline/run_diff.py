"""Whether two runs of one recipe wrote the same bytes: every document, token and report file compared.

Used to check reproducibility (a rerun, another executor, a run killed and resumed) against a reference.
"""

from __future__ import annotations

import filecmp
import glob
import os
from dataclasses import dataclass, field

# what the data stages write; train/ is left out (a run's training is checked by its own tests)
OUTPUT_PATTERNS = ("*/output/*.parquet", "*/removed/*.parquet", "*/quarantine/*.parquet", "tokenize/*.bin",
                   "tokenize/*.idx", "tokenize/*.docids", "decontam/contamination.json", "*/stats.json")
# files that name the run directory's absolute path (blend prefixes), so differ between run directories
NAMES_RUN_DIR = ("mix/", "tokenize/stats")


@dataclass
class RunDiff:
    compared: int = 0
    differing: list[str] = field(default_factory=list)
    only_in_first: list[str] = field(default_factory=list)
    only_in_second: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.compared > 0 and not (self.differing or self.only_in_first or self.only_in_second)


def _files(root: str) -> set[str]:
    return {os.path.relpath(p, root) for pattern in OUTPUT_PATTERNS for p in glob.glob(os.path.join(root, pattern))
            if not os.path.relpath(p, root).startswith("train/")}


def diff_runs(first: str, second: str) -> RunDiff:
    a, b = _files(first), _files(second)
    diff = RunDiff(only_in_first=sorted(a - b), only_in_second=sorted(b - a))
    for rel in sorted(a & b):
        if rel.startswith(NAMES_RUN_DIR):
            continue
        diff.compared += 1
        if not filecmp.cmp(os.path.join(first, rel), os.path.join(second, rel), shallow=False):
            diff.differing.append(rel)
    return diff
