"""A tiny self-contained HTML document builder: one file, figures inlined as base64 PNG, no scripts.

Text is always escaped; only :meth:`HtmlDocument.raw` inserts markup as given.

Example:
    >>> doc = HtmlDocument("Demo")
    >>> _ = doc.heading("Results").paragraph("a < b").table(["metric", "value"], [["accuracy", 0.91234]])
    >>> "a &lt; b" in doc.render() and "0.912" in doc.render()
    True
"""

from __future__ import annotations

import base64
import html
import math
import os
from typing import Any, Sequence

from ..atomic import atomic_write_text

__all__ = ["HtmlDocument", "fmt", "fmt_ci", "fmt_mean_std"]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
caption{caption-side:top;text-align:left;font-weight:600;padding:.3em 0}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;margin:1em 0}
.warn{background:#fdecea;border-left:4px solid #d93025;padding:.6em 1em;margin:1em 0}
.muted{color:#666;font-size:.9em}
"""


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table: ``None``/NaN -> "n/a", floats with ``digits`` decimals, ints as is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ci(estimate: Any, ci: Sequence[float] | None, digits: int = 3) -> str:
    """``0.912 [0.871, 0.944]``; the interval is left out when unknown."""
    if not ci or any(v is None for v in ci):
        return fmt(estimate, digits)
    return f"{fmt(estimate, digits)} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def fmt_mean_std(mean: Any, std: Any, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return fmt(mean, digits) if std is None else f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class HtmlDocument:
    """Collects blocks and renders one standalone HTML page (inline CSS, inline images)."""

    def __init__(self, title: str):
        self.title = title
        self._blocks: list[str] = []

    def heading(self, text: str, level: int = 2) -> "HtmlDocument":
        if not 1 <= level <= 6:
            raise ValueError(f"heading level must be 1..6, got {level}")
        self._blocks.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str, kind: str | None = None) -> "HtmlDocument":
        """A paragraph; ``kind`` "note", "warn" or "muted" styles it."""
        css = f' class="{html.escape(kind)}"' if kind else ""
        self._blocks.append(f"<p{css}>{html.escape(text)}</p>")
        return self

    def bullets(self, items: Sequence[str], kind: str | None = None) -> "HtmlDocument":
        css = f' class="{html.escape(kind)}"' if kind else ""
        inner = "".join(f"<li>{html.escape(str(item))}</li>" for item in items)
        self._blocks.append(f"<ul{css}>{inner}</ul>")
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None,
              digits: int = 3) -> "HtmlDocument":
        """A table from rows; numbers are formatted with :func:`fmt` and right-aligned."""
        for i, row in enumerate(rows):
            if len(row) != len(header):
                raise ValueError(f"table row {i} has {len(row)} cells for {len(header)} columns")
        parts = ["<table>"]
        if caption:
            parts.append(f"<caption>{html.escape(caption)}</caption>")
        parts.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
        for row in rows:
            cells = []
            for value in row:
                css = ' class="num"' if _is_number(value) or value is None else ""
                cells.append(f"<td{css}>{html.escape(fmt(value, digits))}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
        self._blocks.append("".join(parts))
        return self

    def figure(self, png: bytes | None, caption: str | None = None, alt: str | None = None) -> "HtmlDocument":
        """An inline PNG (``data:`` URI); ``None`` is skipped so optional plots need no branching."""
        if png is None:
            return self
        if not png.startswith(b"\x89PNG"):
            raise ValueError("figure expects PNG bytes")
        data = base64.b64encode(png).decode("ascii")
        alt_text = html.escape(alt or caption or "figure")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._blocks.append(f'<figure><img alt="{alt_text}" src="data:image/png;base64,{data}">{cap}</figure>')
        return self

    def raw(self, markup: str) -> "HtmlDocument":
        """Trusted markup, inserted unescaped."""
        self._blocks.append(markup)
        return self

    def render(self) -> str:
        body = "\n".join(self._blocks)
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<title>{html.escape(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
                f"<h1>{html.escape(self.title)}</h1>\n{body}\n</body>\n</html>\n")

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.render())
