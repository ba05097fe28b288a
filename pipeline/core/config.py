"""The recipe sections every stage reads: sources, executor, tokenizer, and the strict base they share.

Each stage package owns the schema of its own section (``filters/config.py``, ``dedup/config.py``, ...);
``pipeline/recipe.py`` composes them. Every model forbids unknown keys, so a typo anywhere in a recipe
fails at load time with the key named.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from pipeline.core.assets import QWEN3_TOKENIZER
from pipeline.core.paths import match_files

Domain = Literal["web", "code", "math", "paper", "book", "docs", "synthetic", "encyclopedia", "forum", "other"]
DOMAINS: tuple[str, ...] = get_args(Domain)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    """A config section: unknown keys and wrong types are errors, also when a field is assigned later."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


FORMAT_GLOBS = {"jsonl": "*.jsonl", "jsonl.gz": "*.jsonl.gz", "parquet": "*.parquet", "text": "*"}


class SourceConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="unique name; becomes the token prefix")
    paths: list[str] = Field(min_length=1, description="files, folders or globs (relative to the recipe file)")
    format: Literal["jsonl", "jsonl.gz", "parquet", "text"]
    text_field: str = "text"
    id_field: str | None = "id"
    domain: Domain
    language: str = Field("en", description="expected language (fastText label), or a programming language for code")
    # glob used inside folders; for the `text` format every matching file is one document
    file_glob: str | None = None
    metadata_fields: list[str] = Field(
        default_factory=list,
        description="input fields later stages read by name (e.g. a score computed upstream, for mixture buckets)",
    )

    def default_glob(self) -> str:
        return self.file_glob or FORMAT_GLOBS[self.format]

    def files(self) -> list[str]:
        """Every input file of the source, sorted, so shards are assigned the same way on every run."""
        return match_files(self.paths, (self.default_glob(),), require=False)


class RayConfig(Strict):
    address: str | None = Field(None, description="cluster address (e.g. 'auto' or 'ray://host:10001'); none starts a local one")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a locally started cluster")
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: float = Field(1.0, gt=0)
    max_retries: int = Field(3, ge=0, description="resubmissions of a rank whose worker or node was lost, or that ran past its limit")
    task_time_limit_s: float | None = Field(None, gt=0, description="a rank running longer is cancelled and resubmitted")


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
