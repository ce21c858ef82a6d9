"""Every parameter of model and loss is trained, for every registered loss (the official
Proxy-NCA once trained frozen proxies), and the proxies' learning-rate multiplier is recorded."""

from __future__ import annotations

import pytest
import torch

import bench.train as train_mod
from bench.config import resolve_trial
from bench.losses import LOSSES, list_losses
from bench.train import run_trial

#: Parameters that are frozen on purpose: Smooth Proxy-Anchor's phase-1 confidence module
#: (trained before phase 2, then only read).
FROZEN_ON_PURPOSE = ("confidence_module.",)


def _spy_optimizer(monkeypatch):
    seen = {}
    real = train_mod.make_optimizer

    def spy(model, loss_fn, train_cfg):
        opt = real(model, loss_fn, train_cfg)
        named = {f"model.{n}": p for n, p in model.named_parameters()} | {f"loss.{n}": p for n, p in loss_fn.named_parameters()}
        seen.update(opt=opt, named=named, start={n: p.detach().clone() for n, p in named.items()})
        return opt

    monkeypatch.setattr(train_mod, "make_optimizer", spy)
    return seen


@pytest.mark.parametrize("loss", list_losses())
def test_every_parameter_is_in_the_optimiser_and_moves(loss, tiny_trial, monkeypatch):
    seen = _spy_optimizer(monkeypatch)
    tiny_trial["loss"] = {"name": loss}
    tiny_trial["train"]["epochs"] = 2
    run_trial(resolve_trial(tiny_trial))
    in_opt = {id(p) for g in seen["opt"].param_groups for p in g["params"]}
    frozen = [n for n, p in seen["named"].items() if id(p) not in in_opt]
    assert all(n.startswith(tuple("loss." + f for f in FROZEN_ON_PURPOSE)) for n in frozen), frozen
    trained = [n for n in seen["named"] if n not in frozen]
    still = [n for n in trained if torch.equal(seen["named"][n].detach(), seen["start"][n])]
    assert not still, f"in the optimiser but never moved: {still}"
    if LOSSES.get(loss).kind == "proxy":
        assert any(n.startswith("loss.") for n in trained), "a proxy loss without trained proxies"


@pytest.mark.parametrize("loss", list_losses("proxy"))
def test_proxy_lr_mult_is_recorded_and_used(loss, tiny_trial, monkeypatch):
    seen = _spy_optimizer(monkeypatch)
    tiny_trial["loss"] = {"name": loss}
    tiny_trial["train"].update(epochs=1, proxy_lr_mult=37.0)
    cfg = resolve_trial(tiny_trial)
    assert cfg.flat()["train.proxy_lr_mult"] == 37.0  # logged with the run's params
    run_trial(cfg)
    groups = {g["name"]: g["lr"] for g in seen["opt"].param_groups}
    assert groups["loss"] == pytest.approx(cfg.train.lr * 37.0) and groups["head"] == cfg.train.lr


def test_image_model_groups_backbone_head_and_proxies(monkeypatch):
    seen = _spy_optimizer(monkeypatch)
    cfg = resolve_trial({}, dotted={
        "data.name": "digits", "model.backbone": "small_cnn", "model.head": "linear", "model.embedding_dim": 16,
        "train.batch_size": 64, "train.epochs": 1, "train.backbone_lr_mult": 0.5, "eval.ks": [1]})
    run_trial(cfg)
    groups = {g["name"]: (g["lr"], len(g["params"])) for g in seen["opt"].param_groups}
    lr = cfg.train.lr
    assert groups["backbone"][0] == lr * 0.5 and groups["head"][0] == lr and groups["loss"][0] == lr * 100
    in_opt = {id(p) for g in seen["opt"].param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in seen["named"].values())
    moved = [torch.equal(p.detach(), seen["start"][n]) for n, p in seen["named"].items()]
    assert not any(moved)
