"""The Parquet files of one split of a Hugging Face dataset folder (a clone or snapshot of a dataset repository),
found the way the hub finds them: the dataset card's ``configs`` (``README.md`` YAML header: ``config_name`` and
``data_files``, a pattern, a list of patterns, or a list of ``{split, path}``), else the hub's conventions
(``data/<split>-*.parquet``, ``<split>/``, the Parquet converter's ``<config>/<split>/``).

Written here because the ``datasets`` library resolves the same rules only inside its own loader (which would
download, cache and convert the data); the pipeline reads the files itself, streamed like any Parquet source.
A folder may be a URL (``s3://bucket/datasets/fineweb-edu``): the same rules over the store's listing (fsspec).
"""

from __future__ import annotations

import glob
import os
import posixpath

import yaml

CONVENTIONS = ("data/{split}-*.parquet", "data/{split}/*.parquet", "data/{split}.parquet", "{split}-*.parquet",
               "{split}/*.parquet", "{config}/{split}-*.parquet", "{config}/{split}/*.parquet")


class DatasetFolderError(ValueError):
    """A dataset folder whose card or files do not give the asked split; the message names the folder."""


class _Folder:
    """A local folder, or a "folder" (prefix) on object storage through fsspec."""

    def __init__(self, folder: str, options: dict | None):
        from pipeline.core.storage import filesystem, is_url

        self.path = folder.rstrip("/") if is_url(folder) else folder
        self.fs = filesystem(folder, options) if is_url(folder) else None

    def join(self, name: str) -> str:
        return posixpath.join(self.path, name) if self.fs else os.path.join(self.path, name)

    def isdir(self) -> bool:
        return self._store(self.fs.isdir, self.path) if self.fs else os.path.isdir(self.path)

    def _store(self, fn, *args, **kwargs):
        """A store call whose failure is named with the folder's URL and the remedy (``storage.explain``)."""
        from pipeline.core.storage import explain

        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - whatever the store answers is named with the URL
            raise explain(self.path, e) from None

    def read_head(self, name: str, limit: int) -> str | None:
        path = self.join(name)
        if self.fs is None:
            if not os.path.exists(path):
                return None
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read(limit)
        if not self._store(self.fs.exists, path):
            return None
        return self._store(self.fs.cat_file, path, start=0, end=limit).decode("utf-8", errors="replace")

    def matches(self, patterns: list[str]) -> list[str]:
        if self.fs is None:
            return sorted({f for p in patterns for f in glob.glob(self.join(p), recursive=True) if os.path.isfile(f)})
        scheme = self.path.split("://", 1)[0] + "://"
        found = {k for p in patterns for k, info in self._store(self.fs.glob, self.join(p), detail=True).items()
                 if info.get("type") == "file"}
        return sorted(k if k.startswith(scheme) else scheme + k for k in found)


def dataset_card(folder: str, options: dict | None = None) -> dict:
    """The YAML header of ``README.md`` (empty without one)."""
    where = _Folder(folder, options)
    path = where.join("README.md")
    text = where.read_head("README.md", 1 << 20)
    if text is None:
        return {}
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        header = yaml.safe_load(text[3:end if end > 0 else None]) or {}
    except yaml.YAMLError as e:
        raise DatasetFolderError(f"{path}: the dataset card's YAML header does not parse ({e})") from None
    return header if isinstance(header, dict) else {}


def _patterns(data_files, split: str) -> list[str] | None:
    """A config's ``data_files`` for ``split`` (a bare pattern or list is the train split)."""
    if isinstance(data_files, str):
        return [data_files] if split == "train" else None
    if isinstance(data_files, list) and all(isinstance(p, str) for p in data_files):
        return list(data_files) if split == "train" else None
    if isinstance(data_files, list):
        for entry in data_files:
            if isinstance(entry, dict) and entry.get("split") == split:
                path = entry.get("path")
                return [path] if isinstance(path, str) else list(path or [])
    if isinstance(data_files, dict) and split in data_files:
        found = data_files[split]
        return [found] if isinstance(found, str) else list(found)
    return None


def dataset_files(folder: str, config: str = "default", split: str = "train", options: dict | None = None) -> list[str]:
    """The sorted Parquet files of ``split`` of ``config``; raises naming the folder when there are none.
    ``options``: the source's storage options, for a folder on object storage."""
    where = _Folder(folder, options)
    if not where.isdir():
        raise DatasetFolderError(f"{folder}: not a folder (format hf_parquet reads a Hugging Face dataset folder)")
    configs = dataset_card(folder, options).get("configs")
    if isinstance(configs, list) and configs:
        names = [c.get("config_name", "default") for c in configs if isinstance(c, dict)]
        chosen = next((c for c in configs if isinstance(c, dict) and c.get("config_name", "default") == config), None)
        if chosen is None:
            raise DatasetFolderError(f"{folder}/README.md: no config {config!r} (its configs: {names}); set hf_config")
        patterns = _patterns(chosen.get("data_files"), split)
        if not patterns:
            raise DatasetFolderError(f"{folder}/README.md: config {config!r} has no split {split!r}; set split")
    else:  # the first convention that matches, as the hub resolves them
        conventions = [p.format(split=split, config=config) for p in CONVENTIONS]
        patterns = next(([p] for p in conventions if where.matches([p])), conventions)
    files = where.matches(patterns)
    other = [f for f in files if not f.endswith(".parquet")]
    if other:
        raise DatasetFolderError(f"{folder}: split {split!r} of config {config!r} includes {other[0]}, which is not Parquet")
    if not files:
        raise DatasetFolderError(f"{folder}: no Parquet files for split {split!r} of config {config!r} "
                                 f"(looked for {', '.join(patterns)})")
    return files
