import pytest

from bench.config import ConfigError, load_settings, merge, resolve_trial, set_dotted, validate_trial


@pytest.mark.parametrize(
    "raw, field, hint",
    [
        ({"train": {"bach_size": 3}}, "train.bach_size", "batch_size"),
        ({"train": {"epochs": "abc"}}, "train.epochs", "valid integer"),
        ({"train": {"batch_size": 0}}, "train.batch_size", "greater than or equal to 2"),
        ({"train": {"batch_size": -5}}, "train.batch_size", "greater than or equal to 2"),
        ({"loss": {"name": "proxy_anchor", "alpha": 0}}, "loss.alpha", "greater than 0"),
        ({"loss": {"name": "proxy_anchor", "alpha": -1.0}}, "loss.alpha", "greater than 0"),
        ({"loss": {"name": "no_such_loss"}}, "loss.name", "proxy_anchor"),
        ({"loss": {"name": "proxy_anchor", "gamma": 1}}, "loss.gamma", "alpha, delta"),
        ({"data": {"name": "imagenet"}}, "data.name", "synthetic"),
        ({"eval": {"ks": [0, 1]}}, "eval.ks", "positive integers"),
    ],
)
def test_bad_config_names_field_and_fix(raw, field, hint):
    with pytest.raises(ConfigError) as e:
        validate_trial(raw)
    msg = str(e.value)
    assert field in msg and hint in msg


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as e:
        validate_trial({"train": {"batch_size": 0, "epochs": 0}, "loss": {"alpha": -1}})
    msg = str(e.value)
    assert "train.batch_size" in msg and "train.epochs" in msg and "loss.alpha" in msg


def test_dotted_overrides_and_yaml_values():
    cfg = resolve_trial({"loss": {"name": "proxy_anchor", "alpha": 32}}, dotted={"loss.alpha": 64, "train.batch_size": 60})
    assert cfg.loss.alpha == 64.0 and cfg.train.batch_size == 60
    assert cfg.flat()["loss.alpha"] == 64.0 and cfg.flat()["eval.ks"] is None  # the dataset's protocol


def test_changing_loss_name_drops_other_loss_params():
    base = {"loss": {"name": "proxy_anchor", "alpha": 16, "delta": 0.2}}
    assert merge(base, {"loss": {"name": "x"}})["loss"] == {"name": "x"}
    assert merge(base, {"loss": {"alpha": 8}})["loss"] == {"name": "proxy_anchor", "alpha": 8, "delta": 0.2}
    d = {"loss": {"name": "proxy_anchor", "alpha": 16}}
    set_dotted(d, "loss.name", "other")
    assert d["loss"] == {"name": "other"}


def test_settings_file_and_env_override(tmp_path, monkeypatch):
    p = tmp_path / "b.yaml"
    p.write_text("tracking_uri: sqlite:///x.db\ntrial: {train: {epochs: 2}}\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    s = load_settings(p)
    assert s.tracking_uri == "sqlite:///x.db" and s.trial["train"]["epochs"] == 2
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert load_settings(p).tracking_uri == "http://127.0.0.1:5999"
    p.write_text("tracking_urі: typo\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(p)


def test_repo_bench_yaml_is_valid():
    from pathlib import Path

    s = load_settings(Path(__file__).parent.parent / "bench.yaml")
    cfg = resolve_trial(s.trial)
    assert cfg.data.name == "synthetic" and cfg.loss.name == "proxy_anchor"
