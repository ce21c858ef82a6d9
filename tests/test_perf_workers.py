"""``python -m bench.perf workers`` prints the median of interleaved repeats of each row
against the 1-worker row, and marks a row over 1.05x as SLOWER (timings faked here; the
real rows start real workers and take minutes)."""

from bench.perf import workers


def test_the_table_gives_medians_against_one_worker_and_marks_a_slower_row(monkeypatch, capsys):
    times = {("auto", 1): [10.0, 12.0, 11.0], ("auto", 2): [11.0, 11.5, 30.0], ("off", 1): [20.0] * 3,
             ("off", 2): [22.0, 21.5, 23.0]}
    order = []

    def one(w, cells, threads, pack):
        order.append((pack, w))
        return times[(pack, w)][sum(o == (pack, w) for o in order) - 1], [cells // w] * w, 3 - w

    monkeypatch.setattr(workers, "one", one)
    assert workers.main(["--workers", "1", "2", "--repeats", "3"]) == 0
    rows = {tuple(line.split()[:2]): line.split() for line in capsys.readouterr().out.splitlines()
            if line.split()[:1] in (["auto"], ["off"])}
    assert rows[("auto", "1")][3] == "11.0" and rows[("auto", "2")][3] == "11.5"  # the median, not the 30 s burst
    assert rows[("auto", "2")][-1] == "ok" and rows[("auto", "2")][5] == "1.05"
    assert rows[("off", "2")][3] == "22.0" and rows[("off", "2")][-1] == "SLOWER"
    assert order[:4] == [("auto", 1), ("auto", 2), ("off", 1), ("off", 2)]  # rows interleaved per repeat
