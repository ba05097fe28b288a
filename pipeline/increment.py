"""``ruyi2 add RECIPE SOURCE=PATH ...``: new files added to a finished run, without rerunning it.

The new files become an increment, ``RUN_DIR/increments/NNN/``, a run directory of their own that goes
through filter, dedup, decontam and tokenize with the recipe's settings:
- filter: as usual; the files' input positions come after every earlier layer's, and their document ids
  are named as a run over all of the source's files would name them;
- dedup: the new documents' exact hashes and MinHash band keys join the stored ones of every earlier layer
  (linked, not copied); the earlier layers' documents come first in every keeper order, so only new
  documents are removed, as duplicates of what is already kept or of each other;
- decontam: the same index, its corpus-common n-grams counted over the earlier layers and the new documents;
- tokenize: new token files under the increment.
Then the base run's mix stage is planned again over every layer: a unit's weight is split over its
layers' token files by their tokens (``RUN_DIR/mix``), and training reads the updated blends.

The decisions on the new documents equal those of a full rerun in which the added files come after the
earlier ones and no new document outranks an already kept copy (a keeper order that starts with a quality
score or a source priority can prefer the new copy in a full rerun; an increment never removes what
earlier layers kept).
"""

from __future__ import annotations

import json
import os

from pipeline.core.atomic import write_json
from pipeline.core.errors import StageError
from pipeline.core.layers import INCREMENT_FILE, INCREMENTS, LAYERS, Layers, increment_folders
from pipeline.core.layout import RunLayout, claim_run_dir
from pipeline.core.run_lock import run_lock
from pipeline.core.sources import source_root
from pipeline.core.storage import is_url
from pipeline.recipe import Recipe, RecipeError
from pipeline.runner import run_stages

DATA_STAGES = ("filter", "dedup", "decontam", "tokenize")


class IncrementError(StageError):
    pass


def parse_added(items: list[str], recipe: Recipe) -> dict[str, list[str]]:
    """``SOURCE=PATH`` arguments -> {source: its new files}, checked before any work: the source is one of
    the recipe's and the path matches files of the source's format."""
    names = {s.name: s for s in recipe.sources}
    added: dict[str, list[str]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise RecipeError(f"ruyi2 add: {item!r} is not SOURCE=PATH")
        if name not in names:
            raise RecipeError(f"ruyi2 add: {item!r}: no source {name!r} in the recipe (sources: {', '.join(names)})")
        where = path if is_url(path) else os.path.abspath(path)  # a URL is listed with the source's storage options
        files = names[name].model_copy(update={"paths": [where], "paths_file": None}).files()
        if not files:
            raise RecipeError(f"ruyi2 add: {item!r}: no {names[name].format} file matches {where}")
        added.setdefault(name, [])
        added[name] += [f for f in files if f not in added[name]]
    return added


def _filter_files(layer: str) -> dict[str, list[str]]:
    """The input files a layer's filter stage read, per source (recorded in its signal manifest)."""
    with open(os.path.join(layer, "filter", "attributes", "manifest.json")) as f:
        return json.load(f)["files"]


def _dedup_shards(layer: str) -> tuple[int, int]:
    """The document shards a layer's dedup intermediates are numbered with."""
    with open(RunLayout(layer).stats("dedup")) as f:
        stats = json.load(f)
    if "shards" in stats:
        return tuple(stats["shards"])
    # a run from before the shards were recorded: one keeper-attribute file per shard
    return 0, len(os.listdir(RunLayout(layer).work("dedup", os.path.join("minhash", "attrs"))))


def prepare_increment(recipe: Recipe, added: dict[str, list[str]], resume: bool) -> tuple[Recipe, Layers]:
    """The increment's folder, recipe and view of the earlier layers; refuses an unfinished base run, a file
    some layer already read, and an unfinished increment unless resuming it."""
    base = RunLayout(recipe.run_dir)
    missing = [s for s in DATA_STAGES if not os.path.exists(base.stats(s))]
    if missing:
        raise IncrementError(f"{base.root}: the run has not finished {', '.join(missing)}; run `ruyi2 run RECIPE --to tokenize` "
                             "first, then add files to it")
    done, unfinished = increment_folders(base.root), increment_folders(base.root, finished=False)
    earlier = [base.root] + done
    if unfinished and not resume:
        raise IncrementError(f"{unfinished[0]}: an earlier `ruyi2 add` did not finish; rerun it with --resume (same files), "
                             "or delete that folder")
    if resume and unfinished:
        folder = unfinished[0]
        with open(os.path.join(folder, INCREMENT_FILE)) as f:
            record = json.load(f)
        if record["added"] != added:
            raise IncrementError(f"{folder}: --resume with other files than the interrupted add ({record['added']})")
    else:
        folder = os.path.join(base.root, INCREMENTS, f"{len(done) + len(unfinished) + 1:03d}")
        record = None
    read = [_filter_files(layer) for layer in earlier]
    seen = {f for layer in read for files in layer.values() for f in files}
    again = sorted(f for files in added.values() for f in files if f in seen)
    if again:
        raise IncrementError(f"ruyi2 add: {again[0]} was already read by this run ({len(again)} file(s) in all); only new files can be added")
    file_offset = sum(len(files) for layer in read for files in layer.values())
    shard_offset = max(_dedup_shards(layer)[1] for layer in earlier)
    for src, files in added.items():  # ids are names relative to one root: a source lives on disk or in a store
        every = sorted({f for layer in read for f in layer.get(src, [])} | set(files))
        if len({is_url(f) for f in every}) > 1:
            raise IncrementError(f"ruyi2 add: source {src!r} would mix local files and objects ({every[0]}, {every[-1]}): "
                                 "add files where the run read the source's others")
    roots = {src: source_root(sorted({f for layer in read for f in layer.get(src, [])} | set(files))) for src, files in added.items()}
    if record is None:
        record = {"base": base.root, "added": added, "files": [file_offset, file_offset + sum(map(len, added.values())) ],
                  "shards": [shard_offset, shard_offset + recipe.executor.tasks]}
        claim_run_dir(folder)  # an increment is a run directory of its own
        write_json(os.path.join(folder, INCREMENT_FILE), record, indent=1)
    sources = [s.model_copy(update={"paths": added[s.name], "paths_file": None}) for s in recipe.sources if s.name in added]
    derived = recipe.model_copy(update={"run_dir": folder, "sources": sources})
    return derived, Layers(tuple(earlier), shard_offset, file_offset, roots)


def add_files(recipe: Recipe, added: dict[str, list[str]], resume: bool = False, quiet: bool = False) -> dict:
    """Run the data stages over the added files as a new increment, then plan the base run's mixture again
    over every layer. Returns the increment's stage results and the mix stage's."""
    with run_lock(recipe.run_dir):  # the base run is read, and its mixture planned again
        derived, layers = prepare_increment(recipe, added, resume)
        results = run_stages(derived, list(DATA_STAGES), resume=resume, quiet=quiet, options={LAYERS: layers})
        if recipe.mixture is not None:
            results |= run_stages(recipe, ["mix"], quiet=quiet)
    return {"increment": derived.run_dir, "results": results}
