"""The one place where paths, folders and globs become a sorted list of input files."""

from __future__ import annotations

import glob
import os
from typing import Iterable

GLOB_CHARS = "*?["


def _in_folder(folder: str, patterns: tuple[str, ...]) -> set[str]:
    return {f for pat in patterns for f in glob.glob(os.path.join(folder, "**", pat), recursive=True)}


def match_files(paths: Iterable[str], patterns: Iterable[str] = ("*",), require: bool = True, what: str = "input") -> list[str]:
    """Regular files named by ``paths``: a file as given, a folder searched recursively for names matching
    any of ``patterns``, or a glob (``**`` recursive) whose matches are files or folders (searched the same
    way). Sorted and without duplicates, so a listing is the same on every run. With ``require``, a path
    that matches no file is an error naming it."""
    patterns = tuple(patterns)
    out: set[str] = set()
    for p in paths:
        named = glob.glob(p, recursive=True) if any(ch in p for ch in GLOB_CHARS) else [p] if os.path.exists(p) else []
        found: set[str] = set()
        for entry in named:
            found |= _in_folder(entry, patterns) if os.path.isdir(entry) else {entry}
        found = {f for f in found if os.path.isfile(f)}
        if require and not found:
            if any(os.path.isdir(e) for e in named):
                raise FileNotFoundError(f"{what}: {p!r}: no file matching {' or '.join(patterns)}")
            raise FileNotFoundError(f"{what}: {p!r}: {'no file matches it' if named or any(c in p for c in GLOB_CHARS) else 'no such file or folder'}")
        out |= found
    return sorted(out)
