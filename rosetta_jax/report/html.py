"""One self-contained HTML report: sections of text, tables and plotly figures.

The plotly library is inlined once, so the file opens offline in any browser.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any, Sequence

import plotly
import plotly.graph_objects as go
import plotly.io as pio

from rosetta_jax import io as io_lib

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:.92em}.ok{color:#197a19}.bad{color:#b01c1c}
mark{background:#ffe08a}code{background:#f4f4f4;padding:0 .2em}
"""


def fmt(x: Any) -> str:
  """Formats a table cell: floats to 4 significant digits."""
  if isinstance(x, float):
    return f"{x:.4g}"
  return str(x)


@dataclasses.dataclass
class Report:
  """Builds a report; ``write`` renders it."""
  title: str
  parts: list[str] = dataclasses.field(default_factory=list)

  def section(self, title: str) -> "Report":
    self.parts.append(f"<h2>{html.escape(title)}</h2>")
    return self

  def text(self, text: str, css: str = "") -> "Report":
    cls = f' class="{css}"' if css else ""
    self.parts.append(f"<p{cls}>{html.escape(text)}</p>")
    return self

  def raw(self, fragment: str) -> "Report":
    """Appends an HTML fragment the caller has already escaped."""
    self.parts.append(fragment)
    return self

  def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> "Report":
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    self.parts.append(f"<table><tr>{head}</tr>{body}</table>")
    return self

  def figure(self, fig: go.Figure) -> "Report":
    self.parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=False))
    return self

  def render(self) -> str:
    js = f"<script>{plotly.offline.get_plotlyjs()}</script>"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(self.title)}</title><style>{_CSS}</style>{js}</head><body>"
            f"<h1>{html.escape(self.title)}</h1>{''.join(self.parts)}</body></html>")

  def write(self, path: str) -> str:
    return io_lib.atomic_write(path, self.render())
