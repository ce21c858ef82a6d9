"""Which figure a study's axes make, and how axes read on a page.

Two axes draw a heatmap, one a line of R@1 against it; a third (or more) axis makes one
panel per value of the extra axes (facets), up to :data:`MAX_PANELS`, beyond which the report
refuses and says how to pick two (``--axes A B --where C=v``). Nothing but the study's repeat
axes is ever averaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from bench.record.reader import ReportInputError, RunSet, Study
from bench.selection import value_order

#: The most panels (facets) one figure draws before the report asks for ``--axes``/``--where``.
MAX_PANELS = 12

#: How an axis reads in a figure, by the last part of its key (``loss.base.alpha`` -> alpha).
AXIS_LABELS = {
    "alpha": "α (scale)", "delta": "δ (margin)", "scale": "scale s", "batch_size": "batch size",
    "embedding_dim": "embedding dimension", "noise_rate": "label noise rate", "lr": "learning rate",
    "weights": "upper-level weight λ", "levels": "upper-level proxies", "proxy_lr_mult": "proxy lr multiplier",
    "weight_decay": "weight decay", "epochs": "epochs", "name": "loss",
}


def short(key: str) -> str:
    """``loss.base.alpha`` -> ``alpha``: the part of a key a figure is named after."""
    return key.rsplit(".", 1)[-1]


def axis_label(key: str) -> str:
    return AXIS_LABELS.get(short(key), key)


def fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def facet_label(facet: Mapping[str, Any]) -> str:
    return ", ".join(f"{short(k)}={fmt_value(v)}" for k, v in facet.items())


@dataclass
class AxisPlan:
    """One study drawn over ``plot_axes`` (1 or 2), one panel/series per ``facets`` value."""

    study: Study
    plot_axes: tuple[str, ...]
    facets: tuple[str, ...]
    runs: pd.DataFrame  # the study's selection runs after --where

    @property
    def fixed(self) -> dict[str, Any]:
        """Axes held at one value in the runs drawn (one value in the grid, or ``--where``)."""
        first = self.runs["values"].iloc[0]
        return {a: first[a] for a in self.study.axes if a not in self.plot_axes and a not in self.facets}

    def facet_values(self) -> list[dict[str, Any]]:
        """Every combination of facet values present, in numeric order."""
        if not self.facets:
            return [{}]
        seen = {json.dumps({k: v[k] for k in self.facets}, sort_keys=True) for v in self.runs["values"]}
        combos = [json.loads(s) for s in seen]
        return sorted(combos, key=lambda c: tuple(value_order(c[k]) for k in self.facets))


def _resolve(study: Study, name: str) -> str | None:
    """A full axis key of ``study`` for ``name`` (a full key or its last part)."""
    if name in study.axes:
        return name
    hits = [a for a in study.axes if short(a) == name]
    return hits[0] if len(hits) == 1 else None


def _parse(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _same(a: Any, b: Any) -> bool:
    return value_order(a) == value_order(b)


def plan_axes(rs: RunSet, axes: Sequence[str] | None = None,
              where: Mapping[str, str] | None = None) -> tuple[list[AxisPlan], list[str]]:
    """Axis figures for every grid study of ``rs``; returns ``(plans, notes)``.

    ``axes``: one or two axis names (full keys or their last part) to draw, the others
    becoming facets; ``where``: ``axis -> value`` fixing axes first. Studies without a named
    axis are left out with a note; an axis no study has, a value an axis never took, or more
    facets than :data:`MAX_PANELS` raise :class:`ReportInputError` naming the fix.
    """
    where = dict(where or {})
    plans, notes = [], []
    wanted = list(axes or [])
    if len(wanted) > 2:
        raise ReportInputError(f"--axes takes one or two axes, got {len(wanted)}: {' '.join(wanted)}")
    every = sorted({a for s in rs.studies.values() for a in s.axes})
    for name in [*wanted, *where]:
        if not any(_resolve(s, name) for s in rs.studies.values()):
            raise ReportInputError(f"no study has an axis {name!r}; axes recorded: {', '.join(every) or 'none'}")
    for key, st in rs.studies.items():
        if st.kind != "grid" or not st.axes:
            continue
        runs = rs.grid_runs(key)
        missing = [n for n in [*wanted, *where] if _resolve(st, n) is None]
        if missing:
            notes.append(f"{st.label}: not drawn over {', '.join(missing)} (its axes: {', '.join(st.axes)})")
            continue
        for name, text in where.items():
            axis, value = _resolve(st, name), _parse(text)
            present = sorted({json.dumps(v[axis]) for v in runs["values"]})
            runs = runs[[_same(v[axis], value) for v in runs["values"]]]
            if runs.empty:
                raise ReportInputError(f"--where {name}={text}: {st.label} has no runs there; "
                                       f"values of {axis}: {', '.join(present)}")
        fixed = {_resolve(st, n) for n in where}
        free = [a for a in st.axes if a not in fixed and len({json.dumps(v[a]) for v in runs["values"]}) > 1]
        plot = tuple(_resolve(st, n) for n in wanted) if wanted else tuple(free[:2])
        if not plot:
            continue
        facets = tuple(a for a in free if a not in plot)
        plan = AxisPlan(st, plot, facets, runs)
        n_panels = len(plan.facet_values())
        if n_panels > MAX_PANELS:
            raise ReportInputError(
                f"{st.label} varies {', '.join(st.axes)}: {n_panels} panels of {' x '.join(plot)} is too many to draw; "
                f"choose the axes and fix the others, e.g. bench report --axes {' '.join(plot)} "
                + " ".join(f"--where {a}={fmt_value(runs['values'].iloc[0][a])}" for a in facets))
        plans.append(plan)
    return plans, notes


def axis_values(runs: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """``runs`` with one column per axis (named by the full key), read from the cell."""
    out = runs.copy()
    for a in axes:
        out[a] = [v[a] for v in runs["values"]]
    return out


def order_values(values: Sequence[Any]) -> list[Any]:
    return sorted(dict.fromkeys(values), key=value_order)


def log_base(values: Sequence[Any]) -> int | None:
    """2 or 10 when an axis reads better on a log scale (all positive numbers spanning at
    least 8x: batch sizes, dimensions, scales), else None."""
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(nums) != len(values) or len(nums) < 3 or min(nums) <= 0 or max(nums) / min(nums) < 8:
        return None
    return 2 if all(float(v).is_integer() for v in nums) else 10



def in_axis_order(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``table``'s rows in numeric order of ``columns`` (the first one slowest), whatever
    order the runs came in, so a CSV reads like the grid it describes."""
    if table.empty:
        return table.reset_index(drop=True)
    keys = [tuple(value_order(r[c]) for c in columns) for _, r in table.iterrows()]
    order = sorted(range(len(table)), key=lambda i: keys[i])
    return table.iloc[order].reset_index(drop=True)
