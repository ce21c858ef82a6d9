"""BN-Inception (Inception v2, Ioffe & Szegedy 2015), the Proxy-Anchor paper's backbone.

No maintained library has this network, so the suite defines it, written from a reading of
``pretrainedmodels``' ``bninception.py`` (a port of the Caffe model) and the official
Proxy-Anchor code's ``net/bn_inception.py``. The module names are theirs
(``conv1_7x7_s2``, ``conv1_7x7_s2_bn``, ``inception_3a_1x1``, ``inception_3a_double_3x3_2_bn``,
...), flat at the top level, so the published checkpoint
(``bn_inception-52deb4733.pth``) loads key for key. Two differences from a PyTorch-native
file, both handled by :func:`published_to_module`: its BatchNorm tensors are stored as
``(1, C)`` (the official code squeezes them the same way) and it has no
``num_batches_tracked`` buffers (older than PyTorch 0.4). Its classifier (``last_linear``,
1000 x 1024) is dropped; the suite pools the ``(B, 1024, 7, 7)`` map at 224 px itself.

Every convolution has a bias and is followed by BatchNorm (eps 1e-5, PyTorch's default
momentum 0.1 as in ``pretrainedmodels``; the official Proxy-Anchor code passes
``momentum=0.9``, which only matters where BatchNorm is not frozen: its SOP / In-Shop
recipe) and ReLU. An
inception block concatenates up to four branches: ``1x1``; ``3x3_reduce -> 3x3``;
``double_3x3_reduce -> double_3x3_1 -> double_3x3_2``; pool (3x3 average, stride 1, or
max) then ``pool_proj`` (1x1). The reduction blocks 3c and 4e have no 1x1 branch, stride 2
on the last conv of the two 3x3 branches, and a bare 3x3/2 max pool. Input: BGR in
[0, 255] minus the mean (104, 117, 128) (the weights' preprocessing, :mod:`bench.models.weights`).
"""

from __future__ import annotations

import torch
from torch import nn

#: name, in, 1x1, 3x3 reduce, 3x3, double reduce, double 3x3, pool ("avg" | "max" | "max1"), proj, stride
BLOCKS = (
    ("3a", 192, 64, 64, 64, 64, 96, "avg", 32, 1),
    ("3b", 256, 64, 64, 96, 64, 96, "avg", 64, 1),
    ("3c", 320, 0, 128, 160, 64, 96, "max", 0, 2),
    ("4a", 576, 224, 64, 96, 96, 128, "avg", 128, 1),
    ("4b", 576, 192, 96, 128, 96, 128, "avg", 128, 1),
    ("4c", 576, 160, 128, 160, 128, 160, "avg", 128, 1),
    ("4d", 608, 96, 128, 192, 160, 192, "avg", 128, 1),
    ("4e", 608, 0, 128, 192, 192, 256, "max", 0, 2),
    ("5a", 1056, 352, 192, 320, 160, 224, "avg", 128, 1),
    ("5b", 1024, 352, 192, 320, 192, 224, "max1", 128, 1),
)
OUT_FEATURES = 1024


class BNInception(nn.Module):
    """The BN-Inception trunk: image ``(B, 3, H, W)`` -> feature map ``(B, 1024, H/32, W/32)``."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self._conv("conv1_7x7_s2", 3, 64, 7, 2)
        self.pool1_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._conv("conv2_3x3_reduce", 64, 64, 1)
        self._conv("conv2_3x3", 64, 192, 3)
        self.pool2_3x3_s2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name, cin, c1, r3, c3, rd, cd, pool, proj, stride in BLOCKS:
            p = f"inception_{name}_"
            if c1:
                self._conv(p + "1x1", cin, c1, 1)
            self._conv(p + "3x3_reduce", cin, r3, 1)
            self._conv(p + "3x3", r3, c3, 3, stride)
            self._conv(p + "double_3x3_reduce", cin, rd, 1)
            self._conv(p + "double_3x3_1", rd, cd, 3)
            self._conv(p + "double_3x3_2", cd, cd, 3, stride)
            if pool == "avg":
                setattr(self, p + "pool", nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True))
            elif pool == "max1":
                setattr(self, p + "pool", nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True))
            else:
                setattr(self, p + "pool", nn.MaxPool2d(3, stride=2, ceil_mode=True))
            if proj:
                self._conv(p + "pool_proj", cin, proj, 1)

    def _conv(self, name: str, cin: int, cout: int, k: int, stride: int = 1) -> None:
        setattr(self, name, nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2))
        setattr(self, name + "_bn", nn.BatchNorm2d(cout, eps=1e-5))

    def _cbr(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.relu(getattr(self, name + "_bn")(getattr(self, name)(x)))

    def _block(self, name: str, x: torch.Tensor, has_1x1: bool, has_proj: bool) -> torch.Tensor:
        p = f"inception_{name}_"
        out = [self._cbr(p + "1x1", x)] if has_1x1 else []
        out.append(self._cbr(p + "3x3", self._cbr(p + "3x3_reduce", x)))
        out.append(self._cbr(p + "double_3x3_2", self._cbr(p + "double_3x3_1", self._cbr(p + "double_3x3_reduce", x))))
        pooled = getattr(self, p + "pool")(x)
        out.append(self._cbr(p + "pool_proj", pooled) if has_proj else pooled)
        return torch.cat(out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1_3x3_s2(self._cbr("conv1_7x7_s2", x))
        x = self.pool2_3x3_s2(self._cbr("conv2_3x3", self._cbr("conv2_3x3_reduce", x)))
        for name, _, c1, *_rest, proj, _stride in BLOCKS:
            x = self._block(name, x, bool(c1), bool(proj))
        return x


def published_to_module(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published file's tensors in this module's shapes: ``(1, C)`` BatchNorm tensors
    squeezed to ``(C,)``, as the official code does on load."""
    return {k: v.squeeze(0) if v.ndim == 2 and v.shape[0] == 1 else v for k, v in sd.items()}


def module_to_published(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse (tests write a file in the published layout): BN tensors as ``(1, C)``,
    no ``num_batches_tracked``."""
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        out[k] = v[None] if "_bn." in k else v
    return out


def bn_inception(name: str = "bn_inception") -> nn.Module:
    m = BNInception()
    m.impl = "bench"
    return m
