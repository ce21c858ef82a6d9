"""Named weights fetched the real way, from a server on loopback: never from the network.

Per row of the weights table: random weights saved in the published layout (classifier
included), served under the table's file name, fetched through ``model.weights`` into
``$TORCH_HOME/hub/checkpoints``, checked against the served file's SHA-256 (swapped into the
row by the test), loaded, and the forward equals the saved module's. Then what goes wrong:
a failed check or no server is one line naming the URL and where to put the file, and no
partial file stays in the cache.
"""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch

from bench.models import create_backbone
from bench.models.bn_inception import module_to_published
from bench.models.weights import WEIGHTS, WeightsError, file_sha256, override

FAST = {("resnet18", "imagenet"), ("bn_inception", "imagenet"), ("vit_small_patch16", "dino")}
ROWS = [pytest.param(b, n, marks=[] if (b, n) in FAST else [pytest.mark.slow], id=f"{b}-{n}") for b, n in sorted(WEIGHTS)]
CLASSES = {"imagenet": 1000, "in21k": 21843}


class Server:
    """Serves a folder on 127.0.0.1 and counts the requests."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *a):
                requests.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(tmp_path):
    (tmp_path / "www").mkdir()
    s = Server(tmp_path / "www")
    yield s
    s.httpd.shutdown()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def restore_table():
    saved = dict(WEIGHTS)
    yield
    WEIGHTS.clear()
    WEIGHTS.update(saved)


def published_file(backbone: str, name: str, src: torch.nn.Module, path: Path) -> None:
    """``src``'s weights as the published file holds them, with a random classifier."""
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    g = torch.Generator().manual_seed(1)
    width = src.out_features
    if backbone.startswith("resnet"):
        sd.update({"fc.weight": torch.randn(1000, width, generator=g), "fc.bias": torch.randn(1000, generator=g)})
    elif backbone == "bn_inception":
        sd = module_to_published(sd)
        sd.update({"last_linear.weight": torch.randn(1000, 1024, generator=g), "last_linear.bias": torch.randn(1000, generator=g)})
    elif name in CLASSES:  # timm ViT with its head; DINO's backbone-only file has none
        n = CLASSES[name]
        sd.update({"head.weight": torch.randn(n, width, generator=g), "head.bias": torch.randn(n, generator=g)})
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)


@pytest.mark.parametrize("backbone, name", ROWS)
def test_round_trip_through_the_table(backbone, name, server, hub, tmp_path, restore_table):
    entry = WEIGHTS[(backbone, name)]
    torch.manual_seed(7)
    src = create_backbone(backbone).eval()
    served = tmp_path / "www" / entry.file
    published_file(backbone, name, src, served)
    override(backbone, name, url=f"{server.url}/{entry.file}", sha256=file_sha256(served))
    torch.manual_seed(8)
    dst = create_backbone(backbone, weights=name).eval()
    assert (hub / entry.file).is_file() and list(hub.iterdir()) == [hub / entry.file]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    info = dst.weights_info
    assert (info["weights"], info["weights_url"], info["weights_sha256"]) == (name, f"{server.url}/{entry.file}",
                                                                             file_sha256(served))
    assert info["preprocess"] == entry.preprocess.describe() and dst.preprocess == entry.preprocess
    asked = len(server.requests)
    create_backbone(backbone, weights=name)  # fetched once: the cached file is used (and checked again)
    assert len(server.requests) == asked == 1


def test_pretrained_true_is_the_default_weights_and_a_bad_checksum_leaves_nothing(server, hub, tmp_path, restore_table):
    entry = WEIGHTS[("resnet18", "imagenet")]
    torch.manual_seed(7)
    src = create_backbone("resnet18").eval()
    served = tmp_path / "www" / entry.file
    published_file("resnet18", "imagenet", src, served)
    url = f"{server.url}/{entry.file}"
    override("resnet18", "imagenet", url=url, sha256="0" * 64)
    with pytest.raises(WeightsError) as e:
        create_backbone("resnet18", pretrained=True)
    msg = str(e.value)
    assert url in msg and str(hub / entry.file) in msg and "checksum" in msg and "\n" not in msg
    assert not hub.exists() or list(hub.iterdir()) == []  # no partial or wrong file stays
    override("resnet18", "imagenet", sha256=file_sha256(served)[:8])  # a published prefix, as torchvision's
    m = create_backbone("resnet18", pretrained=True)
    assert m.weights_info["weights"] == "imagenet" and m.weights_info["weights_sha256"] == file_sha256(served)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_is_one_line_naming_the_url_and_the_place(hub, restore_table):
    url = f"http://127.0.0.1:{closed_port()}/bn_inception-52deb4733.pth"
    override("bn_inception", "imagenet", url=url)
    with pytest.raises(WeightsError) as e:
        create_backbone("bn_inception", weights="imagenet")
    msg = str(e.value)
    assert msg.startswith(f"cannot fetch {url}") and f"put it at {hub / 'bn_inception-52deb4733.pth'}" in msg
    assert "\n" not in msg and (not hub.exists() or list(hub.iterdir()) == [])


def test_a_url_is_fetched_and_checked_by_the_hash_in_its_name(server, hub, tmp_path):
    torch.manual_seed(7)
    src = create_backbone("resnet18").eval()
    tmp = tmp_path / "x.pth"
    published_file("resnet18", "imagenet", src, tmp)
    good = f"resnet18-{file_sha256(tmp)[:8]}.pth"
    tmp.rename(tmp_path / "www" / good)
    m = create_backbone("resnet18", weights=f"{server.url}/{good}")
    assert m.weights_info["weights"] == "url" and (hub / good).is_file()
    (tmp_path / "www" / "resnet18-00000000.pth").write_bytes((tmp_path / "www" / good).read_bytes())
    with pytest.raises(WeightsError, match="fails its checksum"):
        create_backbone("resnet18", weights=f"{server.url}/resnet18-00000000.pth")
    assert not (hub / "resnet18-00000000.pth").exists()


def test_the_table_is_torchvisions_and_the_published_addresses():
    """The torchvision rows are the URLs of torchvision's own weight enums (the papers'
    IMAGENET1K_V1), their checksums the hash prefixes those URLs carry."""
    from torchvision import models

    for arch in ("resnet18", "resnet34", "resnet50", "resnet101"):
        enum = getattr(models, arch.replace("resnet", "ResNet") + "_Weights").IMAGENET1K_V1
        row = WEIGHTS[(arch, "imagenet")]
        assert row.url == enum.url and row.url.endswith(f"-{row.sha256}.pth") and row.file == enum.url.rsplit("/", 1)[1]
    assert WEIGHTS[("bn_inception", "imagenet")].url.endswith("bn_inception-52deb4733.pth")
    assert all(row.source for row in WEIGHTS.values())


def test_a_local_file_in_the_published_layout_loads_by_path(tmp_path):
    """``model.weights: PATH`` reads the backbone's published layout too (BN-Inception's
    ``(1, C)`` BatchNorm tensors, classifier included), and records the file."""
    torch.manual_seed(7)
    src = create_backbone("bn_inception").eval()
    path = tmp_path / "bn_inception-52deb4733.pth"
    published_file("bn_inception", "imagenet", src, path)
    dst = create_backbone("bn_inception", weights=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    assert dst.weights_info["weights"] == "file" and dst.weights_info["weights_sha256"] == file_sha256(path)
    assert dst.weights_info["dropped"] == ["last_linear.weight", "last_linear.bias"]
