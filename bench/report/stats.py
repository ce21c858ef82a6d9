"""What one drawn number is: the mean over a cell's runs (seeds), with a 95 % confidence
interval from Student's t over those runs when there are at least two.

For n runs with sample standard deviation s (ddof = 1) the interval is
``mean +- t_{0.975, n-1} * s / sqrt(n)``: the spread of the *mean*, so a cell repeated over
more seeds gets a narrower band. With one run there is no interval (NaN), and the CSVs say
n so a reader can tell.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import pandas as pd

#: Columns every summarised number carries into its CSV.
STAT_COLUMNS = ("n", "mean", "ci_low", "ci_high")


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, ci_low, ci_high, n)`` over the finite values; NaN interval when n < 2."""
    from scipy import stats

    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = math.fsum(v) / n
    if n < 2:
        return mean, math.nan, math.nan, 1
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half, n


def summarize(runs: pd.DataFrame, by: Sequence[str], metric: str, prefix: str = "") -> pd.DataFrame:
    """One row per group of ``by``: ``n``, ``mean``, ``ci_low``, ``ci_high`` of column
    ``metric`` (prefixed with ``prefix``) and ``run_ids`` (sorted, ``;``-joined)."""
    rows = []
    values = pd.to_numeric(runs[metric], errors="coerce") if metric in runs else pd.Series(math.nan, index=runs.index)
    for key, g in runs.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, lo, hi, n = mean_ci(values.loc[g.index])
        row = dict(zip(by, key))
        row.update({f"{prefix}n": n, f"{prefix}mean": mean, f"{prefix}ci_low": lo, f"{prefix}ci_high": hi})
        row["run_ids"] = ";".join(sorted(g["run_id"]))
        rows.append(row)
    return pd.DataFrame(rows)
