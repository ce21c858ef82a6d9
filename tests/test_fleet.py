"""The README's "several machines" recipe on loopback: PostgreSQL for Optuna and for
MLflow, one ``bench server``, three workers logging over HTTP, one of them killed
mid-trial; the others take its cell over (heartbeat), and a plain rerun finds nothing
left: every cell exactly once, nothing RUNNING."""

from __future__ import annotations

import pytest

from fleet_kit import Project, bench_server, postgres_database


def test_server_command_keeps_the_password_off_the_command_line():
    import argparse

    from bench.cli.server import server_command

    args = argparse.Namespace(backend_store_uri="postgresql://u:s3cret@db/mlflow", artifacts_destination="/srv/a",
                              host="0.0.0.0", port=5000, workers=3, pool_size=4, extra=[])
    cmd, env = server_command(args, "unused", "unused")
    assert "s3cret" not in " ".join(cmd) and "--serve-artifacts" in cmd
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg")  # the installed driver
    assert env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] == "4"


@pytest.mark.slow
def test_three_workers_one_killed_over_a_tracking_server(tmp_path, tiny_trial, postgres_server_url, monkeypatch):
    with bench_server(postgres_database(postgres_server_url), tmp_path / "artifacts") as url:
        grid = {"loss.alpha": [8.0, 16.0, 32.0], "loss.delta": [0.0, 0.2]}
        p = Project(tmp_path, tiny_trial, postgres_database(postgres_server_url), tracking_uri=url, grid=grid)
        outs = p.run(["mid_epoch:kill", None, None])
        assert outs[0][0] == -9 and [rc for rc, _ in outs[1:]] == [0, 0], [o[-1500:] for _, o in outs]
        first = p.census()
        assert first.exactly_once(), first.row()  # the live workers took the dead one's cell over
        p.rerun_in_process(monkeypatch)
        again = p.census()
        assert again.exactly_once() and again.complete == first.complete, again.row()
        assert again.run_statuses["KILLED"] == 1
