"""The paper presets (studies/paper/*.yaml) parse and every cell resolves, without data."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import resolve_trial
from bench.studies import load_spec

PAPER = Path(__file__).resolve().parents[1] / "studies" / "paper"
FILES = sorted(PAPER.glob("*.yaml"))


def test_all_four_datasets_have_parity_and_honest_presets():
    names = {p.stem for p in FILES}
    for ds in ("cub", "cars", "sop", "inshop"):
        assert {ds, f"{ds}_honest"} <= names


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_preset_resolves_every_cell(path):
    spec = load_spec(path)
    assert spec.kind == "grid" and spec.cells()
    parity = not path.stem.endswith("_honest")
    for cell in spec.cells():
        cfg = resolve_trial({}, spec.trial, dotted=cell)
        assert cfg.model.backbone == "resnet50" and cfg.model.pool == "gap_gmp" and cfg.model.head == "linear"
        assert cfg.model.embedding_dim == 512 and cfg.model.pretrained
        assert cfg.loss.name == "proxy_anchor" and (cfg.loss.alpha, cfg.loss.delta) == (32.0, 0.1)
        assert cfg.train.weight_decay == 1e-4 and cfg.train.warmup_epochs == 1 and cfg.train.grad_clip == 10.0
        assert cfg.train.lr_step and cfg.data.image_size == 224
        assert cfg.train.lr == (6e-4 if cfg.data.name in ("sop", "inshop") else 1e-4)
        assert cfg.train.batch_size == (150 if cfg.data.name == "sop" else 180)
        assert cfg.eval.select_on == ("test" if parity else "val")
        assert (cfg.data.val_fraction == 0.0) == parity
    text = path.read_text()
    assert "BN-Inception" in text and ("PAPER PARITY" in text) == parity
