"""A formula's HTML (Unicode math, no MathJax: nothing is fetched) in headless Chromium:
the text a reader sees, and a screenshot kept as an artifact."""
import pathlib

import pytest

import flowgrad as fg
from test_walkthrough_browser import ARTIFACTS, CHROMIUM, DRIVER, browser  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (pathlib.Path(CHROMIUM).exists() and pathlib.Path(DRIVER).exists()),
                       reason="Debian's chromium and chromium-driver are not installed "
                              "(`make system-deps` installs them)"),
]


def test_formula_html_shows_the_derivative(browser, tmp_path):  # noqa: F811
    with fg.Graph():
        s = fg.worked_example.univariate_logistic(lam=0.1)
        f = fg.viz.formula(fg.grad(s["loss"], s["w"]), lhs="∂L/∂w", symbols={"λ": 0.1})
    page = tmp_path / "formula.html"
    page.write_text('<!doctype html><meta charset="utf-8"><body style="background:#fff">'
                    + f._repr_html_() + "</body>", encoding="utf-8")
    browser.get(page.as_uri())
    shown = browser.find_element("css selector", ".flowgrad-formula")
    lines = [el.text for el in shown.find_elements("css selector", ".line")]
    assert lines == ["∂L/∂w = (y − t) · y(1 − y) · x + λ w", "where y = σ(w x + b)"]
    width = shown.size["width"]
    assert width > 200
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "formula_dL_dw.png"
    shown.screenshot(str(shot))
    assert shot.stat().st_size > 2_000
