"""The figures' style: the Agg backend is chosen once per process, not on every figure."""

from __future__ import annotations


def test_the_backend_is_chosen_once(monkeypatch):
    import matplotlib

    from bench.report import style

    calls = []
    real = matplotlib.use
    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: (calls.append(a), real(*a, **k)))
    style._pyplot.cache_clear()
    for _ in range(3):
        with style.paper_style() as plt:
            assert plt.rcParams["pdf.fonttype"] == 42  # the paper style holds inside the block
    assert calls == [("Agg",)]
    assert matplotlib.get_backend().lower() == "agg"
