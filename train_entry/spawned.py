"""Run one job (export, evaluation, compression) in a freshly spawned process and get its answer back.

torch.distributed and megatron-core leave process groups and threads behind; a spawned process keeps the
command line that asked for the job clean. The child sends ("ok", result) or ("error", message, its stack)
through a pipe; a child that dies without answering is reported as such. A failure keeps the child's stack:
written to ``<log_dir>/<name>.error.log`` (named in the message) and attached to the error, which the
command line prints with ``--debug`` or ``RUYI2_DEBUG=1``.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback

from pipeline.core.atomic import write_text
from pipeline.core.errors import StageError


def answer(job, args: tuple, conn) -> None:
    """In the child: run ``job(*args)`` and send its result or its error with the stack."""
    try:
        conn.send(("ok", job(*args), None))
    except Exception as e:  # reported by the parent, which names the run
        conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))


def run_spawned(job, args: tuple, name: str, error: type[StageError], what: str, log_dir: str | None = None):
    """``job(*args)`` run in a spawned process; its result, or ``error("<what>: <message>")`` carrying the
    child's stack (``.stack``), also written under ``log_dir`` when given."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=answer, args=(job, args, child), name=name)
    proc.start()
    child.close()  # the child holds the only writing end: its exit without an answer is an EOF here
    try:
        status, detail, stack = parent.recv()
    except EOFError:
        status, detail, stack = "error", f"the {name} process died without an answer (its error is printed above)", None
    proc.join()
    if status == "ok":
        return detail
    message = f"{what}: {detail}"
    if stack and log_dir:
        try:
            os.makedirs(log_dir, exist_ok=True)
            path = os.path.join(log_dir, f"{name}.error.log")
            write_text(path, stack)
            message += f" (the stack: {path})"
        except OSError:
            pass  # the message and the attached stack still say it
    exc = error(message)
    exc.stack = stack
    raise exc
