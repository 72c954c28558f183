"""Self-contained HTML pages of Plotly figures, for the debug, validation and A/B reports.

A page inlines Plotly's JavaScript once and every figure as JSON, so it opens from a file, an
email or a ticket with no network. Reports build their figures from results; nothing here computes.

>>> import plotly.graph_objects as go
>>> page = Page("Report")
>>> page.section("Scores").figure(go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))).text("Two bars.")
Page('Report', 1 figures)
>>> html = page.render()
>>> html.count('class="plot"'), "<script src" in html  # one plot, nothing fetched
(1, False)
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.io as pio
from plotly.offline import get_plotlyjs

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 24px 48px;
       color: #1f2328; }
h1 { font-size: 22px; margin: 24px 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px;
     border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.sub { color: #59636e; margin: 0 0 12px; } .plot { width: 100%; min-height: 360px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 10px; border-bottom: 1px solid #eaeef2;
        text-align: right; } th:first-child, td:first-child { text-align: left; }
.bad { color: #cf222e; font-weight: 600; } .good { color: #1a7f37; }
pre { background: #f6f8fa; padding: 10px; overflow-x: auto; font-size: 12px; }
"""


class Page:
    """One report page: a title, then sections of figures, tables and text, in the order added."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self._figures = 0

    def __repr__(self) -> str:
        return f"Page({self.title!r}, {self._figures} figures)"

    def section(self, heading: str, note: str = "") -> Page:
        self._parts.append(f"<h2>{html.escape(heading)}</h2>")
        if note:
            self._parts.append(f'<p class="sub">{html.escape(note)}</p>')
        return self

    def text(self, words: str, css: str = "") -> Page:
        klass = f' class="{css}"' if css else ""
        self._parts.append(f"<p{klass}>{html.escape(words)}</p>")
        return self

    def code(self, body: str) -> Page:
        self._parts.append(f"<pre>{html.escape(body)}</pre>")
        return self

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Page:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
        self._parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def figure(self, fig: Any, height: int = 380) -> Page:
        """Add a Plotly figure; it is drawn when the page loads, from JSON embedded in the page."""
        self._figures += 1
        div = f"plot-{self._figures}"
        if fig.layout.margin.t is None:  # Plotly's default leaves a tall empty band above each plot
            fig.update_layout(margin={"t": 36, "b": 40, "l": 60, "r": 24})
        fig.update_layout(template="plotly_white")  # one look across every report
        spec = pio.to_json(fig, validate=False)
        self._parts.append(
            f'<div id="{div}" class="plot" style="height:{height}px"></div>'
            f'<script type="application/json" data-plot="{div}">{_script_safe(spec)}</script>'
        )
        return self

    def render(self) -> str:
        sub = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{sub}{''.join(self._parts)}"
            f"<script>{_DRAW}</script></body></html>\n"
        )


# Draw every embedded figure, and mark each div once Plotly has drawn it, so a browser check can
# tell a rendered plot from an empty box.
_DRAW = """
for (const node of document.querySelectorAll('script[data-plot]')) {
  const fig = JSON.parse(node.textContent);
  const div = document.getElementById(node.dataset.plot);
  Plotly.newPlot(div, fig.data, fig.layout || {}, {responsive: true, displaylogo: false})
    .then(() => div.setAttribute('data-rendered', '1'));
}
"""


def _script_safe(text: str) -> str:
    """JSON inside a <script> must not close the tag early."""
    return text.replace("</", "<\\/")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def dumps(data: Any) -> str:
    """Pretty JSON for the page's appendix (the spec, the raw numbers)."""
    return json.dumps(data, indent=2, sort_keys=True, default=str)
