"""The thread budget: cores shared by the live workers on this machine."""

import subprocess
import sys

from bench import threads


def test_budget_shares_cores_among_live_workers(monkeypatch, tmp_path):
    monkeypatch.setattr(threads.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("BENCH_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 8)
    threads.register_worker()
    assert threads.budget() == 8
    others = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    try:
        for p in others:
            (threads._registry() / str(p.pid)).touch()
        assert threads.budget() == 2
        (threads._registry() / "999999999").touch()  # a dead worker's file does not count
        assert threads.budget() == 2 and not (threads._registry() / "999999999").exists()
    finally:
        for p in others:
            p.kill()
            p.wait()
    assert threads.budget() == 8 and threads.budget(3) == 3
    monkeypatch.setenv("BENCH_THREADS", "1")
    assert threads.budget() == 1
