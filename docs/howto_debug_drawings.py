"""Draw the pictures of docs/howto-debug.md from the page's own code: each ```python block
that leaves a ``drawing`` (the path to a NaN's culprit, a precision audit, a profile) is run
and its drawing written as an SVG next to the page (``python docs/howto_debug_drawings.py``;
needs Graphviz's ``dot``). The profile's times are those of the run that drew it."""
from __future__ import annotations

import pathlib
import re

PAGE = pathlib.Path(__file__).with_name("howto-debug.md")
#: the SVG each drawing block writes, in the page's order
NAMES = ["debug-nan", "debug-audit", "debug-profile"]


def blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", PAGE.read_text(encoding="utf-8"),
                      flags=re.S | re.M)


def drawings():
    """[(name, drawing)] for the blocks that leave a ``drawing``, in order."""
    out = []
    for k, code in enumerate(blocks()):
        space = {"__name__": "howto_debug"}
        exec(compile(code, f"docs/howto-debug.md block {k}", "exec"), space)
        if "drawing" in space:
            out.append(space["drawing"])
    return list(zip(NAMES, out))


def main():
    for name, drawing in drawings():
        svg = drawing.pipe(format="svg")
        (PAGE.parent / f"{name}.svg").write_bytes(svg)
        print(f"wrote docs/{name}.svg ({len(svg)} bytes)")


if __name__ == "__main__":
    main()
