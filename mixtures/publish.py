"""The mix stage's handoff to object storage (``mixture.publish``): every token prefix a blend names (``.bin``
then ``.idx``), the blends rewritten to name the published prefixes, then the manifest, last.

On the store, under ``url``:

    .ruyi2-publish                      the claim: which run directory publishes here
    tokenize/<unit>_text_document.{bin,idx}   (increments/NNN/tokenize/... for `ruyi2 add` layers)
    mix/<stage>.data_args.txt, mix/<stage>.valid_data_args.txt   blends naming s3:// prefixes
    PUBLISHED.json                      objects with size and SHA-256, and the blends; written last

The same blends are written next to the local ones (``mix/<stage>.published.data_args.txt``) for a Megatron-LM
launch (``--data-args-path`` reads a local file) and for ``train.data_from: published``.
"""

from __future__ import annotations

import os
import time

from mixtures.plan import blend_entries
from pipeline.core.atomic import write_text
from pipeline.core.paths import inside
from pipeline.core.publish import MANIFEST, Publisher

PUBLISHED_SUFFIX = ".published"
PUBLISH_ACTIVITY = "publish.json"  # uploads, skips, retries and seconds of the last publish


def _relative(prefix: str, root: str) -> str:
    real, base = os.path.realpath(prefix), os.path.realpath(root)
    if not inside(real, base):
        raise ValueError(f"mixture.publish: {prefix} lies outside the run directory {root}; only this run's token files "
                         "are published")
    return os.path.relpath(real, base)


def _blend(rows: list[dict], names: dict[str, str]) -> str:
    return " ".join(f"{w!r} {names[p]}" for w, p in blend_entries(rows))


def publish_handoff(plan: dict, root: str, folder: str, target, publisher: Publisher | None = None) -> tuple[dict, dict]:
    """Upload what the plan's blends name and write the published blends. Returns the mix stats' ``published``
    (the same for the same plan) and this publish's activity (uploads, skips, retries, seconds), which differs
    between a first and a resumed publish and so is kept out of stats.json (``mix/publish.json``)."""
    started = time.monotonic()
    pub = publisher or Publisher(target.url, target.storage.model_dump(), owner=os.path.realpath(root))
    prefixes = sorted({p for st in plan["stages"] for rows in (st["prefixes"], st["valid"]) for _, p in blend_entries(rows)})
    keys = {p: _relative(p, root) for p in prefixes}
    names = {p: f"{pub.url}/{key}" for p, key in keys.items()}
    pub.claim()
    objects = {}
    for prefix, key in keys.items():
        for ext in (".bin", ".idx"):  # the index after the data it indexes
            objects[key + ext] = pub.upload(prefix + ext, key + ext)
    blends, data_args = {}, {}
    for st in plan["stages"]:
        local = {}
        for split, rows, suffix in (("train", st["prefixes"], "data_args.txt"), ("valid", st["valid"], "valid_data_args.txt")):
            if not rows:
                local[split] = None
                continue
            text = _blend(rows, names) + "\n"
            local[split] = os.path.join(folder, f"{st['name']}{PUBLISHED_SUFFIX}.{suffix}")
            write_text(local[split], text)
            rel = f"mix/{st['name']}.{suffix}"
            objects[rel] = pub.upload(local[split], rel)
            blends.setdefault(st["name"], {})[split] = f"{pub.url}/{rel}"
        data_args[st["name"]] = local
    pub.write_manifest({"run_dir": pub.owner, "objects": objects, "blends": blends})
    pub.stats.seconds = round(time.monotonic() - started, 3)
    published = {"url": pub.url, "manifest": f"{pub.url}/{MANIFEST}", "data_args": data_args, "prefixes": names,
                 "objects": len(objects), "bytes": sum(o["size"] for o in objects.values())}
    return published, pub.stats.as_dict()
