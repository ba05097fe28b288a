"""A run grown by increments: the base run directory, then ``RUN_DIR/increments/NNN/``, each a run directory
of the files added by one ``ruyi2 add``. An increment's stages see the layers before it through ``Layers``:
where the earlier layers' stage folders are, which document shards (dedup tasks) and input files they used,
so the new documents get shard numbers and input positions after theirs.

A layer's own dedup intermediates are regular files; an increment links the earlier layers' into its work
folders (symlinks), so "the earlier layers' files" are the regular files of each earlier layer.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field

INCREMENTS = "increments"
INCREMENT_FILE = "increment.json"
LAYERS = "layers"  # the StageContext.options key


@dataclass(frozen=True)
class Layers:
    earlier: tuple[str, ...]  # run folders of the base run and the increments before this one, oldest first
    shard_offset: int  # document shards of the earlier layers together: this layer's shards start here
    file_offset: int  # input files of the earlier layers together: this layer's input positions start here
    roots: dict[str, str] = field(default_factory=dict)  # source -> the folder its document ids are relative to


def increment_folders(root: str, finished: bool = True) -> list[str]:
    """The increments of a run, in order: those that finished their data stages (tokenize wrote its stats),
    or with ``finished=False`` those that did not."""
    return [f for f in sorted(glob.glob(os.path.join(root, INCREMENTS, "[0-9][0-9][0-9]")))
            if os.path.exists(os.path.join(f, "tokenize", "stats.json")) == finished]


def read_increment(folder: str) -> dict:
    with open(os.path.join(folder, INCREMENT_FILE)) as f:
        return json.load(f)


def layer_files(folder: str, pattern: str) -> list[str]:
    """A layer's own files under ``folder`` matching ``pattern`` (its links to earlier layers left out)."""
    return sorted(p for p in glob.glob(os.path.join(folder, pattern)) if not os.path.islink(p) and os.path.exists(p))


def link_into(src: str, dst: str) -> None:
    """``dst`` -> ``src`` (an earlier layer's file or folder), replacing a link left by an interrupted run."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.islink(dst):
        os.remove(dst)
    os.symlink(os.path.abspath(src), dst)
