"""Page size and text sizes of a PDF, read from the PDF itself (pypdf), for the figure tests
and for measuring a report folder by hand:

    python tests/pdf_measure.py reports/figures-losses/*.pdf
"""

from __future__ import annotations

import math
import sys
from pathlib import Path


def page_inches(path: Path) -> tuple[float, float]:
    """``(width, height)`` of the first page in inches (72 points each)."""
    from pypdf import PdfReader

    box = PdfReader(str(path)).pages[0].mediabox
    return float(box.width) / 72, float(box.height) / 72


def text_sizes(path: Path) -> list[tuple[str, float]]:
    """Every text run on the first page with its size in points as printed: the font size
    times the vertical scale of the text matrix and of the current transformation."""
    from pypdf import PdfReader

    out: list[tuple[str, float]] = []

    def visit(text, cm, tm, font, size):
        if text.strip() and size:
            out.append((text.strip(), float(size) * math.hypot(cm[2], cm[3]) * math.hypot(tm[2], tm[3])))

    PdfReader(str(path)).pages[0].extract_text(visitor_text=visit)
    return out


def smallest_text(path: Path) -> tuple[str, float]:
    """The smallest text on the page, ``(text, points)``."""
    return min(text_sizes(path), key=lambda t: t[1])


def main(paths: list[str]) -> None:
    print(f"{'figure':<55} {'width in':>8} {'height in':>9} {'min pt':>6}  smallest text")
    for p in sorted(paths):
        w, h = page_inches(Path(p))
        text, size = smallest_text(Path(p))
        print(f"{p:<55} {w:8.2f} {h:9.2f} {size:6.2f}  {text[:30]}")


if __name__ == "__main__":
    main(sys.argv[1:])
