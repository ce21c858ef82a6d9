"""Backbones (registry, torchvision ResNets), local weights files, pooling, head."""

from __future__ import annotations

import pytest
import torch

from bench.models import EmbeddingNet, create_backbone, freeze_batchnorm, list_backbones
from bench.models.backbones import clean_state_dict
from bench.models.heads import EmbeddingHead, GlobalPool
from bench.models.registry import BACKBONES, BackboneSpec
from bench.models.weights import WeightsError

# torchvision's parameter counts (torchvision.models.resnetXX().parameters()) minus fc.
TV_PARAMS_NO_FC = {"resnet18": 11_689_512 - (512 * 1000 + 1000), "resnet50": 25_557_032 - (2048 * 1000 + 1000)}


def tiny_net(name):
    return torch.nn.Conv2d(3, 4, 1)


def test_registry_lists_and_rejects():
    assert {"small_cnn", "resnet18", "resnet50", "bn_inception", "vit_small_patch16"} <= set(list_backbones())
    with pytest.raises(KeyError, match="unknown model.backbone 'vgg'.*resnet18.*timm:<name>"):
        create_backbone("vgg")


def test_register_backbone_plugs_in():
    BACKBONES.register("tiny_test_net", BackboneSpec("tests.test_models:tiny_net", 4))
    try:
        m = create_backbone("tiny_test_net")
        assert m.out_features == 4 and m(torch.zeros(1, 3, 5, 5)).shape == (1, 4, 5, 5)
    finally:
        BACKBONES.unregister("tiny_test_net")


def test_backbone_names_are_checked_in_one_place_without_torch():
    """Config validation asks the registry; neither torch nor a builder is imported."""
    import subprocess
    import sys

    code = ("import sys; from bench.config import resolve_trial, ConfigError\n"
            "resolve_trial({}, dotted={'model.backbone': 'bn_inception', 'model.weights': 'imagenet'})\n"
            "resolve_trial({}, dotted={'model.backbone': 'timm:resnet18'})\n"
            "try:\n  resolve_trial({}, dotted={'model.backbone': 'resnet50', 'model.weights': 'dino'}); raise SystemExit(3)\n"
            "except ConfigError as e: assert 'has imagenet' in str(e), e\n"
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_small_cnn_digits_and_rgb():
    m = create_backbone("small_cnn")
    assert m(torch.zeros(2, 3, 8, 8)).shape == (2, 128, 4, 4)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 128, 16, 16)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_resnet_is_torchvisions_without_its_classifier(arch):
    m = create_backbone(arch)
    assert m.impl == "torchvision"
    sd = m.state_dict()
    assert sum(p.numel() for p in m.parameters()) == TV_PARAMS_NO_FC[arch]
    assert not any(k.startswith(("fc.", "avgpool")) for k in sd)
    common = ["conv1.weight", "bn1.weight", "bn1.running_mean", "bn1.num_batches_tracked",
              "layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
              "layer4.1.bn2.bias"]
    for k in common:
        assert k in sd, k
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    if arch == "resnet18":
        assert sd["layer1.0.conv1.weight"].shape == (64, 64, 3, 3)
        assert sd["layer4.0.downsample.0.weight"].shape == (512, 256, 1, 1)
        assert "layer1.0.conv3.weight" not in sd
    else:
        assert sd["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
        assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
        assert sd["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # v1.5: stride on the 3x3
        assert sd["layer4.2.bn3.weight"].shape == (2048,)
    out = m(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, m.out_features, 2, 2)


def _ckpt(tmp_path, sd, name="ck.pth"):
    p = tmp_path / name
    torch.save(sd, p)
    return p


def test_weights_round_trip_with_prefixes_and_classifier(tmp_path):
    torch.manual_seed(1)
    src = create_backbone("resnet18").eval()
    # A DataParallel-style checkpoint nested under "state_dict", with a classifier.
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    sd["module.fc.weight"], sd["module.fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = _ckpt(tmp_path, {"state_dict": sd, "epoch": 3})
    torch.manual_seed(2)
    dst = create_backbone("resnet18", weights=str(path)).eval()
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(src(x), dst(x))
    assert dst.weights_info["source"] == str(path) and len(dst.weights_info["weights_sha256"]) == 64
    assert dst.weights_info["weights"] == "file"
    assert dst.weights_info["dropped"] == ["fc.weight", "fc.bias"]


def test_weights_report_missing_and_unexpected(tmp_path):
    sd = create_backbone("resnet18").state_dict()
    partial = {k: v for k, v in sd.items() if not k.startswith("layer4")}
    with pytest.raises(WeightsError, match=r"missing key\(s\): layer4"):
        create_backbone("resnet18", weights=str(_ckpt(tmp_path, partial)))
    extra = dict(sd, **{"projector.weight": torch.zeros(3)})
    with pytest.warns(UserWarning, match="unexpected key.*projector.weight"):
        create_backbone("resnet18", weights=str(_ckpt(tmp_path, extra, "x.pth")))
    wrong = dict(sd, **{"conv1.weight": torch.zeros(64, 1, 7, 7)})
    with pytest.raises(WeightsError, match="shape mismatch.*conv1.weight"):
        create_backbone("resnet18", weights=str(_ckpt(tmp_path, wrong, "w.pth")))


class Evil:
    """Any non-tensor class: unpickling it would run code a weights-only load refuses."""


def test_weights_only_refuses_pickled_code(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "obj": Evil()}, p)
    with pytest.raises(WeightsError, match="weights-only"):
        create_backbone("resnet18", weights=str(p))


def test_missing_weights_file_is_a_clear_error():
    with pytest.raises(WeightsError, match="model.weights='nope.pth': no such file"):
        create_backbone("resnet50", weights="nope.pth")


def test_pretrained_finds_the_table_file_in_the_torch_hub_cache(tmp_path, monkeypatch):
    """A file already in ``$TORCH_HOME/hub/checkpoints`` is used (after its check), not fetched:
    here its check fails, and the message names the URL and where the file goes."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(create_backbone("resnet18").state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    with pytest.raises(WeightsError) as e:
        create_backbone("resnet18", pretrained=True)
    msg = str(e.value)
    assert "fails its checksum" in msg and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in msg and "\n" not in msg


def test_clean_state_dict_strips_stacked_prefixes():
    out, dropped = clean_state_dict({"module.backbone.conv1.weight": torch.zeros(1), "module.fc.bias": torch.zeros(1)})
    assert list(out) == ["conv1.weight"] and dropped == ["fc.bias"]


def test_gap_gmp_pool_and_linear_head():
    x = torch.randn(3, 5, 4, 4)
    torch.testing.assert_close(GlobalPool("gap_gmp")(x), x.mean((2, 3)) + x.amax((2, 3)))
    torch.testing.assert_close(GlobalPool("gap")(x), x.mean((2, 3)))
    net = EmbeddingNet(create_backbone("small_cnn"), EmbeddingHead(128, 16, "linear"))
    emb = net(torch.randn(4, 3, 8, 8))
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_head_inits_official_and_pytorch(kind):
    torch.manual_seed(0)
    official = EmbeddingHead(256, 128, kind, hidden_dim=256, init="official")
    last = official.net if kind == "linear" else official.net[-1]
    assert torch.count_nonzero(last.bias) == 0
    assert last.weight.std().item() == pytest.approx((2 / 128) ** 0.5, rel=0.03)  # kaiming normal, fan_out
    plain = EmbeddingHead(256, 128, kind, hidden_dim=256, init="pytorch")
    last = plain.net if kind == "linear" else plain.net[-1]
    bound = 1 / 256**0.5
    assert last.weight.abs().max() <= bound and last.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.03)
    assert torch.count_nonzero(last.bias) == 128 and last.bias.abs().max() <= bound
    with pytest.raises(ValueError, match="model.head_init 'xavier'"):
        EmbeddingHead(4, 4, kind, init="xavier")


def test_head_init_auto_is_official_only_when_the_backbone_trains():
    from bench.config import resolve_trial
    from bench.models import head_init

    cfg = resolve_trial({}).model
    assert (head_init(cfg, backbone_trains=True), head_init(cfg, backbone_trains=False)) == ("official", "pytorch")
    forced = resolve_trial({}, dotted={"model.head_init": "official"}).model
    assert head_init(forced, backbone_trains=False) == "official"


def test_freeze_batchnorm_keeps_statistics_and_affine_fixed():
    torch.manual_seed(0)
    net = EmbeddingNet(create_backbone("small_cnn"), EmbeddingHead(128, 16, "linear"))
    net.train()
    assert freeze_batchnorm(net.backbone) == 3
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net(torch.randn(8, 3, 8, 8) * 3 + 1).sum().backward()
    opt.step()
    after = net.state_dict()
    for k in before:
        if ".1." in k or k.startswith("backbone.features.4.") or k.startswith("backbone.features.8."):
            assert torch.equal(before[k], after[k]), k  # BN: running stats and affine
    assert not torch.equal(before["backbone.features.0.weight"], after["backbone.features.0.weight"])


def test_models_know_nothing_about_data():
    """Models take an input width, never a dataset: importing them loads no data code."""
    import subprocess
    import sys

    code = "import sys, bench.models; bad = [m for m in sys.modules if m.startswith(('bench.data', 'bench.inputs'))]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_owns_its_optimiser_groups_and_warmup():
    torch.manual_seed(0)
    net = EmbeddingNet(create_backbone("small_cnn"), EmbeddingHead(128, 16, "linear"), freeze_bn=True, warmup_epochs=1)
    groups = {g["name"]: g for g in net.optimizer_groups(1e-3, backbone_lr_mult=0.1)}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["head"]["lr"] == 1e-3
    bn = [p for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert bn and not any(p is q for p in bn for q in groups["backbone"]["params"])  # frozen BN: not trained
    conv = net.backbone.features[0].weight
    net.begin_epoch(1)
    assert net.training and not conv.requires_grad and all(not m.training for m in net.backbone.modules()
                                                             if isinstance(m, torch.nn.BatchNorm2d))
    net.begin_epoch(2)
    assert conv.requires_grad and not any(p.requires_grad for p in bn)
