"""The thread budget: cores shared by the live workers on this machine."""

import subprocess
import sys

import pytest

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


def _sleepers(n):
    return [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) for _ in range(n)]


def test_a_study_pins_its_thread_count_records_it_and_never_changes_it_mid_trial(monkeypatch, tmp_path, tiny_trial):
    """Two studies pinned at one thread give bitwise-identical metrics although the registry
    of live workers says 1 worker for one and 4 for the other; an unpinned study keeps the
    count it started with while workers come and go mid-trial; every run records it."""
    import torch
    from mlflow import MlflowClient

    import bench.studies.worker as w
    from bench.config import ConfigError, Settings
    from bench.studies import StudySpec, run_study

    monkeypatch.setattr(threads.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(threads, "_registered", None)
    monkeypatch.delenv("BENCH_THREADS", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    s = Settings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                 storage=f"sqlite:///{tmp_path}/optuna.db", trial=tiny_trial)
    seen: list[list[int]] = []
    others = []
    real = w.run_trial

    def spy(cfg, callbacks=(), **kw):
        seen.append([torch.get_num_threads()])

        def mid_trial(epoch, metrics):  # another worker starts while this trial trains
            others.extend(_sleepers(1))
            (threads._registry() / str(others[-1].pid)).touch()
            seen[-1].append(torch.get_num_threads())

        return real(cfg, callbacks=[*callbacks, mid_trial], **kw)

    monkeypatch.setattr(w, "run_trial", spy)
    before = torch.get_num_threads()
    grid = {"loss.alpha": [16.0, 32.0]}
    try:
        run_study(StudySpec(experiment="quiet", grid=grid, pack="off", threads=1), s, progress=False)
        assert threads.budget() == 1  # the registry now counts the sleepers too
        run_study(StudySpec(experiment="busy", grid=grid, pack="off", threads=1), s, progress=False)
        for p in others:  # gone: the next study starts alone on the machine
            p.kill()
            p.wait()
        free = run_study(StudySpec(experiment="free", grid={"loss.alpha": [16.0]}, pack="off"), s, progress=False)
        assert free.threads == 2 and seen[-1] == [2, 2, 2, 2]  # its share at the start, kept while it trains
        assert all(counts == [1, 1, 1, 1] for counts in seen[:-1]), seen
        with pytest.raises(ConfigError, match="trains at 1 threads"):
            run_study(StudySpec(experiment="quiet", grid=grid, pack="off", threads=2), s, progress=False)
        assert run_study(StudySpec(experiment="quiet", grid=grid, pack="off"), s, progress=False).threads == 1
    finally:
        torch.set_num_threads(before)
        for p in others:
            p.kill()
            p.wait()
    client = MlflowClient(s.tracking_uri)

    def runs(name):
        exp = client.get_experiment_by_name(name)
        return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])
                if r.data.tags.get("bench.role") == "trial"}

    quiet, busy = runs("quiet"), runs("busy")
    assert sorted(quiet) == sorted(busy) and len(quiet) == 2
    timing = ("seconds", "trial_seconds")
    for name, a in quiet.items():
        b = busy[name]
        ma = {k: v for k, v in a.data.metrics.items() if not k.endswith(timing)}
        assert ma == {k: v for k, v in b.data.metrics.items() if not k.endswith(timing)}  # bitwise
        for r in (a, b):
            assert r.data.tags["bench.threads"] == "1" and r.data.tags["bench.pack_size"] == "1"
            assert r.data.tags["bench.pack_id"] and r.data.tags["bench.device"] == "cpu"
    assert {r.data.tags["bench.threads"] for r in runs("free").values()} == {"2"}


def test_a_worker_waits_for_workers_started_before_it_that_are_still_starting(monkeypatch, tmp_path):
    """Two earlier workers fill two cores, but one is still reading its study file (pending)
    and, in the second case, the other has not registered at all yet (same command line):
    ``crowded`` waits for them instead of missing them, and is 0 once it has waited enough."""
    import threading
    import time

    monkeypatch.setattr(threads.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    a, b = _sleepers(2)
    try:
        me = max(a.pid, b.pid) + 1
        monkeypatch.setattr(threads, "_me", lambda: me)
        reg = threads._registry()
        key = threads.study_key("journal:x", "s")

        def later(body):  # worker b says which study it works on 0.3 s from now
            threading.Timer(0.3, lambda: (reg / str(b.pid)).write_text(body)).start()

        (reg / str(a.pid)).write_text(key)
        (reg / str(b.pid)).write_text(threads._PENDING)
        later(key)
        t0 = time.monotonic()
        assert threads.crowded(key) == 2 and time.monotonic() - t0 >= 0.25
        (reg / str(b.pid)).unlink()
        monkeypatch.setattr(threads, "_cmdline", lambda pid: b"bench grid s.yaml" if pid in (b.pid, me) else b"x")
        later(key)
        assert threads.crowded(key) == 2  # the same command, not registered yet: waited for
        (reg / str(b.pid)).unlink()
        monkeypatch.setattr(threads, "_cmdline", lambda pid: b"bench grid s.yaml" if pid == me else b"x")
        t0 = time.monotonic()
        assert threads.crowded(key) == 0 and time.monotonic() - t0 < 0.25  # nobody starting: no wait
        (reg / str(b.pid)).write_text(threads._PENDING)  # pending for ever: waits PENDING_WAIT_S, then 0
        monkeypatch.setattr(threads, "PENDING_WAIT_S", 0.3)
        assert threads.crowded(key) == 0
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
