"""How every figure looks: sized for a paper column, fonts embedded, colour-blind safe.

* Width: :data:`COLUMN` (3.3 in, one column of a two-column paper) for single panels,
  :data:`PAGE` (6.9 in) for rows of panels; 8 pt text, 7 pt ticks, legends and cell numbers,
  nothing smaller (:data:`MIN_PT`). Every figure is laid out by matplotlib's constrained layout
  inside its fixed size, legends included (above the panels, as many columns as fit), so the
  page is the size asked for and the plot keeps its share of it.
* PDF: vector, TrueType fonts embedded (``pdf.fonttype = 42``) so publishers accept it and
  text stays selectable; no creation date, so rebuilding does not change the metadata.
* Colours: Okabe & Ito's palette for lines and markers (distinguishable under the common
  colour-vision deficiencies), viridis for heatmaps (perceptually uniform, greyscale-safe).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Iterator

COLUMN, PAGE = 3.3, 6.9
#: The smallest text any figure prints, in points.
MIN_PT = 7

#: Okabe-Ito, most distinct first (yellow last: weak on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HEATMAP_CMAP = "viridis"

RC = {
    "pdf.fonttype": 42, "ps.fonttype": 42, "font.family": "DejaVu Sans", "font.size": 8,
    "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.2, "lines.markersize": 4,
    "figure.dpi": 100, "savefig.dpi": 200, "svg.hashsalt": "proxybench",
}


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


@functools.cache
def _pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, chosen once, when the process
    draws its first figure (not on every figure, not at import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def paper_style() -> Iterator[object]:
    """``matplotlib.pyplot`` (Agg backend) with :data:`RC` applied for the block."""
    plt = _pyplot()
    with plt.rc_context(RC):
        yield plt


def subplots(plt, nrows: int, ncols: int, width: float, height: float, **kw):
    """``plt.subplots`` at a fixed size under the constrained layout (legends and colour bars
    take their room from the panels, never from the page)."""
    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained", **kw)


def panel_row(plt, n: int, height: float, **kw):
    """``(fig, axes)``: ``n`` panels side by side (one per dataset), a column wide for one."""
    return subplots(plt, 1, n, COLUMN if n == 1 else min(PAGE, 3.0 * n), height, **kw)


def legend_above(fig, handles, labels, max_ncol: int = 3, **kw):
    """A figure legend above the panels in as many columns (up to ``max_ncol``) as fit the
    figure's width; None when there is nothing to name."""
    if not handles:
        return None
    width = fig.get_figwidth() * fig.dpi
    renderer = fig.canvas.get_renderer()
    for ncol in range(min(max_ncol, len(labels)), 0, -1):
        leg = fig.legend(handles, labels, loc="outside upper center", ncol=ncol, handlelength=1.4,
                         columnspacing=1.0, handletextpad=0.5, borderaxespad=0.2, **kw)
        if ncol == 1 or leg.get_window_extent(renderer).width <= 0.98 * width:
            return leg
        leg.remove()
    return None


def save(fig, out: Path, name: str, caption: str) -> list[str]:
    """``<name>.png`` and ``<name>.pdf`` (vector) in ``out``; returns the file names."""
    import matplotlib.pyplot as plt

    # "tight" only trims the margin: the layout keeps everything inside the figure, so the page
    # is at most the size asked for (and a test reads it back from every PDF).
    fig.savefig(out / f"{name}.png", bbox_inches="tight", pad_inches=0.02, metadata={"Software": None})
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight", pad_inches=0.02,
                metadata={"CreationDate": None, "Creator": "proxybench", "Subject": caption[:500]})
    plt.close(fig)
    return [f"{name}.png", f"{name}.pdf"]


def band(ax, x, lo, hi, color: str, alpha: float = 0.18) -> None:
    """A 95 % band of a recall (which lives in [0, 1]), clipped to [0, 1] where the t-interval
    of few seeds reaches past it (the CSV keeps the interval as computed)."""
    import math

    keep = [i for i, (a, b) in enumerate(zip(lo, hi)) if math.isfinite(a) and math.isfinite(b)]
    if keep:
        ax.fill_between([x[i] for i in keep], [max(0.0, lo[i]) for i in keep], [min(1.0, hi[i]) for i in keep],
                        color=color, alpha=alpha, lw=0, zorder=2)
