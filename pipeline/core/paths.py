"""The one place where paths, folders and globs become a sorted list of input files.

Inputs are read where they are. A folder (or the fixed part of a glob) is the root of what a path names:
folders under it are walked without following symbolic links out of it, so a code corpus holding
``x.txt -> /proc/self/environ`` does not ingest the worker's environment and ``loop -> .`` does not make the
listing explode. A link whose target stays inside the root is followed (once: a folder reached twice is a
loop); a link leaving it is skipped and counted, unless the caller allows it (``follow_symlinks``). Each
real file is listed once, by a name reached without links if it has one, else the first in sorted order
(hard links and links to a file listed anyway are the same file). Only regular files are listed: a FIFO or a device would block or never end.
Names starting with a dot are skipped in folders and by wildcards, as ``glob`` does.

``glob``'s own ``**`` is not used because it follows links into folders with no loop check; the walk here is
written by hand for that reason.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from dataclasses import dataclass, field
from typing import Iterable

GLOB_CHARS = "*?["
LINK_OUTSIDE = "link_outside_root"
LINK_LOOP = "link_loop"
LINK_BROKEN = "link_broken"
SAME_FILE = "same_file"
NOT_REGULAR = "not_a_regular_file"


@dataclass
class Listing:
    files: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path as seen -> why it was not listed
    remote: dict[str, dict] = field(default_factory=dict)  # object URL -> {size, etag}, from the one listing

    def skipped_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for why in self.skipped.values():
            out[why] = out.get(why, 0) + 1
        return dict(sorted(out.items()))


def inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies under it (both as given: resolve links first where they matter)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _static_root(pattern: str) -> tuple[str, list[str]]:
    """(the folder before the first component with a wildcard, the components from there on)."""
    parts = pattern.split(os.sep)
    i = next(i for i, p in enumerate(parts) if any(c in p for c in GLOB_CHARS))
    root = os.sep.join(parts[:i]) or (os.sep if pattern.startswith(os.sep) else "")  # "": the working folder
    return root, [p for p in parts[i:] if p]


def _match(parts: list[str], pat: list[str]) -> bool:
    """Component-wise glob match; ``**`` matches any number of folders (no name starting with a dot)."""
    if not pat:
        return not parts
    if pat[0] == "**":
        return _match(parts, pat[1:]) or (bool(parts) and not parts[0].startswith(".") and _match(parts[1:], pat))
    if not parts or (parts[0].startswith(".") and not pat[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], pat[0]) and _match(parts[1:], pat[1:])


class _Walk:
    """One listing: the roots' real paths, the folders already entered and the real files already listed."""

    def __init__(self, follow_symlinks: bool):
        self.follow = follow_symlinks
        self.out = Listing()
        # (device, inode) -> (reached through a link, the name it is listed under)
        self.files: dict[tuple[int, int], tuple[bool, str]] = {}

    def add_file(self, path: str, st: os.stat_result, linked: bool = False) -> None:
        """Lists a file under its preferred name: one reached without links, then the first in sorted order."""
        key, name = (st.st_dev, st.st_ino), (linked, path)
        first = self.files.get(key)
        if first is None or name < first:
            if first is not None and first[1] != path:
                self.out.skipped[first[1]] = SAME_FILE
            self.files[key] = name
        elif path != first[1]:
            self.out.skipped[path] = SAME_FILE

    def entries(self, folder: str, root_real: str, depth: int | None, seen: set[tuple[int, int]], rel: tuple[str, ...] = (),
                linked: bool = False):
        """(path, relative components, stat, reached through a link) of every regular file and folder under
        ``folder`` (folders before their contents), not entering links out of ``root_real`` nor a folder twice;
        ``depth`` bounds it."""
        try:
            with os.scandir(folder or ".") as it:
                names = sorted(e.name for e in it)
        except (PermissionError, NotADirectoryError, FileNotFoundError):
            return
        for name in names:
            if name.startswith("."):
                continue
            path, parts = os.path.join(folder, name) if folder else name, (*rel, name)
            is_link = os.path.islink(path)
            try:
                if is_link:
                    if not self.follow and not inside(os.path.realpath(path), root_real):
                        self.out.skipped[path] = LINK_OUTSIDE
                        continue
                st = os.stat(path)  # the target's, for a link
            except OSError as e:  # a dangling link, or one that loops onto itself
                self.out.skipped[path] = LINK_BROKEN if e.errno == errno.ENOENT else LINK_LOOP
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    self.out.skipped[path] = LINK_LOOP
                    continue
                yield path, parts, st, linked or is_link
                if depth is None or len(parts) < depth:
                    seen.add(key)
                    yield from self.entries(path, root_real, depth, seen, parts, linked or is_link)
                    seen.discard(key)
            elif stat.S_ISREG(st.st_mode):
                yield path, parts, st, linked or is_link
            else:
                self.out.skipped[path] = NOT_REGULAR

    def folder(self, folder: str, patterns: tuple[str, ...], linked: bool = False) -> int:
        """Lists the files under ``folder`` (``linked``: reached through a link) whose names match any of
        ``patterns``; returns how many matched."""
        real = os.path.realpath(folder)
        found = 0
        for path, parts, st, via_link in self.entries(folder, real, None, {_key(real)}, linked=linked):
            if stat.S_ISREG(st.st_mode) and any(fnmatch.fnmatch(parts[-1], p) for p in patterns):
                self.add_file(path, st, via_link)
                found += 1
        return found

    def glob(self, pattern: str, patterns: tuple[str, ...]) -> tuple[int, bool]:
        """Lists what ``pattern`` matches (a matching folder is searched for ``patterns``); returns (files found,
        whether anything matched at all)."""
        root, pat = _static_root(pattern)
        if not os.path.isdir(root or "."):
            return 0, False
        real = os.path.realpath(root or ".")
        depth = None if "**" in pat else len(pat)
        found, named = 0, False
        for path, parts, st, linked in self.entries(root, real, depth, {_key(real)}):
            if not _match(list(parts), pat):
                continue
            named = True
            if stat.S_ISDIR(st.st_mode):
                found += self.folder(path, patterns, linked)
            else:
                self.add_file(path, st, linked)
                found += 1
        return found, named


def _key(real: str) -> tuple[int, int]:
    st = os.stat(real)
    return st.st_dev, st.st_ino


def list_files(paths: Iterable[str], patterns: Iterable[str] = ("*",), require: bool = True, what: str = "input",
               follow_symlinks: bool = False) -> Listing:
    """Regular files named by ``paths``: a file as given (a link the user names is read), a folder searched
    recursively for names matching any of ``patterns``, or a glob (``**`` recursive) whose matches are files or
    folders (searched the same way). Sorted and each real file once, so a listing is the same on every run.
    With ``require``, a path that matches no file is an error naming it."""
    patterns = tuple(patterns)
    walk = _Walk(follow_symlinks)
    for p in paths:
        if any(ch in p for ch in GLOB_CHARS):
            found, named = walk.glob(p, patterns)
            is_folder = False
        elif os.path.isdir(p):
            found, named, is_folder = walk.folder(p, patterns), True, True
        elif os.path.isfile(p):
            walk.add_file(p, os.stat(p))
            found, named, is_folder = 1, True, False
        else:
            found, named, is_folder = 0, os.path.exists(p), False
        if require and not found:
            if is_folder:
                raise FileNotFoundError(f"{what}: {p!r}: no file matching {' or '.join(patterns)}")
            raise FileNotFoundError(f"{what}: {p!r}: {'no file matches it' if named or any(c in p for c in GLOB_CHARS) else 'no such file or folder'}")
    walk.out.files = sorted(name for _, name in walk.files.values())
    walk.out.skipped = dict(sorted(walk.out.skipped.items()))
    return walk.out


def match_files(paths: Iterable[str], patterns: Iterable[str] = ("*",), require: bool = True, what: str = "input",
                follow_symlinks: bool = False) -> list[str]:
    """The files of ``list_files``."""
    return list_files(paths, patterns, require, what, follow_symlinks).files
