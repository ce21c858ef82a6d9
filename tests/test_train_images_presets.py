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


#: The official README's ResNet-50 commands (batch, warm-up epochs, StepLR step) where it has one.
RESNET50 = {"cub": (120, 5, 5), "cars": (120, 5, 10)}
OFFICIAL_STEP = {"cub": 10, "cars": 20, "sop": 20, "inshop": 20}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_preset_resolves_every_cell(path):
    spec = load_spec(path)
    assert spec.kind == "grid" and [v.study_name.rsplit(".", 1)[1] for v in spec.expand()] == [
        "bn_inception", "resnet50", "vit_small_patch16"]
    parity = not path.stem.endswith("_honest")
    for variant in spec.expand():
        backbone = variant.study_name.rsplit(".", 1)[1]
        for cell in variant.cells():
            cfg = resolve_trial({}, variant.trial, dotted=cell)
            ds = cfg.data.name
            assert cfg.model.backbone == backbone and cfg.model.pool == "gap_gmp" and cfg.model.head == "linear"
            assert cfg.model.weights == {"vit_small_patch16": "dino"}.get(backbone, "imagenet")
            assert cfg.model.embedding_dim == 512 and cfg.loss.name == "proxy_anchor"
            assert (cfg.loss.alpha, cfg.loss.delta) == (32.0, 0.1)
            assert cfg.train.weight_decay == 1e-4 and cfg.train.grad_clip == 10.0 and cfg.data.image_size == 224
            assert cfg.train.lr == (6e-4 if ds in ("sop", "inshop") else 1e-4)
            assert cfg.train.freeze_bn == (ds in ("cub", "cars"))
            batch, warm, step = (RESNET50[ds] if backbone == "resnet50" and ds in RESNET50
                                 else (180, 1, OFFICIAL_STEP[ds]))
            assert (cfg.train.batch_size, cfg.train.warmup_epochs, cfg.train.lr_step) == (batch, warm, step)
            assert cfg.eval.select_on == ("test" if parity else "val")
            assert (cfg.data.val_fraction == 0.0) == parity
    text = path.read_text()
    assert "BN-Inception" in text and ("PAPER PARITY" in text) == parity


def test_bn_inception_presets_get_the_caffe_preprocessing_from_their_weights():
    from bench.models.weights import WEIGHTS

    spec = load_spec(PAPER / "cub.yaml").expand()[0]
    cfg = resolve_trial({}, spec.trial)
    pre = WEIGHTS[(cfg.model.backbone, cfg.model.weights)].preprocess
    assert (pre.channels, pre.value_range, pre.mean, pre.std, pre.input_size) == ("BGR", 255.0, (104, 117, 128), (1, 1, 1), 224)
