"""Draw the pictures of docs/howto-debug.md from the page's own code: the path to a NaN's
culprit, a precision audit, a profile (``python docs/howto_debug_drawings.py``; see
docs/page_drawings.py). The profile's times are those of the run that drew it."""
from __future__ import annotations

from page_drawings import PageDrawings

_PAGE = PageDrawings("howto-debug.md", ["debug-nan", "debug-audit", "debug-profile"])
PAGE, NAMES, blocks, drawings = _PAGE.PAGE, _PAGE.NAMES, _PAGE.blocks, _PAGE.drawings

if __name__ == "__main__":
    _PAGE.main()
