"""Progress of a running stage, logged by the driver while the executor runs its tasks: tasks done, the
documents the finished tasks read, documents per second and an estimate of the time left.

It reads what datatrove already writes as each task ends (``logs/completions/<rank>``, ``stats/<rank>.json``)
from a thread of the driver, so it works the same for local workers and Ray tasks on other nodes (the
logging folder is shared) and adds nothing to the tasks. The estimate assumes the remaining tasks take as
long as the finished ones (files are dealt to ranks evenly). Tasks completed before a resumed launch count
as done but not in the rate.
"""

from __future__ import annotations

import json
import os
import threading
import time

from loguru import logger


def _documents_read(stats_file: str) -> int:
    """Documents the first step of a task read: a datatrove reader's ``documents``, or the source reader's
    ``read/<source>`` counts."""
    try:
        with open(stats_file) as f:
            steps = json.load(f)
    except (OSError, json.JSONDecodeError):  # being written: counted on the next look
        return 0
    if not steps:
        return 0
    stats = steps[0]["stats"]
    value = lambda v: v["total"] if isinstance(v, dict) else v  # noqa: E731
    if "documents" in stats:
        return int(value(stats["documents"]))
    return int(sum(value(v) for k, v in stats.items() if k.startswith("read/") and k.count("/") == 1))


def duration(seconds: float) -> str:
    """"42 s", "17 min", "3.2 h": a time for a progress line."""
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def time_left(elapsed: float, done: int, total: int) -> str:
    """The time the remaining ``total - done`` units take at the rate of the ``done`` ones so far."""
    return duration(elapsed / done * (total - done)) if done else "unknown"


class StageProgress:
    """``with StageProgress(name, logging_dir, tasks): executor.run()`` logs a progress line every
    ``interval`` seconds while tasks finish."""

    def __init__(self, name: str, logging_dir: str, tasks: int, interval: float = 30.0):
        self.name, self.dir, self.tasks, self.interval = name, logging_dir, tasks, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"progress-{name}", daemon=True)

    def _done(self) -> set[int]:
        folder = os.path.join(self.dir, "completions")
        try:
            return {int(n) for n in os.listdir(folder) if n.isdigit()}
        except FileNotFoundError:
            return set()

    def line(self) -> str | None:
        """The progress line now, or None when no task finished since the launch."""
        done = self._done()
        new = sorted(done - self._before)
        if not new:
            return None
        elapsed = time.monotonic() - self._t0
        docs = sum(_documents_read(os.path.join(self.dir, "stats", f"{r:05d}.json")) for r in new)
        # the rate of the tasks this launch ran, over the tasks still to run
        left = time_left(elapsed, len(new), len(new) + self.tasks - len(done))
        rate = f", {docs:,} documents read ({docs / elapsed:,.0f}/s)" if docs else ""
        return f"{self.name}: {len(done)}/{self.tasks} tasks done{rate}, {duration(elapsed)} elapsed, about {left} left"

    def _loop(self) -> None:
        last = None
        while not self._stop.wait(self.interval):
            text = self.line()
            if text and text != last:
                logger.info(text)
                last = text

    def __enter__(self) -> "StageProgress":
        self._before, self._t0 = self._done(), time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
