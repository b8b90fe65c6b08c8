"""docs/howto-custom.md: every code block runs, each drawing shows its custom function as
one box with the rule's caption, the committed SVGs are the page's own and small, and
the README links the page."""
import pathlib
import re
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import howto_custom_drawings as pictures  # noqa: E402

BLOCKS = pictures.blocks()


@pytest.mark.parametrize("k", range(len(BLOCKS)))
def test_howto_custom_block_runs(k, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[k], f"docs/howto-custom.md block {k}", "exec"), {"__name__": "docs"})


def test_the_drawings_show_one_box_and_the_rule():
    drawn = dict(pictures.drawings())
    assert list(drawn) == pictures.NAMES
    ste = drawn["custom-ste"].source
    assert "id=g_binarize" in ste and "x̄ = v̄ where |x| ≤ 1, else 0" in ste
    assert "sign" not in ste                                    # the forward is boxed
    assert "stop_gradient" in drawn["custom-target"].source
    opened = drawn["custom-log1pexp"].source
    assert "cluster_log1pexp" in opened and "ẏ = σ(x) ẋ" in opened and "log1p" in opened
    assert "/ (1 + exp" not in opened        # the forward's own rules never run: not drawn
    assert "x̄ = clip(v̄, −1, 1)" in drawn["custom-clip"].source


def test_the_committed_pictures_exist_are_small_and_linked():
    page = (ROOT / "docs" / "howto-custom.md").read_text(encoding="utf-8")
    for name in pictures.NAMES:
        svg = ROOT / "docs" / f"{name}.svg"
        assert svg.stat().st_size < 40_000 and f"({name}.svg)" in page
        assert svg.read_text(encoding="utf-8").lstrip().startswith(("<?xml", "<svg"))
    assert "(docs/howto-custom.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    for use in ("Straight-through", "target network", "log(1 + eˣ)", "clipped gradient"):
        assert re.search(re.escape(use), page, flags=re.I), use
