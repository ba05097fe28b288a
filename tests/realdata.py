"""Real corpora for tests: skipped with the fetch command named when absent, unless CI requires them."""

from __future__ import annotations

import os

import pytest

from tests.corpora import CorpusMissing


def need(loader, *args, **kwargs):
    try:
        return loader(*args, **kwargs)
    except CorpusMissing as e:
        if os.environ.get("RUYI2_REQUIRE_TEST_DATA"):
            raise
        pytest.skip(str(e))
