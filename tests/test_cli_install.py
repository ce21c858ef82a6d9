"""`./dev.sh` picks the torch build for the machine, and installs nothing twice.

Runs the real script with a fake `nvidia-smi` first on PATH (a GPU or none), PyTorch's
CPU index played by a local HTTP server (answering, refusing, or silent), and for `setup`
a fake virtualenv whose `python` only records the pip commands it is given.
"""

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

DEV = Path(__file__).resolve().parents[1] / "dev.sh"
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU index is chosen on Linux only")


class Index:
    """A package index on loopback that counts the requests it gets."""

    def __init__(self, root: Path):
        (root / "whl" / "cpu" / "torch").mkdir(parents=True)
        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *a):
                requests.append(self.path)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/whl/cpu"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "index")
    yield idx
    idx.server.shutdown()


def dev(tmp_path, *args, gpu: bool, **env):
    """Run ``dev.sh args`` with a fake nvidia-smi that finds a GPU or not."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "nvidia-smi").write_text("#!/bin/sh\n" + ("echo 'GPU 0: NVIDIA H100'\n" if gpu else "exit 9\n"))
    (fake / "nvidia-smi").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in ("TORCH_SPEC", "HAS_NVIDIA_GPU", "TORCH_VERSION", "VENV")}
    r = subprocess.run(["bash", str(DEV), *args], capture_output=True, text=True, timeout=60,
                       env={**base, "PATH": f"{fake}:{os.environ['PATH']}", **env})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip(), r.stderr


def test_no_gpu_takes_the_cpu_index(tmp_path, index):
    out, _ = dev(tmp_path, "torch-plan", gpu=False, TORCH_CPU_INDEX=index.url)
    assert out == f"cpu: pip install torch==2.14.1 torchvision==0.29.1 --index-url {index.url}"
    assert index.requests  # it asked the index


def test_a_gpu_takes_the_default_build_without_probing(tmp_path, index):
    out, _ = dev(tmp_path, "torch-plan", gpu=True, TORCH_CPU_INDEX=index.url)
    assert out == "default: pip install torch==2.14.1 torchvision==0.29.1"
    assert index.requests == []


def test_torch_spec_wins(tmp_path, index):
    out, _ = dev(tmp_path, "torch-plan", gpu=False, TORCH_CPU_INDEX=index.url,
                 TORCH_SPEC="torch==2.6.0 --index-url https://example.invalid/x")
    assert out == "custom: pip install torch==2.6.0 --index-url https://example.invalid/x"
    assert index.requests == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cpu_index_falls_back_and_says_so(tmp_path):
    out, err = dev(tmp_path, "torch-plan", gpu=False, TORCH_CPU_INDEX=f"http://127.0.0.1:{closed_port()}/whl/cpu")
    assert out == "cpu: pip install torch==2.14.1 torchvision==0.29.1"
    assert "not reachable" in err and "configured package index" in err


def test_a_silent_cpu_index_times_out_quickly(tmp_path):
    with socket.socket() as s:  # accepts connections, never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        out, err = dev(tmp_path, "torch-plan", gpu=False, PROBE_TIMEOUT="1",
                       TORCH_CPU_INDEX=f"http://127.0.0.1:{s.getsockname()[1]}/whl/cpu")
    assert out == "cpu: pip install torch==2.14.1 torchvision==0.29.1" and "1 s timeout" in err


def test_setup_installs_once(tmp_path, index):
    """`setup` installs torch first (from the CPU index here), then the project; a second
    run installs nothing and asks no index."""
    venv, log = tmp_path / "venv", tmp_path / "pip.log"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (venv / "bin" / "python").chmod(0o755)
    env = {"VENV": str(venv), "TORCH_CPU_INDEX": index.url}
    dev(tmp_path, "setup", gpu=False, **env)
    calls = log.read_text().splitlines()
    assert calls == ["-m pip install -q --upgrade pip",
                     f"-m pip install -q torch==2.14.1 torchvision==0.29.1 --index-url {index.url}",
                     "-m pip install -q -e .[dev]"]
    asked = len(index.requests)
    dev(tmp_path, "setup", gpu=False, **env)
    assert log.read_text().splitlines() == calls and len(index.requests) == asked
    dev(tmp_path, "setup", gpu=True, **env)  # another machine kind: installs again
    assert log.read_text().splitlines()[3:] == ["-m pip install -q --upgrade pip", "-m pip install -q torch==2.14.1 torchvision==0.29.1",
                                                "-m pip install -q -e .[dev]"]
