"""Open an HTML report in headless Chromium (Debian's package) as a person would: the rendered DOM, the
console output, and a screenshot kept in tests/artifacts/."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ARTIFACTS = os.path.join(os.path.dirname(__file__), "artifacts")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("RUYI2_REQUIRE_TEST_DATA"):
            pytest.fail("chromium is not installed (.ci/setup installs Debian's package)")
        pytest.skip("chromium is not installed")
    return found


def render(path: str, artifact: str, height: int = 6000) -> str:
    """The DOM Chromium built from ``path``; fails on anything logged to the page's console or a blank
    screenshot. The screenshot is kept as tests/artifacts/<artifact>.png."""
    flags = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
             "--v=0", f"--window-size=1300,{height}"]
    dom = subprocess.run(flags + ["--dump-dom", f"file://{path}"], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, f"{artifact}.png")
    run = subprocess.run(flags + [f"--screenshot={shot}", f"file://{path}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and os.path.getsize(shot) > 50_000, run.stderr[-2000:]
    import matplotlib.image

    assert matplotlib.image.imread(shot).std() > 0.05  # not a blank page
    return dom.stdout


def drawn_figures(dom: str) -> int:
    """Inline SVG figures with real drawing in them (an empty frame has a handful of paths)."""
    return sum(1 for svg in dom.split("<svg")[1:] if svg.split("</svg>")[0].count("<path") > 20)
