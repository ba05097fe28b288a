"""A memory-limited Linux cgroup for the processes of one Ray node in the tests: the kernel enforces the limit
(its OOM killer ends the largest process of the group when the group's memory passes it), as on a Kubernetes
pod or a cloud VM of that size. cgroup v2 (``memory.max``) or v1 (``memory.limit_in_bytes``); creating one needs
root, which the test machines give.

Hand-written: no library the project has manages cgroups (``cgroupspy`` and ``cgroup-utils`` are v1-only and
unmaintained), and the few files below are the kernel's documented interface."""

from __future__ import annotations

import os
import time

V2_ROOT = "/sys/fs/cgroup"
V1_ROOT = "/sys/fs/cgroup/memory"


class MemoryCgroup:
    def __init__(self, name: str):
        if os.path.exists(os.path.join(V2_ROOT, "cgroup.controllers")):
            self.v2, self.path = True, os.path.join(V2_ROOT, name)
        elif os.path.isdir(V1_ROOT):
            self.v2, self.path = False, os.path.join(V1_ROOT, name)
        else:
            raise RuntimeError(f"no memory cgroup hierarchy at {V2_ROOT} (v2) or {V1_ROOT} (v1)")
        try:
            os.mkdir(self.path)
        except PermissionError as e:
            raise RuntimeError(f"cannot create the cgroup {self.path}: the memory-limit test needs root") from e

    def _write(self, name: str, value: str) -> None:
        with open(os.path.join(self.path, name), "w") as f:
            f.write(value)

    def _read(self, name: str) -> str:
        with open(os.path.join(self.path, name)) as f:
            return f.read()

    def add(self, pid: int) -> None:
        self._write("cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        return [int(p) for p in self._read("cgroup.procs").split()]

    def usage(self) -> int:
        return int(self._read("memory.current" if self.v2 else "memory.usage_in_bytes"))

    def limit(self, nbytes: int) -> None:
        self._write("memory.max" if self.v2 else "memory.limit_in_bytes", str(nbytes))

    def oom_kills(self) -> int:
        """Processes of the group the kernel's OOM killer has ended so far."""
        text = self._read("memory.events" if self.v2 else "memory.oom_control")
        fields = dict(line.split() for line in text.splitlines() if line.strip())
        return int(fields.get("oom_kill", 0))

    def remove(self, timeout_s: float = 30.0) -> None:
        """Kill what is left in the group, then delete it (the kernel refuses while a process is inside)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = self.pids()
            for pid in left:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(self.path)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cgroup {self.path} still holds {left}")
                time.sleep(0.2)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it (from /proc: the tests have no psutil)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
            except (OSError, IndexError, ValueError):
                continue  # ended meanwhile
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree

