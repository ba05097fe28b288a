"""The Parquet files of one split of a Hugging Face dataset folder (a clone or snapshot of a dataset repository),
found the way the hub finds them: the dataset card's ``configs`` (``README.md`` YAML header: ``config_name`` and
``data_files``, a pattern, a list of patterns, or a list of ``{split, path}``), else the hub's conventions
(``data/<split>-*.parquet``, ``<split>/``, the Parquet converter's ``<config>/<split>/``).

Written here because the ``datasets`` library resolves the same rules only inside its own loader (which would
download, cache and convert the data); the pipeline reads the files itself, streamed like any Parquet source.
"""

from __future__ import annotations

import glob
import os

import yaml

CONVENTIONS = ("data/{split}-*.parquet", "data/{split}/*.parquet", "data/{split}.parquet", "{split}-*.parquet",
               "{split}/*.parquet", "{config}/{split}-*.parquet", "{config}/{split}/*.parquet")


class DatasetFolderError(ValueError):
    """A dataset folder whose card or files do not give the asked split; the message names the folder."""


def dataset_card(folder: str) -> dict:
    """The YAML header of ``README.md`` (empty without one)."""
    path = os.path.join(folder, "README.md")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read(1 << 20)
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


def _matches(folder: str, patterns: list[str]) -> list[str]:
    return sorted({f for p in patterns for f in glob.glob(os.path.join(folder, p), recursive=True) if os.path.isfile(f)})


def dataset_files(folder: str, config: str = "default", split: str = "train") -> list[str]:
    """The sorted Parquet files of ``split`` of ``config``; raises naming the folder when there are none."""
    if not os.path.isdir(folder):
        raise DatasetFolderError(f"{folder}: not a folder (format hf_parquet reads a Hugging Face dataset folder)")
    configs = dataset_card(folder).get("configs")
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
        patterns = next(([p] for p in conventions if _matches(folder, [p])), conventions)
    files = _matches(folder, patterns)
    other = [f for f in files if not f.endswith(".parquet")]
    if other:
        raise DatasetFolderError(f"{folder}: split {split!r} of config {config!r} includes {other[0]}, which is not Parquet")
    if not files:
        raise DatasetFolderError(f"{folder}: no Parquet files for split {split!r} of config {config!r} "
                                 f"(looked for {', '.join(patterns)})")
    return files
