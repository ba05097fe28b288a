"""Loading the Hugging Face tokenizer a run uses (a tokenizer.json file; nothing is downloaded)."""

from __future__ import annotations

from functools import lru_cache

from pipeline.assets import resolve_asset


@lru_cache(maxsize=4)
def load_tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(resolve_asset(path))


def token_id(path: str, token: str) -> int:
    tid = load_tokenizer(path).token_to_id(token)
    if tid is None:
        raise ValueError(f"tokenizer {path!r} has no token {token!r}")
    return tid


def vocab_size(path: str) -> int:
    return load_tokenizer(path).get_vocab_size(with_added_tokens=True)
