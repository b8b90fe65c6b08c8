"""The pictures of a how-to page, drawn from the page's own code: each ```python block
that leaves a ``drawing`` is run and its drawing written as an SVG next to the page.
docs/howto_custom_drawings.py and docs/howto_debug_drawings.py name a page and its
pictures; run either (needs Graphviz's ``dot``)."""
from __future__ import annotations

import pathlib
import re


class PageDrawings:
    """The drawings of ``docs/<page>``, written as ``docs/<name>.svg`` in ``names``'
    order (the page's order of the blocks that leave a ``drawing``)."""

    def __init__(self, page: str, names: list[str]):
        self.PAGE = pathlib.Path(__file__).with_name(page)
        self.NAMES = names

    def blocks(self) -> list[str]:
        return re.findall(r"^```python\n(.*?)^```", self.PAGE.read_text(encoding="utf-8"),
                          flags=re.S | re.M)

    def drawings(self):
        """[(name, drawing)] for the blocks that leave a ``drawing``, in order."""
        out = []
        for k, code in enumerate(self.blocks()):
            space = {"__name__": self.PAGE.stem.replace("-", "_")}
            exec(compile(code, f"docs/{self.PAGE.name} block {k}", "exec"), space)
            if "drawing" in space:
                out.append(space["drawing"])
        return list(zip(self.NAMES, out))

    def main(self):
        for name, drawing in self.drawings():
            svg = drawing.pipe(format="svg")
            (self.PAGE.parent / f"{name}.svg").write_bytes(svg)
            print(f"wrote docs/{name}.svg ({len(svg)} bytes)")
