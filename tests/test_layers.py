"""The shape of the code: imports flow one way, from the top (pipeline's composition) through the stage
packages to the ground floor (pipeline/core), and no module grows past 400 lines.

Read from the source with ``ast``, so an import hidden inside a function counts too.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE_PACKAGES = ("filters", "dedup", "decontam", "mixtures", "train_entry")
PACKAGES = STAGE_PACKAGES + ("pipeline",)
MAX_LINES = 400


def _modules() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    out[os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")] = path
    return out


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES}


def layer(module: str) -> str:
    """ground (pipeline.core), a stage package, or top (the rest of pipeline)."""
    if module == "pipeline.core" or module.startswith("pipeline.core."):
        return "ground"
    top = module.split(".")[0]
    return top if top in STAGE_PACKAGES else "top"


def forbidden(importer: str, imported: str) -> bool:
    a, b = layer(importer), layer(imported)
    if a == "ground":
        return b != "ground"  # the ground floor imports no stage package and nothing above it
    if a in STAGE_PACKAGES:
        return b not in ("ground", a)  # a stage package imports the ground floor and itself only
    return False  # the top composes everything


def test_imports_flow_one_way():
    bad = sorted((m, i) for m, path in _modules().items() for i in _imports(path) if forbidden(m, i))
    assert not bad, "lower packages import higher or sibling ones:\n" + "\n".join(f"  {m} -> {i}" for m, i in bad)


def test_the_layer_rule_catches_an_upward_import():
    assert forbidden("pipeline.core.sources", "pipeline.recipe")
    assert forbidden("dedup.fuzzy", "pipeline.runner")
    assert forbidden("dedup.substrings", "mixtures.megatron_writer")
    assert not forbidden("dedup.fuzzy", "pipeline.core.text") and not forbidden("pipeline.cli", "dedup.stage")


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_over_400_lines(module):
    with open(_modules()[module], encoding="utf-8") as f:
        assert sum(1 for _ in f) <= MAX_LINES


def test_every_stage_package_has_its_stage_and_schema():
    from pipeline.core.stage import Stage
    from pipeline.registry import STAGES

    for pkg in STAGE_PACKAGES:
        assert os.path.exists(os.path.join(ROOT, pkg, "stage.py")) and os.path.exists(os.path.join(ROOT, pkg, "config.py")), pkg
    assert [s.name for s in STAGES] == ["filter", "dedup", "decontam", "tokenize", "mix", "train"]
    assert all(isinstance(s, Stage) and type(s).__module__.split(".")[0] in STAGE_PACKAGES for s in STAGES)
