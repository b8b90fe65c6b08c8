"""docs/howto-debug.md (issue 23): the explained NaN, the precision audit and the profile
are each shown with a drawing made from the page's own code; the committed SVGs are those
drawings, small, and linked from the page. (tests/test_docs.py runs every block.)"""
import pathlib
import sys
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import howto_debug_drawings as pictures  # noqa: E402


@pytest.fixture(scope="module")
def drawn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return dict(pictures.drawings())


def test_each_tool_leaves_its_drawing(drawn):
    assert list(drawn) == pictures.NAMES
    nan = drawn["debug-nan"].source
    assert "likely cause (sqrt at 0 in the backward pass)" in nan
    assert "div(1, 0) = inf" in nan and "norm" in nan
    assert "broadcast_to" not in nan           # the path, not the whole backward graph
    audit = drawn["debug-audit"].source
    assert "digits lost here" in audit and "small" in audit
    profile = drawn["debug-profile"].source
    assert "gram" in profile and "matmul" in profile and "%)" in profile


def test_the_committed_pictures_exist_are_small_and_linked():
    page = (ROOT / "docs" / "howto-debug.md").read_text(encoding="utf-8")
    for name in pictures.NAMES:
        svg = ROOT / "docs" / f"{name}.svg"
        assert svg.stat().st_size < 40_000 and f"({name}.svg)" in page
        text = svg.read_text(encoding="utf-8")
        assert text.lstrip().startswith(("<?xml", "<svg"))
    nan = (ROOT / "docs" / "debug-nan.svg").read_text(encoding="utf-8")
    assert "div(1, 0) = inf" in nan and "sqrt at 0 in the backward pass" in nan
    assert "digits lost here" in (ROOT / "docs" / "debug-audit.svg").read_text(encoding="utf-8")
