"""A small real corpus laid out like the sources of ``pipeline/recipes/ruyi2-800b.yaml`` (same names, formats,
domains and languages), and the two quality classifiers that recipe names, trained here on real text.

| source | format | text |
|---|---|---|
| web_en | parquet | READMEs of the installed distributions (with their PyPI url), SpamAssassin ham and spam (set 2) |
| web_zh | parquet | manpages-zh pages, some with part of their lines garbled (characters shuffled) |
| code | parquet | Go, Rust, C and Python source files, with a ``path`` column the code family reads |
| math_web | jsonl.gz | sympy docstrings with LaTeX |
| arxiv | jsonl.gz | the PARI/GP manual's TeX, one section per document |
| books | jsonl.gz | Shakespeare scenes |
| wiki_en | parquet | the Python reference topics (pydoc) |
| wiki_zh | parquet | manpages-zh pages not used elsewhere |
| synth_reasoning | jsonl.gz | worked algebra and calculus problems generated and checked with sympy (synthetic data) |

Classifiers: English, SpamAssassin ham (positive) vs spam (negative), set 1; Chinese, manpages-zh pages
(positive) vs the same pages with every line's characters shuffled (negative). Neither shares a document
with the corpus.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq

from filters.classifier import ClassifierSettings, train_classifier
from filters.classifier_inputs import email_body
from pipeline.demo import package_descriptions, shakespeare_scenes, sympy_math_docstrings
from tests.corpora import DATA, chinese_manpages, code_files, tex_sections


def _mails(group: str, limit: int) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(DATA, "spam-assassin", "package", "data", group, "*.txt")))[:limit]:
        with open(path, encoding="latin-1") as f:
            body = email_body(f.read())
        if body.strip():
            out.append({"id": f"{group}/{os.path.basename(path)}", "text": body})
    return out


def _garble(text: str, rng: random.Random, share: float) -> str:
    """Shuffle the characters of a ``share`` of the lines: text a broken converter or a spammer would leave."""
    lines = text.split("\n")
    for i in rng.sample(range(len(lines)), int(len(lines) * share)):
        chars = list(lines[i])
        rng.shuffle(chars)
        lines[i] = "".join(chars)
    return "\n".join(lines)


def synthetic_problems(n: int, seed: int = 0) -> list[dict]:
    """Worked problems with their steps, generated and checked with sympy (quadratics, derivatives,
    integrals, linear systems), numbers drawn at random so no two share much text."""
    import sympy as sp

    rng = random.Random(seed)
    x, y = sp.symbols("x y")
    docs = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            r1, r2 = rng.sample(range(-19, 20), 2)
            expr = sp.expand((x - r1) * (x - r2))
            b, c = expr.coeff(x, 1), expr.coeff(x, 0)
            text = (f"Problem {i + 1}. Solve {sp.sstr(expr)} = 0 over the real numbers.\n\n"
                    f"We need two numbers with product {c} and sum {-b}. Trying the divisors of {c}, the pair {r1} and "
                    f"{r2} works, because {r1} times {r2} is {r1 * r2} and {r1} plus {r2} is {r1 + r2}. So the left side "
                    f"factors as (x - ({r1}))(x - ({r2})).\n\nA product is zero exactly when one factor is zero, which gives "
                    f"x = {r1} or x = {r2}. Check: substituting x = {r1} gives {r1**2} + ({b})({r1}) + ({c}) = "
                    f"{r1**2 + b * r1 + c}, and x = {r2} gives {r2**2} + ({b})({r2}) + ({c}) = {r2**2 + b * r2 + c}.\n\n"
                    f"Answer: x = {min(r1, r2)} or x = {max(r1, r2)}.")
        elif kind == 1:
            a, k, m = rng.randint(2, 9), rng.randint(2, 7), rng.randint(2, 11)
            f = a * x**k + m * sp.sin(x)
            d = sp.diff(f, x)
            text = (f"Problem {i + 1}. Differentiate f(x) = {sp.sstr(f)} and evaluate the derivative at x = 0.\n\n"
                    f"The derivative is linear, so we differentiate term by term. By the power rule the derivative of "
                    f"{a}*x**{k} is {a}*{k}*x**{k - 1} = {sp.sstr(sp.diff(a * x**k, x))}. The derivative of sin(x) is cos(x), "
                    f"so the second term gives {m}*cos(x).\n\nTogether f'(x) = {sp.sstr(d)}. At x = 0 the first term "
                    f"vanishes because {k - 1} > 0, and cos(0) = 1, so f'(0) = {d.subs(x, 0)}.\n\nAnswer: f'(0) = {d.subs(x, 0)}.")
        elif kind == 2:
            p, q = rng.randint(1, 6), rng.randint(2, 12)
            integral = sp.integrate(q * x**p, (x, 0, 1))
            text = (f"Problem {i + 1}. Compute the integral of {q}*x**{p} from 0 to 1.\n\n"
                    f"An antiderivative of x**{p} is x**{p + 1}/{p + 1}, so an antiderivative of {q}*x**{p} is "
                    f"{q}*x**{p + 1}/{p + 1}. By the fundamental theorem of calculus the integral equals its value at 1 "
                    f"minus its value at 0, that is {q}/{p + 1} - 0 = {integral}.\n\nAs a sanity check, the integrand lies "
                    f"between 0 and {q} on the interval, so the result must lie between 0 and {q}; {integral} does.\n\n"
                    f"Answer: {integral}.")
        else:
            u, v = rng.randint(-9, 9), rng.randint(-9, 9)
            a1, b1, a2, b2 = (rng.choice([n for n in range(-7, 8) if n]) for _ in range(4))
            if a1 * b2 == a2 * b1:
                b2 += 1 if b2 != -1 else 2
            c1, c2 = a1 * u + b1 * v, a2 * u + b2 * v
            sol = sp.solve([a1 * x + b1 * y - c1, a2 * x + b2 * y - c2], [x, y])
            text = (f"Problem {i + 1}. Solve the system {a1}x + ({b1})y = {c1} and {a2}x + ({b2})y = {c2}.\n\n"
                    f"The determinant is {a1}*{b2} - ({b1})*({a2}) = {a1 * b2 - a2 * b1}, which is not zero, so there is "
                    f"exactly one solution. By Cramer's rule x = ({c1}*{b2} - ({b1})*({c2})) / {a1 * b2 - a2 * b1} = {sol[x]} "
                    f"and y = ({a1}*{c2} - ({c1})*({a2})) / {a1 * b2 - a2 * b1} = {sol[y]}.\n\nCheck: {a1}*({sol[x]}) + "
                    f"({b1})*({sol[y]}) = {a1 * sol[x] + b1 * sol[y]} and {a2}*({sol[x]}) + ({b2})*({sol[y]}) = "
                    f"{a2 * sol[x] + b2 * sol[y]}.\n\nAnswer: x = {sol[x]}, y = {sol[y]}.")
        docs.append({"id": f"synthetic/{i}", "text": text})
    return docs


def _parquet(path: str, rows: list[dict]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, compression="zstd")
    return os.path.dirname(path)


def _jsonl_gz(path: str, rows: list[dict]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return os.path.dirname(path)


def build_corpus(folder: str, seed: int = 0) -> tuple[dict[str, str], list[dict]]:
    """Write every source under ``folder``; returns (source name -> the folder to read, the Chinese pages
    kept apart for training the Chinese classifier)."""
    rng = random.Random(seed)
    pages = chinese_manpages()
    train_zh, web_zh, wiki_zh = pages[0::3], pages[1::3], pages[2::3]
    web_en = [{"id": d["id"], "text": d["text"], "url": d["url"]} for d in package_descriptions()[:300]]
    web_en += _mails("easy-ham-2", 300) + _mails("spam-2", 200)
    web_zh_rows = [{"id": d["id"], "text": _garble(d["text"], rng, rng.choice([0.0, 0.0, 0.2, 0.4, 0.6]))} for d in web_zh[:200]]
    code = [(lang, f) for lang, n in (("go", 60), ("rust", 60), ("c", 30), ("python", 60)) for f in code_files(lang)[:n]]
    code_rows = [{"id": f"{lang}/{i}", "path": path, "text": open(path, encoding="utf-8", errors="replace").read()}
                 for i, (lang, path) in enumerate(code)]
    import pydoc_data.topics

    return {
        "web_en": _parquet(os.path.join(folder, "web_en", "part-0.parquet"), web_en),
        "web_zh": _parquet(os.path.join(folder, "web_zh", "part-0.parquet"), web_zh_rows),
        "code": _parquet(os.path.join(folder, "code", "part-0.parquet"), code_rows),
        "math_web": _jsonl_gz(os.path.join(folder, "math_web", "part-0.jsonl.gz"), sympy_math_docstrings(80)),
        "arxiv": _jsonl_gz(os.path.join(folder, "arxiv", "part-0.jsonl.gz"), tex_sections()[:120]),
        "books": _jsonl_gz(os.path.join(folder, "books", "part-0.jsonl.gz"), shakespeare_scenes(150)),
        "wiki_en": _parquet(os.path.join(folder, "wikipedia", "en", "part-0.parquet"),
                            [{"id": k, "title": k, "text": v} for k, v in sorted(pydoc_data.topics.topics.items())]),
        "wiki_zh": _parquet(os.path.join(folder, "wikipedia", "zh", "part-0.parquet"), wiki_zh[:150]),
        "synth_reasoning": _jsonl_gz(os.path.join(folder, "synthetic_reasoning", "part-0.jsonl.gz"), synthetic_problems(300)),
    }, train_zh


def train_classifiers(folder: str, train_zh: list[dict], seed: int = 0) -> dict[str, str]:
    """language -> model.bin, trained on documents the corpus does not contain."""
    rng = random.Random(seed)
    settings = ClassifierSettings(epoch=10, test_fraction=0.2)
    en = os.path.join(folder, "quality_en")
    ham, spam = _mails("easy-ham-1", 1200), _mails("spam-1", 500)
    train_classifier([(d["id"], d["text"]) for d in ham], [(d["id"], d["text"]) for d in spam], en, settings, {})
    zh = os.path.join(folder, "quality_zh")
    garbled = [(d["id"], _garble(d["text"], rng, 1.0)) for d in train_zh]
    train_classifier([(d["id"], d["text"]) for d in train_zh], garbled, zh, settings, {})
    return {"en": os.path.join(en, "model.bin"), "zh": os.path.join(zh, "model.bin")}
