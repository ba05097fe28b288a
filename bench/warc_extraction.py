"""WARC reading + HTML extraction: ours (``SourceReader`` on a ``warc`` source, then ``HtmlExtraction`` with
trafilatura or resiliparse) against datatrove's ``WarcReader`` + ``Trafilatura``, on the same WARC file, each in
a fresh (forked) process with one worker, the same per-page time limit and the same sandbox (datatrove's
``ExtractorSandbox``: extraction runs in a child process, whose CPU time is counted). Then the filter stage
(the web rules' defaults) over the same file with each of our extractors: documents and tokens kept.

    .venv/bin/python bench/warc_extraction.py --repeats 3

Corpus: every HTML page of the Debian python3.<minor>-doc package (fetched by ``.ci/fetch-data``), wrapped
into one WARC file as a crawl writes it (a request record before each response; ``tests/warc_files.py``).
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import platform
import queue
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_warc(path: str) -> int:
    from tests.corpora import DEB, CorpusMissing
    from tests.warc_files import write_warc

    files = sorted(glob.glob(os.path.join(DEB, "usr", "share", "doc", "python3.*[0-9]", "html", "**", "*.html"), recursive=True))
    if not files:
        raise CorpusMissing("python3.<minor>-doc: run `bash .ci/fetch-data`")
    pages = [{"url": "https://docs.python.org/3/" + os.path.relpath(f, os.path.dirname(files[0])), "body": open(f, "rb").read(),
              "content_type": "text/html; charset=utf-8"} for f in files]
    write_warc(path, pages)
    return len(pages)


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_ours(warc: str, extractor: str, timeout: float, out):
    from filters.extract import HtmlExtraction
    from pipeline.core.config import SourceConfig
    from pipeline.core.sources import SourceReader

    src = SourceConfig(name="cc", paths=[warc], format="warc", domain="web")
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), _cpu()
        reader = SourceReader([src], os.path.join(tmp, "q"))
        docs = list(HtmlExtraction(["cc"], extractor, timeout, tmp).run(reader.run(None, 0, 1), 0, 1))
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    ok = [d for d in docs if "removed_reason" not in d.metadata]
    out.put({"pages": len(docs), "extracted": len(ok), "chars": sum(len(d.text) for d in ok), "wall_s": wall, "cpu_s": cpu})


def run_datatrove(warc: str, timeout: float, out):
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader

    wall, cpu = time.perf_counter(), _cpu()
    reader = WarcReader(os.path.dirname(warc), glob_pattern=os.path.basename(warc))
    docs = list(Trafilatura(timeout=timeout).run(reader.run(None, 0, 1), 0, 1))
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    out.put({"pages": None, "extracted": len(docs), "chars": sum(len(d.text) for d in docs), "wall_s": wall, "cpu_s": cpu})


def in_process(target, *args) -> dict:
    # fork: datatrove's ExtractorSandbox forks its child and cannot be pickled for spawn; the parent has imported
    # neither extractor, so each contender starts cold
    out = mp.get_context("fork").Queue()
    proc = mp.get_context("fork").Process(target=target, args=(*args, out))
    proc.start()
    while True:  # a contender that dies is reported, not waited for
        try:
            return out.get(timeout=5)
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{target.__name__}{args[1:]} exited with status {proc.exitcode} (its error is above)") from None


def filtered(warc: str, extractor: str) -> dict:
    from pipeline.recipe import parse_recipe
    from pipeline.runner import run_stages

    with tempfile.TemporaryDirectory() as tmp:
        recipe = parse_recipe({"run_dir": os.path.join(tmp, "run"),
                               "sources": [{"name": "cc", "paths": [warc], "format": "warc", "domain": "web"}],
                               "executor": {"tasks": 1, "workers": 1}, "filter": {"extract": {"extractor": extractor}},
                               "mixture": {"stages": [{"name": "general", "tokens": 1000, "weights": {"web": 1.0}}]}})
        c = run_stages(recipe, ["filter"], quiet=True)["filter"]["sources"]["cc"]
    reasons = c["removed"]["reasons"]
    return {"kept_docs": c["kept"]["docs"], "kept_tokens": c["kept"]["tokens"], "in_docs": c["in"]["docs"],
            "top_removals": dict(sorted(reasons.items(), key=lambda kv: -kv[1]["docs"] if isinstance(kv[1], dict) else -kv[1])[:4])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--no-filter", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        warc = os.path.join(tmp, "python-docs.warc.gz")
        n = build_warc(warc)
        print(f"{n} pages, {os.path.getsize(warc) / 1e6:.1f} MB gzipped WARC; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores; best of {args.repeats}, one worker each, fresh processes")
        contenders = {"ours + trafilatura": (run_ours, warc, "trafilatura", args.timeout),
                      "ours + resiliparse": (run_ours, warc, "resiliparse", args.timeout),
                      "datatrove WarcReader + Trafilatura": (run_datatrove, warc, args.timeout)}
        results = {}
        for _ in range(args.repeats):  # interleaved, so drifts of the machine hit every contender alike
            for name, (fn, *fargs) in contenders.items():
                r = in_process(fn, *fargs)
                if name not in results or r["wall_s"] < results[name]["wall_s"]:
                    results[name] = r
        for name, r in results.items():
            print(f"{name:36s} wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s  {n / r['cpu_s']:6.1f} pages/s per core  "
                  f"extracted {r['extracted']} pages, {r['chars'] / 1e6:.2f} M chars")
        if not args.no_filter:
            for extractor in ("trafilatura", "resiliparse"):
                print(f"filter stage, web rules, {extractor}: {json.dumps(filtered(warc, extractor))}")


if __name__ == "__main__":
    main()
