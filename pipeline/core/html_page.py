"""Self-contained HTML reports: one file with inline SVG figures (matplotlib) and tables, no script, no
external asset, so it opens offline and renders the same everywhere. Output is deterministic: SVG ids are
salted with a fixed string and no date is stamped, so the same inputs give byte-identical files."""

from __future__ import annotations

import html
import io
import re

from pipeline.core.atomic import write_text
from pipeline.core.printable import printable

_NUMBER = re.compile(r"^[-+−]?[\d,.]+(e[-+]?\d+)?%?( ± [\d,.]+)?$|^–$")

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;color:#1b1f24;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
p.lead{color:#57606a;margin-top:0}table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:right}th{background:#f6f8fa}td.l,th.l{text-align:left}
tr.hl td{background:#fff8c5;font-weight:600}.verdict{font-size:1.05rem;padding:.6rem .9rem;border-left:4px solid #0969da;background:#f6f8fa}
figure{margin:.8rem 0}figure svg{max-width:100%;height:auto}figcaption{color:#57606a;font-size:.85rem}
.good{color:#1a7f37}.bad{color:#cf222e}
"""


def esc(value) -> str:
    """Text for the page: HTML-escaped, and controls, bidi overrides and zero-width characters shown as their
    escapes (a U+202E in an id would reorder the text around it)."""
    return html.escape(printable(value, one_line=False))


def svg(fig) -> str:
    """A matplotlib figure as inline SVG markup (text as paths: no font needed where it is opened)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": "ruyi2", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: it is embedded in HTML


def figure(fig, caption: str) -> str:
    return f"<figure>{svg(fig)}<figcaption>{esc(caption)}</figcaption></figure>"


def table(header: list[str], rows: list[list], left: int = 1, highlight: set[int] | None = None) -> str:
    """An HTML table: the first ``left`` columns and every cell that is not a number are left-aligned."""
    highlight = highlight or set()

    def cls(i: int, value) -> str:
        return "l" if i < left or not _NUMBER.match(str(value).strip() or "0") else ""

    head = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        f'<tr class="{"hl" if r in highlight else ""}">'
        + "".join(f'<td class="{cls(i, v)}">{esc(v)}</td>' for i, v in enumerate(row)) + "</tr>"
        for r, row in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Page:
    def __init__(self, title: str, lead: str = ""):
        self.title, self.lead, self.parts = title, lead, []

    def section(self, heading: str, *parts: str) -> None:
        self.parts.append(f"<h2>{esc(heading)}</h2>" + "".join(parts))

    def html(self) -> str:
        return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{esc(self.title)}</title>"
                f"<style>{_STYLE}</style></head><body><h1>{esc(self.title)}</h1>"
                + (f"<p class=\"lead\">{esc(self.lead)}</p>" if self.lead else "") + "".join(self.parts) + "</body></html>\n")

    def write(self, path: str) -> str:
        write_text(path, self.html())
        return path


def paragraph(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"
