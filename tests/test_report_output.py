"""A report's temporary folder goes on every exit it can see (error, Ctrl-C, SIGTERM), and
what a SIGKILL left is removed by the next report: only its own ``.<name>.…`` folders,
only beside it, only when the process that made them is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.report.output import STALE_AFTER_S, atomic_folder, remove_stale


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_sigterm_removes_the_temporary_folder(tmp_path):
    out = tmp_path / "reports" / "exp"
    code = ("import sys, time; from pathlib import Path; from bench.report.output import atomic_folder\n"
            f"with atomic_folder(Path({str(out)!r})) as t:\n"
            "    (t / 'half.png').write_text('x'); print(t, flush=True); time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_dir() and tmp.name.startswith(f".exp.{proc.pid}.")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert not tmp.exists() and not out.exists()
    assert list((tmp_path / "reports").iterdir()) == []


def test_an_error_removes_it_and_keeps_the_last_report(tmp_path):
    out = tmp_path / "exp"
    with atomic_folder(out) as t:
        (t / "index.html").write_text("first")
        (t / "index.md").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as t:
            (t / "index.html").write_text("second")
            raise RuntimeError("disk full")
    assert (out / "index.html").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_next_report_removes_what_killed_ones_left(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    gone, live = dead_pid(), os.getppid()
    stale = [reports / f".exp.{gone}.abcd1234", reports / f".exp.old.{gone}.zz_y9876"]
    legacy = reports / ".exp.q1w2e3r4"  # an earlier version's name (no pid): stale after an hour
    keep = [reports / f".exp.{live}.abcdefgh",  # a report being built right now by a live process
            reports / ".exp.newer123",  # an earlier version's, too young to be stale
            reports / f".other.{gone}.abcdefgh",  # another report's
            reports / ".exp.notes", reports / "exp2"]  # not the pattern
    for p in stale + [legacy] + keep:
        p.mkdir()
        (p / "f.png").write_text("x")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(legacy, (old, old))
    outside = tmp_path / f".exp.{gone}.abcd1234"
    outside.mkdir()  # the same pattern, but not beside the report: untouched
    with atomic_folder(reports / "exp") as t:
        (t / "index.html").write_text("new")
    assert sorted(p.name for p in reports.iterdir()) == sorted(["exp"] + [p.name for p in keep])
    assert outside.is_dir()


def test_a_report_caught_between_its_two_moves_is_put_back(tmp_path):
    """Killed after the old report was moved aside and before the new one moved in."""
    gone = dead_pid()
    aside = tmp_path / f".exp.old.{gone}.abcdefgh"
    (aside / "exp").mkdir(parents=True)
    (aside / "exp" / "index.html").write_text("previous")
    (tmp_path / f".exp.{gone}.12345678").mkdir()  # the new one, complete or not: dropped
    assert len(remove_stale(tmp_path / "exp")) == 2
    assert (tmp_path / "exp" / "index.html").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_unwritable_destination_names_the_option(tmp_path):
    from bench.record.reader import ReportInputError

    with pytest.raises(ReportInputError, match=r"^--out /proc/nope/exp: cannot write in /proc/nope"):
        with atomic_folder(Path("/proc/nope/exp")):
            pass
