from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from monitor.export.html import Page


def test_a_page_opens_offline_with_every_plot_drawn(tmp_path: Path, open_page) -> None:
    page = Page("Two plots", "drawn offline").section("Lines").figure(go.Figure(go.Scatter(y=[1, 3, 2])))
    page.section("Bars").figure(go.Figure(go.Bar(x=["a", "b"], y=[2, 1]))).table(["k", "v"], [["x", 0.5]])
    path = tmp_path / "page.html"
    path.write_text(page.render())
    seen = open_page(path, "html-page")
    assert seen.console_errors == []
    assert (seen.plots, seen.rendered) == (2, 2)
    assert seen.screenshot.stat().st_size > 10_000


def test_a_broken_figure_is_caught_by_the_browser_check(tmp_path: Path, open_page) -> None:
    page = Page("Broken").figure(go.Figure(go.Scatter(y=[1, 2])))
    path = tmp_path / "broken.html"
    path.write_text(page.render().replace("Plotly.newPlot(div", "Plotly.newPlott(div"))
    seen = open_page(path, "html-broken")
    assert seen.console_errors and "newPlott" in seen.console_errors[0]
    assert (seen.plots, seen.rendered) == (1, 0)
