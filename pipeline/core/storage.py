"""Inputs on object storage: a source's paths may be URLs (``s3://bucket/prefix/*.jsonl.zst``) read through fsspec
(s3fs for S3 and S3-compatible stores), listed once with their sizes and ETags, opened as streams.

Credentials come from where the AWS SDK looks (environment, shared profile, instance role); the recipe gives
only the endpoint, region, profile name or anonymous access (``sources[].storage``), never a secret, so no recipe
copy, manifest or log can hold one. Retries are botocore's adaptive mode (backoff on throttling such as SlowDown
and on transient errors), ``max_attempts`` per request. A failure is named with its URL and a remedy, not a
botocore traceback (``StorageInputError``).
"""

from __future__ import annotations

import fnmatch
import posixpath
from typing import BinaryIO

from pipeline.core.errors import StageError

GLOB_CHARS = "*?["
READ_BLOCK_BYTES = 8 << 20  # ranged GETs of this size: few requests per object, bounded memory
_RETRIES = [0]  # requests botocore tried again in this process (each S3 call's ResponseMetadata.RetryAttempts)
_COUNTED: set[int] = set()  # the clients whose calls are counted (s3fs makes a new one after a fork)


class StorageInputError(StageError):
    """An input URL that cannot be listed or read; the message names the URL and what to do."""


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def protocol(url: str) -> str:
    return url.split("://", 1)[0]


def filesystem(url: str, options: dict | None):
    """The fsspec filesystem of ``url`` with the source's storage options (``ObjectStorage`` as a dict)."""
    import fsspec

    opts = dict(options or {})
    kwargs: dict = {}
    if protocol(url) in ("s3", "s3a"):
        kwargs = {"anon": bool(opts.get("anon")), "config_kwargs": {"retries": {"max_attempts": int(opts.get("max_attempts") or 10),
                                                                              "mode": "adaptive"}}}
        if opts.get("endpoint_url"):
            kwargs["endpoint_url"] = opts["endpoint_url"]
        if opts.get("region"):
            kwargs["client_kwargs"] = {"region_name": opts["region"]}
        if opts.get("profile"):
            kwargs["profile"] = opts["profile"]
    try:
        fs = fsspec.filesystem(protocol(url), **kwargs)
    except (ImportError, ValueError) as e:
        raise StorageInputError(f"{url}: no filesystem for {protocol(url)!r} ({e}); s3:// is supported (s3fs is installed "
                                "with the project), other stores need their fsspec package (gcsfs, adlfs)") from None
    if kwargs:
        _count_retries_of(fs)
    return fs


def _count_retries_of(fs) -> None:
    """Count the retries of every call ``fs``'s botocore client makes (``store_retries``): the adaptive mode
    retries throttled and failed requests by itself, and says how often in each response's metadata."""
    try:
        client = fs.connect()  # s3fs: its aiobotocore client (made at most once per process)
    except Exception:  # noqa: BLE001 - no client yet (no credentials, say): the first request names the failure
        return
    if id(client) not in _COUNTED:
        _COUNTED.add(id(client))
        client.meta.events.register("after-call.s3", _after_call)


def _after_call(parsed=None, **_kwargs) -> None:
    if isinstance(parsed, dict):
        _RETRIES[0] += int((parsed.get("ResponseMetadata") or {}).get("RetryAttempts") or 0)


def store_retries() -> int:
    """Requests to object storage retried in this process so far (throttling, a store restarting, dropped
    connections), each a backoff botocore waited out; a reader's stats report the difference over its work."""
    return _RETRIES[0]


def explain(url: str, exc: BaseException) -> StorageInputError:
    """A storage failure as a message that names the URL and the remedy."""
    if isinstance(exc, StorageInputError):
        return exc
    name = type(exc).__name__
    text = str(exc)
    if name in ("NoCredentialsError", "PartialCredentialsError") or "Unable to locate credentials" in text:
        why = ("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or storage.profile), "
               "or storage.anon: true for a public bucket")
    elif name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError") or "Could not connect" in text:
        why = "the endpoint cannot be reached: check storage.endpoint_url and the network"
    elif isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        why = "access denied: the credentials in use may not list or read it"
    elif isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text:
        why = "no such bucket or object"
    else:
        why = f"{name}: {text[:300]}"
    return StorageInputError(f"{url}: {why}")


# a throttled, overloaded or briefly unreachable store, as botocore, aiohttp or s3fs raise it: worth another try
_TRANSIENT_FAILURES = {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ClientConnectorError",
                       "ReadTimeoutError", "ServerDisconnectedError", "ClientOSError"}
_TRANSIENT_TEXT = ("SlowDown", "ServiceUnavailable", "503", "InternalError", "RequestTimeout", "Could not connect")
_STORE_FAILURES = _TRANSIENT_FAILURES | {"NoCredentialsError", "PartialCredentialsError"}


def is_transient(exc: BaseException) -> bool:
    """Whether a store failure may pass by itself (throttling, a restart, a dropped connection), unlike a missing
    credential or a denied request, which no retry mends."""
    for e in (exc, exc.__cause__, exc.__context__):
        if e is not None and (isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _TRANSIENT_FAILURES
                              or any(s in str(e) for s in _TRANSIENT_TEXT)):
            return True
    return False


def is_store_failure(exc: BaseException) -> bool:
    """Whether reading an object failed because of the store (credentials, network, permissions, an object gone
    since the listing), not because of what the object holds: the task must fail and be retried, not quarantine
    the input as unreadable (a node without credentials would otherwise quarantine the whole corpus)."""
    for e in (exc, exc.__cause__, exc.__context__):
        if e is not None and (isinstance(e, (StorageInputError, PermissionError, FileNotFoundError, ConnectionError,
                                             TimeoutError)) or type(e).__name__ in _STORE_FAILURES):
            return True
    return False


def list_url(pattern: str, default_glob: str, options: dict | None) -> dict[str, dict]:
    """URL -> {size, etag} of every object matching ``pattern``: a glob, one object, or a prefix (a "folder":
    its objects matching ``default_glob`` by name, at any depth). One listing request per 1,000 objects."""
    fs = filesystem(pattern, options)
    scheme = protocol(pattern) + "://"
    try:
        if any(c in pattern for c in GLOB_CHARS):
            found = fs.glob(pattern, detail=True)
        elif fs.isfile(pattern):
            found = {pattern: fs.info(pattern)}
        else:
            found = {k: v for k, v in fs.find(pattern, detail=True).items()
                     if fnmatch.fnmatch(posixpath.basename(k), default_glob)}
    except Exception as e:  # noqa: BLE001 - whatever the store answers is named with the URL
        raise explain(pattern, e) from None
    out = {}
    for key, info in found.items():
        if info.get("type", "file") != "file":
            continue
        url = key if key.startswith(scheme) else scheme + key
        out[url] = {"size": int(info.get("size") or 0), "etag": str(info.get("ETag") or info.get("etag") or "")}
    return dict(sorted(out.items()))


def open_input(path: str, options: dict | None = None) -> BinaryIO:
    """A local file, or an object read by ranged GETs of ``READ_BLOCK_BYTES``."""
    if not is_url(path):
        return open(path, "rb")
    fs = filesystem(path, options)
    try:
        return fs.open(path, "rb", block_size=READ_BLOCK_BYTES)
    except Exception as e:  # noqa: BLE001
        raise explain(path, e) from None


def relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` for URLs (posix paths under the bucket)."""
    return posixpath.relpath(path.split("://", 1)[1], root.split("://", 1)[1]) if root else posixpath.basename(path)


def common_root(urls: list[str]) -> str:
    """The common "folder" of URLs of one store."""
    if len(urls) == 1:
        return posixpath.dirname(urls[0])
    scheme = protocol(urls[0]) + "://"
    return scheme + posixpath.commonpath([u.split("://", 1)[1] for u in urls])
