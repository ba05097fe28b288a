"""Publishing local files to object storage (``s3://bucket/prefix``), correct under kills and throttling.

An S3 object appears under its key only when its PUT, or its multipart upload's completion, succeeds: a task
killed mid-upload leaves no object there (at most an incomplete multipart upload, which a failed upload aborts
and a bucket lifecycle rule expires), so the final key is the temporary key's publish step. What is left to get
right, and is done here:

- **Whose prefix**: the first publish writes a claim (``.ruyi2-publish``, naming the run directory) before any
  upload; a prefix that holds objects without our claim, or another run's claim, is refused, never overwritten.
- **What is complete**: each object carries its SHA-256 in its metadata; the manifest (``PUBLISHED.json``: every
  object with its size and digest) is written last, so a reader that finds the manifest finds every object it
  names. A resumed publish skips an object already there with the same size and digest, and uploads the rest.
- **Throttling and outages**: botocore retries each request (adaptive mode, ``max_attempts``); an object whose
  upload still fails is tried again after a backoff, up to ``attempts`` times, and every such retry is counted in
  the returned stats. The store's failures are named with the URL (``storage.explain``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

from pipeline.core.storage import StorageInputError, explain, filesystem, is_transient

CLAIM = ".ruyi2-publish"
MANIFEST = "PUBLISHED.json"
HASH_BLOCK = 8 << 20
# parts of a multipart upload in flight at once (s3fs reads each part, >= 50 MiB, into memory; it sizes the parts
# so that no object needs more than S3's 10,000): one stream is ~100 MB/s, and a run publishes terabytes
PUT_CONCURRENCY = 4


class PublishError(StorageInputError):
    """A publish that may not or could not complete; the message names the URL."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class PublishStats:
    objects: int = 0
    uploaded: int = 0
    skipped: int = 0  # already there with the same size and digest (a resumed publish)
    bytes_uploaded: int = 0
    retries: int = 0  # object uploads tried again after botocore's own attempts failed
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("objects", "uploaded", "skipped", "bytes_uploaded", "retries", "seconds")}


class Publisher:
    """Uploads files under ``url`` (a prefix) with the store's ``options`` (``ObjectStorage`` as a dict)."""

    def __init__(self, url: str, options: dict | None, owner: str, attempts: int = 6, backoff_s: float = 1.0):
        self.url = url.rstrip("/")
        self.fs = filesystem(self.url, options)
        self.owner = owner
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.stats = PublishStats()

    def key(self, relative: str) -> str:
        return f"{self.url}/{relative}"

    def _call(self, what: str, fn, *args, **kwargs):
        """``fn`` with bounded, counted retries on store failures (a throttled or briefly unreachable store)."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - store failures are retried, the rest named
                if not is_transient(e):
                    raise explain(what, e) from None
                if attempt == self.attempts:
                    raise PublishError(f"{explain(what, e)} (gave up after {attempt} tries)") from None
                self.stats.retries += 1
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 30.0))
                self.fs.invalidate_cache()
        raise AssertionError("unreachable")

    def check(self) -> bool:
        """Read-only, before any work: the bucket answers and the prefix is new or this run's. Returns whether the
        prefix is already claimed by this run; raises ``PublishError`` naming the URL otherwise."""
        bucket = self.url.split("://", 1)[1].split("/", 1)[0]
        if not self._call(self.url, self.fs.exists, f"{self.url.split('://', 1)[0]}://{bucket}"):
            raise PublishError(f"{self.url}: no such bucket {bucket!r} (create it, or check storage.endpoint_url)")
        claim_url = self.key(CLAIM)
        if self._call(claim_url, self.fs.exists, claim_url):
            found = json.loads(self._call(claim_url, self.fs.cat_file, claim_url))
            if found.get("run_dir") != self.owner:
                raise PublishError(f"{self.url}: published by another run ({found.get('run_dir')}), not {self.owner}: "
                                   "publish to a new prefix")
            return True
        present = self._call(self.url, self.fs.find, self.url) if self._call(self.url, self.fs.exists, self.url) else []
        self.fs.invalidate_cache()  # s3fs answers later exists() from this listing, which uploads make stale
        if present:
            raise PublishError(f"{self.url}: holds {len(present)} objects that no ruyi2 run published (no {CLAIM}): "
                               "publish to a new prefix; nothing there is overwritten")
        return False

    def claim(self) -> None:
        """Mark the prefix as this run's, or refuse one that holds what another run or a person put there."""
        if not self.check():
            claim_url = self.key(CLAIM)
            self._call(claim_url, self.fs.pipe_file, claim_url, json.dumps({"run_dir": self.owner}).encode())

    def upload(self, local: str, relative: str) -> dict:
        """One file to ``url/relative``: skipped when the object there has the same size and digest."""
        target = self.key(relative)
        size, digest = os.path.getsize(local), sha256_of(local)
        self.stats.objects += 1
        if self._same_object(target, size, digest):
            self.stats.skipped += 1
        else:
            self._call(target, self.fs.put_file, local, target, Metadata={"sha256": digest}, max_concurrency=PUT_CONCURRENCY)
            self.stats.uploaded += 1
            self.stats.bytes_uploaded += size
        return {"size": size, "sha256": digest}

    def _same_object(self, target: str, size: int, digest: str) -> bool:
        if not self._call(target, self.fs.exists, target):
            return False
        info = self._call(target, self.fs.info, target)
        return int(info.get("size") or -1) == size and self._call(target, self.fs.metadata, target).get("sha256") == digest

    def write_manifest(self, manifest: dict) -> None:
        """The completion marker, last: one PUT, so it is there whole or not at all."""
        target = self.key(MANIFEST)
        self._call(target, self.fs.pipe_file, target, json.dumps(manifest, indent=2, sort_keys=True).encode())
        self.fs.invalidate_cache()


def boto3_environment(options: dict) -> dict[str, str]:
    """The environment that points a plain ``boto3.client("s3")`` (megatron-core's reader) at the store of
    ``options``: endpoint, region, profile and adaptive retries; credentials stay where the user put them."""
    env = {"AWS_RETRY_MODE": "adaptive", "AWS_MAX_ATTEMPTS": str(options.get("max_attempts") or 10)}
    for key, name in (("endpoint_url", "AWS_ENDPOINT_URL_S3"), ("region", "AWS_DEFAULT_REGION"), ("profile", "AWS_PROFILE")):
        if options.get(key):
            env[name] = str(options[key])
    return env
