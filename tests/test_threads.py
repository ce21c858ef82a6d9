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


def test_an_idle_worker_gives_its_cores_back_until_it_works_again(monkeypatch, tmp_path):
    monkeypatch.setattr(threads.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(threads, "_registered", None)
    monkeypatch.delenv("BENCH_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 8)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (threads._registry() / str(other.pid)).touch()  # another worker, training
        assert threads.apply() == 4  # this one counts too
        threads.idle()  # this one now only waits
        assert threads.live_workers() == 1  # the other's next apply() takes all 8
        assert threads.apply() == 4  # working again
    finally:
        other.kill()
        other.wait()
