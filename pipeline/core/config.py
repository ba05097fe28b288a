"""The recipe sections every stage reads: sources, executor, tokenizer, and the strict base they share.

Each stage package owns the schema of its own section (``filters/config.py``, ``dedup/config.py``, ...);
``pipeline/recipe.py`` composes them. Every model forbids unknown keys, so a typo anywhere in a recipe
fails at load time with the key named.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.core.assets import QWEN3_TOKENIZER
from pipeline.core.paths import Listing, list_files
from pipeline.core.records import MAX_RECORD_BYTES, MAX_ROW_GROUP_BYTES

Domain = Literal["web", "code", "math", "paper", "book", "docs", "synthetic", "encyclopedia", "forum", "other"]
DOMAINS: tuple[str, ...] = get_args(Domain)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    """A config section: unknown keys and wrong types are errors, also when a field is assigned later."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


FORMAT_GLOBS = {"jsonl": "*.jsonl", "jsonl.gz": "*.jsonl.gz", "jsonl.zst": "*.jsonl.zst", "jsonl.bz2": "*.jsonl.bz2",
                "jsonl.xz": "*.jsonl.xz", "parquet": "*.parquet", "hf_parquet": "*.parquet", "warc": "*.warc.gz",
                "wet": "*.wet.gz", "text": "*"}
# formats read as JSON Lines (decompressed by each file's suffix: pipeline/core/records.py)
JSONL_FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "jsonl.bz2", "jsonl.xz")
Format = Literal["jsonl", "jsonl.gz", "jsonl.zst", "jsonl.bz2", "jsonl.xz", "parquet", "hf_parquet", "warc", "wet", "text"]


class ObjectStorage(Strict):
    """How a source's URLs are reached (``pipeline/core/storage.py``). No secret belongs here: credentials come
    from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), a shared profile or an instance role."""

    endpoint_url: str | None = Field(None, description="an S3-compatible store's endpoint (MinIO, SeaweedFS, Ceph); "
                                                       "default AWS")
    region: str | None = None
    profile: str | None = Field(None, description="a profile of ~/.aws/credentials")
    anon: bool = Field(False, description="unsigned requests, for public buckets")
    max_attempts: int = Field(10, ge=1, le=50, description="tries per request (botocore's adaptive retries: backoff on "
                                                          "throttling and transient errors)")


class SourceConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="unique name; becomes the token prefix")
    paths: list[str] = Field(default_factory=list, description="files, folders, globs (relative to the recipe file) or URLs")
    paths_file: str | None = Field(None, description="a text file naming one input file or object per line (# comments): "
                                                     "inputs too many to list, listed once by whoever made the file")
    format: Format = Field(description="jsonl (.zst/.gz/.bz2/.xz decompressed by suffix; the jsonl.* formats only "
                                       "change the folder glob), parquet, hf_parquet (a Hugging Face dataset folder: "
                                       "hf_config, split), warc (HTML responses, extracted by filter.extract), wet, text")
    text_field: str = Field("text", description="the record's text field (warc and wet: the page)")
    id_field: str | None = Field("id", description="the record's id field (warc and wet: the WARC record id)")
    hf_config: str = Field("default", description="hf_parquet: the dataset card's config to read")
    split: str = Field("train", description="hf_parquet: the split to read")
    domain: Domain
    language: str = Field("en", description="expected language (fastText label), or a programming language for code")
    # glob used inside folders; for the `text` format every matching file is one document
    file_glob: str | None = None
    metadata_fields: list[str] = Field(
        default_factory=list,
        description="input fields later stages read by name (e.g. a score computed upstream, for mixture buckets)",
    )
    storage: ObjectStorage | None = Field(None, description="for paths that are URLs (s3://bucket/prefix/*.jsonl.zst): "
                                                          "endpoint, region, profile")
    follow_symlinks: bool = Field(
        False, description="read files and folders that symbolic links inside the source's folders point to outside "
                           "them (off: such links are skipped and counted)")

    def default_glob(self) -> str:
        return self.file_glob or FORMAT_GLOBS[self.format]

    @model_validator(mode="after")
    def _some_paths(self):
        if not self.paths and not self.paths_file:
            raise ValueError("give paths or paths_file")
        return self

    def all_paths(self) -> list[str]:
        """``paths`` and, after them, the lines of ``paths_file``."""
        if not self.paths_file:
            return list(self.paths)
        from pipeline.core.storage import open_input

        with open_input(self.paths_file, self.storage.model_dump() if self.storage else None) as f:
            lines = [line.strip() for line in f.read().decode("utf-8").splitlines()]
        return list(self.paths) + [line for line in lines if line and not line.startswith("#")]

    def listing(self) -> Listing:
        """The source's input files and the links skipped on the way (``pipeline/core/paths.py``); a Hugging
        Face dataset folder gives its split's files (``pipeline/core/hf_dataset.py``)."""
        paths = self.all_paths()
        if self.format == "hf_parquet":
            from pipeline.core.hf_dataset import dataset_files

            options = self.storage.model_dump() if self.storage else None
            paths = [f for folder in self.paths for f in dataset_files(folder, self.hf_config, self.split, options)]
        from pipeline.core.storage import is_url, list_url

        urls = [p for p in paths if is_url(p)]
        listing = list_files([p for p in paths if not is_url(p)], (self.default_glob(),), require=False,
                             follow_symlinks=self.follow_symlinks)
        options = self.storage.model_dump() if self.storage else None
        for url in urls:
            listing.remote.update(list_url(url, self.default_glob(), options))
        listing.files = sorted(set(listing.files) | set(listing.remote))
        return listing

    def files(self) -> list[str]:
        """Every input file of the source, sorted, so shards are assigned the same way on every run."""
        return self.listing().files


class ReadLimits(Strict):
    """What one input record may cost before it is decoded or kept (``pipeline/core/records.py``,
    ``pipeline/core/sources.py``); a record over a bound is quarantined, or its field dropped, with a named reason."""

    max_record_bytes: int = Field(MAX_RECORD_BYTES, ge=1024, description="a longer JSONL line, text file or Parquet "
                                  "text is quarantined as oversized_record after reading at most this much of it")
    max_row_group_bytes: int = Field(MAX_ROW_GROUP_BYTES, ge=1 << 20, description="a Parquet row group larger than "
                                     "this (uncompressed, from the file's metadata) is not read: oversized_row_group")
    max_field_bytes: int = Field(1 << 20, ge=64, description="an input field (other than the text) larger than this "
                                 "as JSON is not kept in the metadata; it is named in metadata.dropped_fields")
    # polars' JSON path reader (which the accounting uses on metadata) gives up past 127 levels of nesting
    max_field_depth: int = Field(64, ge=1, le=100, description="an input field nested deeper is dropped the same way")
    max_id_chars: int = Field(4096, ge=16, description="a longer (or non-scalar) id is replaced by the record's "
                              "file:line id, the original named in metadata.dropped_fields")


class RayConfig(Strict):
    address: str | None = Field(None, description="cluster address (e.g. 'auto' or 'ray://host:10001'); none starts a local one")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a locally started cluster")
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: float | None = Field(None, gt=0, description="Ray memory per CPU of every task; unset: each pool "
                                         "asks for what its tasks were measured to need (pipeline/core/task_peaks.json)")
    task_memory_gb: dict[str, float] = Field({}, description="Ray memory per task of a stage or pool "
                                             "(e.g. {filter: 3.5, dedup/minhash_signatures: 0.6}); wins over the others")
    max_retries: int = Field(3, ge=0, description="resubmissions of a rank whose worker or node was lost, or that ran past its limit")
    task_time_limit_s: float | None = Field(None, gt=0, description="a rank running longer is cancelled and resubmitted")

    @model_validator(mode="after")
    def _known_pools(self) -> "RayConfig":
        from pipeline.core.task_memory_requests import known_pools

        known = known_pools()
        for key, gb in self.task_memory_gb.items():
            if key not in known:
                raise ValueError(f"task_memory_gb: no stage or pool is called {key!r} (known: {', '.join(sorted(known))})")
            if not gb > 0:
                raise ValueError(f"task_memory_gb.{key}: must be more than 0 (got {gb})")
        return self


class ExecutorConfig(Strict):
    kind: Literal["local", "ray"] = "local"
    tasks: int = Field(2, ge=1, description="shards per stage; fixed per run so outputs are reproducible")
    workers: int = Field(2, ge=1, description="tasks run at the same time")
    progress_interval_s: float = Field(30.0, gt=0, description="seconds between a running stage's progress lines "
                                                               "(tasks done, documents/s, time left)")
    ray: RayConfig = RayConfig()


class TokenizerConfig(Strict):
    """The tokenizer every stage counts with (filter's n_tokens, cut re-counts) and tokenize writes with."""

    path: str = Field(
        QWEN3_TOKENIZER,
        description="a Hugging Face tokenizer.json, or package:<pkg>/<file> for one shipped inside a package",
    )
    eos_token: str = "<|endoftext|>"
    batch_size: int = Field(256, ge=1)
    heldout_fraction: float = Field(
        0.01, ge=0, lt=1, description="documents (chosen by a hash of their id) written to a held-out prefix per source"
    )
