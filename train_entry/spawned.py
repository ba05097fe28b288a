"""Run one job (export, compression) in a freshly spawned process and get its answer back.

torch.distributed and megatron-core leave process groups and threads behind; a spawned process keeps the
command line that asked for the job clean. The child sends ("ok", result) or ("error", message) through a
pipe; a child that dies without answering is reported as such.
"""

from __future__ import annotations

import multiprocessing


def answer(job, args: tuple, conn) -> None:
    """In the child: run ``job(*args)`` and send its result or its error."""
    try:
        conn.send(("ok", job(*args)))
    except Exception as e:  # reported by the parent, which names the run
        conn.send(("error", f"{type(e).__name__}: {e}"))


def run_spawned(job, args: tuple, name: str) -> tuple[str, object]:
    """("ok", result) or ("error", message) of ``job(*args)`` run in a spawned process."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=answer, args=(job, args, child), name=name)
    proc.start()
    child.close()  # the child holds the only writing end: its exit without an answer is an EOF here
    try:
        status, detail = parent.recv()
    except EOFError:
        status, detail = "error", f"the {name} process died without an answer (its error is printed above)"
    proc.join()
    return status, detail
