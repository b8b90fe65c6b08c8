"""Draw the pictures of docs/howto-custom.md from the page's own code
(``python docs/howto_custom_drawings.py``; see docs/page_drawings.py)."""
from __future__ import annotations

from page_drawings import PageDrawings

_PAGE = PageDrawings("howto-custom.md",
                     ["custom-ste", "custom-target", "custom-log1pexp", "custom-clip"])
PAGE, NAMES, blocks, drawings = _PAGE.PAGE, _PAGE.NAMES, _PAGE.blocks, _PAGE.drawings

if __name__ == "__main__":
    _PAGE.main()
