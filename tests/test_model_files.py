"""Model files are untrusted: nothing is ever unpickled."""

from __future__ import annotations

import os

import pytest
import torch

from fpgaprint.compiler import modelio
from fpgaprint.core.errors import InputError


class _Payload:
    """Unpickling this runs a shell command (the attack: code execution from a .pt)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": modelio.FORMAT, "zoo": None, "module": _Payload(marker)}, path)
    return path, marker


def test_loading_a_pickle_payload_runs_nothing(evil):
    path, marker = evil
    with pytest.raises(InputError, match=r"evil\.pt: loading this file needs unpickling, which "
                                         r"runs code from it .* never unpickles"):
        modelio.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("argv", [
    ["build", "{evil}", "--out", "{tmp}/out"],
    ["fingerprint", "check", "{evil}", "{tmp}/fp.npz"],
    ["fingerprint", "generate", "{evil}", "--count", "4", "--out", "{tmp}/fp.npz"],
])
def test_commands_refuse_a_pickle_payload(run_cli, evil, tmp_path, argv):
    import numpy as np

    from fpgaprint.core.fpset import FingerprintSet

    FingerprintSet(np.arange(128).reshape(2, 64), [0, 0], [1.0, 1.0], "robust", {}, 0,
                   "0" * 64, (64,)).save(tmp_path / "fp.npz")
    path, marker = evil
    code, _, err = run_cli(*(a.format(evil=path, tmp=tmp_path) for a in argv))
    assert code == 2 and "needs unpickling" in err, err
    assert not marker.exists()


class _Net(torch.nn.Module):
    input_shape = (4,)
    num_classes = 3

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


def test_a_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "net.pt"
    torch.save(_Net(), path)
    with pytest.raises(InputError, match="needs unpickling"):
        modelio.load(path)


def test_zoo_checkpoints_load_without_unpickling(tmp_path, src):
    ckpt = modelio.Checkpoint(src.module, "float", (64,), 10, zoo="digits-mlp",
                              meta={"seed": 0, "data": "digits"})
    modelio.save(ckpt, tmp_path / "m.pt")
    torch.load(tmp_path / "m.pt", weights_only=True)  # plain tensors and values only
    back = modelio.load(tmp_path / "m.pt")
    assert back.zoo == "digits-mlp" and back.meta == {"seed": 0, "data": "digits"}
    assert modelio.state_sha256(back.model) == modelio.state_sha256(src.module)
    with pytest.raises(InputError, match="only zoo models are saved"):
        modelio.save(modelio.Checkpoint(_Net(), "float", (4,), 3), tmp_path / "n.pt")


def test_there_is_no_way_to_ask_for_unpickling(run_cli, evil, tmp_path):
    path, marker = evil
    code, _, err = run_cli("fingerprint", "check", path, tmp_path / "none.npz", "--trust-pickle")
    assert code == 2 and "--trust-pickle" in err, err
    assert not marker.exists()


def test_a_checkpoint_takes_its_shape_from_the_zoo_not_the_file(tmp_path, src):
    path = tmp_path / "m.pt"
    torch.save({"format": modelio.FORMAT, "zoo": "digits-mlp", "kind": "brevitas",
                "input_shape": [1, 2, 3], "num_classes": 10,
                "state_dict": src.module.state_dict()}, path)
    back = modelio.load(path)
    assert back.input_shape == (64,) and back.kind == "float"
    torch.save({"format": modelio.FORMAT, "zoo": "digits-mlp", "num_classes": "10",
                "state_dict": src.module.state_dict()}, path)
    with pytest.raises(InputError, match="num_classes '10' is not a class count"):
        modelio.load(path)
