"""Decontamination: recall on planted benchmark items, false positives on clean real text, docs/s per core
and index memory, for this project's tagger and datatrove's ``NGramsDecontFilter`` at the same n, in the
same run on the same documents.

    .venv/bin/python bench/decontam_quality_speed.py --per-benchmark 100 --n 13

Planted documents: real items of the six packaged benchmarks pasted into real host text (CPython test
modules' docstrings and pydoc topics) under realistic perturbations: verbatim; case and whitespace changed;
multiple-choice options relabelled ``A.``/``(B)``; the answer given in another form (``####`` -> "The
answer is", ``\\boxed{}`` dropped, "Answer: (C)" appended); LaTeX spacing added (``\\,``, ``\\left(``,
``\\dfrac``); and the question alone (no answer). Clean documents: pydoc topics, sympy docstrings and
CPython's test modules, none of which is in the default reference corpus. datatrove's index is written in
its own format (``<task>.index.hashes``, xxhash64 of its simplified, spaCy-tokenised n-grams) by the same
code path its indexer uses, since the indexer itself needs lighteval and the hub.
"""

from __future__ import annotations

import argparse
import glob
import inspect
import os
import platform
import random
import re
import sys
import sysconfig
import tempfile
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BENCHES = ("mmlu", "arc_challenge", "hellaswag", "gsm8k", "math", "humaneval")
MC = {"mmlu", "arc_challenge", "hellaswag"}


def clean_documents() -> list[str]:
    import pydoc_data.topics

    import sympy

    docs = [t for t in pydoc_data.topics.topics.values() if len(t) > 200]
    for _, mod in sorted(vars(sympy).items()):
        d = inspect.getdoc(mod) if callable(mod) else None
        if d and len(d) > 300:
            docs.append(d)
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "test", "test_*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            docs.append(f.read()[:20000])
    return docs


def perturb(item, kind: str, rng: random.Random) -> str | None:
    text = item.text
    if kind == "verbatim":
        return text
    if kind == "case_whitespace":
        return re.sub(r"\s+", lambda m: rng.choice([" ", "  ", "\n", "\t"]), text.upper())
    if kind == "relabelled_choices":
        if item.benchmark not in MC:
            return None
        lines = [ln.strip() for ln in text.split("\n") if ln.strip() and ln.strip() != "Answer:"]
        if item.benchmark == "mmlu":  # question lines, then the four choices
            q, choices = " ".join(lines[:-4]), lines[-4:]
        else:  # oe-eval queries: question lines, then " A. choice" lines
            q = " ".join(ln for ln in lines if not re.match(r"^[A-E]\. ", ln))
            choices = [ln[3:] for ln in lines if re.match(r"^[A-E]\. ", ln)]
        style = rng.choice(["({}) {}", "{}) {}", "{}. {}"])
        return q + "\n" + "\n".join(style.format("ABCDE"[i], c) for i, c in enumerate(choices))
    if kind == "answer_other_form":
        if item.benchmark == "gsm8k":
            return text.replace("####", "The answer is") + "."
        if item.benchmark == "math":
            return re.sub(r"\\boxed\{([^{}]*)\}", r"\1", text)
        if item.benchmark in MC:
            return text.replace("Answer:", "") + "\nAnswer: (C) is correct."
        return None
    if kind == "latex_spacing":
        if item.benchmark != "math":
            return None
        t = text.replace("\\frac", "\\dfrac").replace("(", "\\left(").replace(")", "\\right)")
        return re.sub(r"([=+])", r"\\,\1\\,", t)
    if kind == "question_only":
        words = text.split(" ")
        return " ".join(words[: max(len(words) // 2, 20)])
    if kind == "line_wrapped_hyphenated":
        return hyphen_wrapped(text, rng)
    raise ValueError(kind)


def hyphen_wrapped(text: str, rng: random.Random, width: int = 60) -> str:
    """Re-wrapped at ``width`` columns the way typeset or OCR'd pages are: a long word at a line end is
    split with a hyphen half of the time ("contami-\nnation")."""
    lines, line = [], ""
    for w in text.split():
        if len(line) + 1 + len(w) > width and line:
            if len(w) >= 7 and rng.random() < 0.5:
                cut = len(w) // 2
                lines.append(f"{line} {w[:cut]}-")
                line = w[cut:]
                continue
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    return "\n".join([*lines, line])


KINDS = ("verbatim", "case_whitespace", "relabelled_choices", "answer_other_form", "latex_spacing", "question_only",
         "line_wrapped_hyphenated", "split_across_paragraphs", "embedded_in_long_page")


def hard_negatives() -> dict[str, list[str]]:
    """Clean text from domains other than the reference corpus, where n-gram decontamination is known to
    over-flag: licences and legal boilerplate, web-like HTML pages, maths pages (TeX), source code with
    licence headers. Real files from Debian and installed packages (maths and code from .ci/fetch-data)."""
    from tests.corpora import code_files, tex_sections

    site = sysconfig.get_paths()["purelib"]
    licences = sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(glob.glob(os.path.join(site, "*.dist-info", "LICEN[CS]E*")))
    html = sorted(p for p in glob.glob("/usr/share/doc/**/*.html", recursive=True) if os.path.isfile(p))
    read = lambda p: open(p, encoding="utf-8", errors="replace").read()  # noqa: E731
    sets = {
        "licences and legal text": sorted({read(p) for p in licences if os.path.isfile(p)}),
        "web-like HTML pages (tags stripped)": [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", read(p))) for p in html],
        "maths pages (pari-doc TeX)": [d["text"] for d in tex_sections()],
        "code with licence headers (Go, Rust)": [read(p) for lang in ("go", "rust") for p in code_files(lang)[:400]
                                                 if "icense" in read(p)[:2000]],
    }
    return {k: [d for d in v if len(d) > 200] for k, v in sets.items()}


def datatrove_filter(items, n: int, folder: str):
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.text import ngrams, simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    cfg = NGramsDecontConfig(n_grams=n)
    tok, hash_func = load_word_tokenizer("en"), create_hash_func(cfg.hash_config)
    by_task: dict[str, set] = {}
    for it in items:  # NGramsDecontIndexer.compute_hashes(label=item text), minus its lighteval import
        words = tok.word_tokenize(simplify_text(it.text, cfg.norm_config))
        by_task.setdefault(it.benchmark, set()).update(map(hash_func, map(" ".join, ngrams(words, n))))
    for task, hs in by_task.items():
        np.array(sorted(hs), dtype=cfg.hash_config.np_descr).tofile(os.path.join(folder, f"{task}.index.hashes"))
    f = NGramsDecontFilter(folder, config=cfg)
    tracemalloc.start()
    f.load_index_hashes()
    mem = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return f, mem


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-benchmark", type=int, default=100)
    ap.add_argument("--n", type=int, default=13)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-n", type=int, default=8, help="decontam.split_n_gram for ours (0: off)")
    args = ap.parse_args()
    from datatrove.data import Document

    from decontam.benchmarks import load_benchmark
    from decontam.build import build_index
    from decontam.config import DecontamConfig
    from decontam.filter import NgramDecontaminationTagger

    rng = random.Random(args.seed)
    items = [it for b in BENCHES for it in load_benchmark(b)]
    hosts = clean_documents()
    prose = [d for d in hosts if not d.lstrip().startswith(("#", '"""', "import", "from"))]
    planted = []  # (benchmark, item_id, kind, text)
    for b in BENCHES:
        pool = [it for it in items if it.benchmark == b]
        for it in rng.sample(pool, args.per_benchmark):
            for kind in KINDS:
                before, after = rng.choice(prose)[:1500], rng.choice(prose)[:1500]
                if kind == "split_across_paragraphs":  # the item's two halves with a host paragraph between
                    words = it.text.split(" ")
                    half = len(words) // 2
                    body = " ".join(words[:half]) + "\n\n" + rng.choice(prose)[:600] + "\n\n" + " ".join(words[half:])
                elif kind == "embedded_in_long_page":  # the item in the middle of a page of ~60 kB
                    before = "\n\n".join(rng.choice(prose) for _ in range(20))[:30000]
                    after = "\n\n".join(rng.choice(prose) for _ in range(20))[:30000]
                    body = it.text
                else:
                    body = perturb(it, kind, rng)
                if body is not None:
                    planted.append((b, it.item_id, kind, f"{before}\n\n{body}\n\n{after}"))
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        index_path, stats = build_index(DecontamConfig(n_gram=args.n, split_n_gram=args.split_n or None, benchmarks=list(BENCHES)), os.path.join(work, "ours"))
        ours_build = time.perf_counter() - t0
        tagger = NgramDecontaminationTagger(index_path, os.path.join(work, "matches"), default_action="flag")
        os.makedirs(os.path.join(work, "dt"))
        t0 = time.perf_counter()
        dt, dt_mem = datatrove_filter(items, args.n, os.path.join(work, "dt"))
        dt_build = time.perf_counter() - t0

        def ours_flags(texts):
            docs = [Document(id=str(i), text=t, metadata={"domain": "web"}) for i, t in enumerate(texts)]
            out = list(tagger.run(iter(docs)))
            return [{(m["benchmark"], m["item"]) for m in d.metadata.get("decontam_matches", [])} for d in out]

        def dt_flags(texts):
            res = []
            for i, t in enumerate(texts):
                d = Document(id=str(i), text=t)
                res.append(set() if dt.filter(d) is True else {(d.metadata["contaminated_task"], d.metadata["contaminated_ngram"])})
            return res

        # quality
        texts = [p[3] for p in planted]
        o, d = ours_flags(texts), dt_flags(texts)
        print(f"planted documents: {len(planted)} ({args.per_benchmark} items per benchmark x perturbations)")
        print(f"{'perturbation':22s} {'docs':>5s} {'ours recall':>12s} {'datatrove recall':>17s}")
        for kind in KINDS:
            idx = [i for i, p in enumerate(planted) if p[2] == kind]
            ro = sum(planted[i][:2] in o[i] for i in idx) / len(idx)  # the right item
            rd = sum(planted[i][0] in {t for t, _ in d[i]} for i in idx) / len(idx)  # datatrove keeps only the task
            print(f"{kind:22s} {len(idx):5d} {ro:12.3f} {rd:17.3f}")
        for b in BENCHES:
            idx = [i for i, p in enumerate(planted) if p[0] == b]
            ro = sum(planted[i][:2] in o[i] for i in idx) / len(idx)
            rd = sum(b in {t for t, _ in d[i]} for i in idx) / len(idx)
            print(f"  {b:20s} {len(idx):5d} {ro:12.3f} {rd:17.3f}")
        print(f"{'clean set':40s} {'docs':>5s} {'M chars':>7s} {'ours flagged':>12s} {'datatrove flagged':>17s}")
        for name, clean in {"host text (pydoc, sympy, CPython tests)": hosts, **hard_negatives()}.items():
            oc, dc = ours_flags(clean), dt_flags(clean)
            fp_o = [(i, f) for i, f in enumerate(oc) if f]
            fp_d = [(i, f) for i, f in enumerate(dc) if f]
            print(f"{name:40s} {len(clean):5d} {sum(map(len, clean)) / 1e6:7.1f} {len(fp_o):12d} {len(fp_d):17d}")
            for i, f in fp_o[:3]:
                print("    ours flagged:", i, sorted(f)[:3], repr(clean[i][:80]))

        # speed: the clean documents (the common case: nothing found), best of 3, one process each
        def best(fn):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn(hosts)
                times.append(time.perf_counter() - t0)
            return min(times)

        t_o, t_d = best(ours_flags), best(dt_flags)
        print(f"speed on {len(hosts)} clean docs, one core: ours {len(hosts) / t_o:,.0f} docs/s, datatrove {len(hosts) / t_d:,.0f} docs/s "
              f"-> {t_d / t_o:.2f}x")
        print(f"index build: ours {ours_build:.1f}s (incl. reference scan), datatrove-format {dt_build:.1f}s")
        print(f"index memory: ours {stats['index_bytes'] / 2**20:.1f} MiB for {stats['ngrams_indexed']:,} n-grams "
              f"(file {stats['index_file_bytes'] / 2**20:.1f} MiB); datatrove dict {dt_mem / 2**20:.1f} MiB")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
