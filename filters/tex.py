"""TeX documents (math, papers): the web rules read a prose view, the document keeps its LaTeX.

Gopher's symbol ratios, FineWeb's terminal-punctuation and short-line ratios and Gopher's repeated-line
fractions all misfire on TeX source (``\\end{itemize}`` lines, display math without a full stop). The
prose view masks math as one word, drops comments and command-only lines and unwraps ``\\cmd{text}``, so
those rules judge the writing around the math. TeX's own signals catch broken sources (unbalanced ``$``)
and documents that are nothing but math.
"""

from __future__ import annotations

import re

_ENVS = r"equation|align|gather|multline|eqnarray|displaymath|math|split|alignat|flalign"
MATH = re.compile(
    r"\$\$.+?\$\$|(?<!\\)\$.+?(?<!\\)\$|\\\[.+?\\\]|\\\(.+?\\\)"
    rf"|\\begin\{{({_ENVS})\*?\}}.*?\\end\{{\1\*?\}}",
    re.S,
)
_COMMENT = re.compile(r"(?<!\\)%[^\n]*")
_COMMAND_LINE = re.compile(r"^\s*(?:\\[A-Za-z@]+\*?(?:\[[^\]\n]*\])?(?:\{[^{}\n]*\})*\s*)+$", re.M)
_COMMAND = re.compile(r"\\[A-Za-z@]+\*?(?:\[[^\]\n]*\])?")
_BRACES = re.compile(r"[{}]")
_BLANK_RUNS = re.compile(r"\n{3,}")
_ESCAPED = re.compile(r"\\([_&%$#{}])")  # \_ \& ...: the character itself
_LINEBREAK = re.compile(r"\\\\(?:\[[^\]\n]*\])?")  # \\ and \\[2pt]
_DOLLAR = re.compile(r"(?<!\\)\$")


def prose_view(text: str) -> str:
    text = _COMMENT.sub("", text)
    text = MATH.sub(" MATH ", text)
    text = _COMMAND_LINE.sub("", text)
    text = _LINEBREAK.sub(" ", text).replace("~", " ")
    text = _BRACES.sub("", _COMMAND.sub("", _ESCAPED.sub(r"\1", text)))
    return _BLANK_RUNS.sub("\n\n", text).strip()


def tex_signals(text: str) -> dict:
    math_chars = sum(m.end() - m.start() for m in MATH.finditer(text))
    return {
        "math_fraction": round(math_chars / len(text), 4) if text else 0.0,
        "unbalanced_math": len(_DOLLAR.findall(text)) % 2 == 1,
    }


def tex_reason(sig: dict, cfg) -> str | None:
    if cfg.drop_unbalanced_math and sig["unbalanced_math"]:
        return "unbalanced_math"
    if sig["math_fraction"] > cfg.max_math_fraction:
        return "math_only"
    return None
