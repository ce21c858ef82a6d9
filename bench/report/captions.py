"""The sentences every caption shares: what one number aggregates and how cells were selected."""

from __future__ import annotations

from typing import Iterable, Sequence

from bench.record.reader import Study


def selection_rule(studies: Iterable[Study]) -> str:
    """How the selected cell was chosen (the one rule of :mod:`bench.selection`)."""
    ons = {s.select_on for s in studies}
    val = ("selected cell = highest mean validation R@1 (classes held out of training), "
           "ties to the smallest axis values")
    test = ("selected cell = highest mean test R@1 (paper parity: chosen on the test classes, "
            "so its own numbers are optimistic)")
    if ons == {"test"}:
        return test
    if ons == {"val"}:
        return val
    return f"{val}; for the studies run with select_on: test, {test[len('selected cell = '):]}"


def runs_phrase(ns: Sequence[int], repeat_axes: Iterable[str] = ("train.seed",)) -> str:
    """``mean over n = 3 runs (train.seed)`` or the range, and whether an interval exists."""
    ns = [n for n in ns if n]
    axes = ", ".join(dict.fromkeys(repeat_axes)) or "train.seed"
    if not ns:
        return "no finished runs"
    lo, hi = min(ns), max(ns)
    n = f"n = {lo}" if lo == hi else f"n = {lo}-{hi}"
    if hi < 2:
        return f"one run per point ({n}; no repeats over {axes}, so no interval)"
    return f"mean over {n} runs per point (repeats over {axes}), 95 % Student-t interval"


def headline_phrase(sources: Iterable[str]) -> str:
    """Where headline numbers come from: fresh-seed repeats or the selection runs."""
    s = set(sources)
    rep = ("fresh-seed repeats of each selected cell (bench repeat; the selection runs themselves "
           "left out, so free of selection bias)")
    sel = ("the selection runs of each selected cell (optimistic: those runs won the selection; "
           "run bench repeat for unbiased numbers)")
    if s == {"repeats"}:
        return rep
    if s == {"selection"}:
        return sel
    return f"{rep} where a study has them, else {sel}"


def fixed_phrase(plans) -> str:
    """`` Held fixed: δ=0.1 (Proxy-Anchor).`` for axes drawn at one value, or nothing."""
    from bench.report.axes import facet_label

    parts = [f"{facet_label(p.fixed)} ({p.study.label})" for p in plans if p.fixed]
    return f" Held fixed: {'; '.join(parts)}." if parts else ""


def clip_note(data) -> str:
    """Say so when a drawn band was clipped to [0, 1] (the CSV keeps the interval)."""
    lo, hi = data["ci_low"].dropna(), data["ci_high"].dropna()
    return " Bands clipped to [0, 1] in the figure." if (len(lo) and lo.min() < 0) or (len(hi) and hi.max() > 1) else ""
