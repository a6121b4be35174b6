"""`fpgaprint fingerprint generate|check`: exit codes 0 / 1 / 2 and their messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpgaprint.cli import main
from fpgaprint.compiler import modelio
from fpgaprint.compiler.zoo import get_entry
from fpgaprint.core.fpset import load_set
from fpgaprint.fingerprint.source import train_zoo


@pytest.fixture(scope="module")
def models(tmp_path_factory, src):
    d = tmp_path_factory.mktemp("models")
    for m, name in ((src, "src.pt"), (train_zoo("digits-mlp", seed=1), "swap.pt")):
        modelio.save(modelio.Checkpoint(m.module, "float", (64,), 10, zoo="digits-mlp"), d / name)
    tfc = get_entry("tfc-w2a2")  # another input shape, as a checkpoint (never a pickle)
    modelio.save(modelio.Checkpoint(tfc.build(), tfc.kind, tfc.input_shape, 10, zoo=tfc.name),
                 d / "mnist.pt")
    return d


@pytest.fixture(scope="module")
def fpset(models):
    out = models / "fp.npz"
    with pytest.raises(SystemExit) as e:
        main(["fingerprint", "generate", str(models / "src.pt"), "--algorithm", "robust",
              "--count", "30", "--out", str(out), "--seed", "1", "--calibrate"])
    assert e.value.code == 0
    return out


def run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def test_generate_writes_calibrated_set(models, fpset):
    fs = load_set(fpset)
    assert len(fs) == 30 and fs.algorithm == "robust" and fs.seed == 1
    cal = fs.calibration
    assert {"ptq-w3a4", "prune50+ft2"} <= set(cal["benign"]) | set(cal["excluded"])
    assert set(cal["attack"]) == {"independent-seed1001", "independent-seed1002"}
    worst = cal["benign"][cal["worst_benign"]]
    best = cal["attack"][cal["best_attack"]]["match_rate"]
    assert worst["match_rate"] == min(e["match_rate"] for e in cal["benign"].values())
    assert fs.threshold == worst["interval"][0]  # the benign side's lower bound
    assert best < fs.threshold and cal["gap"] == pytest.approx(worst["match_rate"] - best)
    assert cal["count"] == 30 and "lower bound" in cal["method"]
    assert {"impostor-centroid", "impostor-mlp", "impostor-distill"} == set(cal["impostor"])
    assert cal["separates"] == all(e["match_rate"] < fs.threshold
                                   for side in ("attack", "impostor")
                                   for e in cal[side].values())
    for name, e in cal["attack"].items():  # each on its own held-out split
        assert e["note"] == "accuracy on its own held-out split"
    assert not list(models.glob(".fp.npz.*"))  # no temporary file left behind


def test_check_source_passes(models, fpset, capsys, tmp_path):
    code, out, _ = run(["fingerprint", "check", str(models / "src.pt"), str(fpset),
                        "--expect-source", "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0
    assert out.startswith("PASS: 30/30 labels match") and "95 % interval [0.884, 1.000]" in out
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True


def test_check_swapped_fails_with_exit_1(models, fpset, capsys):
    code, out, err = run(["fingerprint", "check", str(models / "swap.pt"), str(fpset)], capsys)
    assert code == 1
    assert out.startswith("FAIL:") and "not the set's source" in out
    assert "fingerprint mismatch" in err


@pytest.mark.parametrize("case, message", [
    ("expect-source", "is not the set's source model"),
    ("wrong-shape", "takes inputs of shape (1, 28, 28) but the fingerprint set holds (64,)"),
    ("foreign-npz", "not a fingerprint set"),
    ("missing-model", "no such model file"),
    ("missing-set", "no such fingerprint set"),
    ("bad-count", "--count: expected an integer from 1 to 10000"),
    ("unknown-zoo", "unknown zoo model"),
])
def test_bad_input_exits_2(models, fpset, capsys, tmp_path, case, message):
    np.savez(tmp_path / "other.npz", inputs=np.zeros((2, 64)))
    argv = {
        "expect-source": ["check", str(models / "swap.pt"), str(fpset), "--expect-source"],
        "wrong-shape": ["check", str(models / "mnist.pt"), str(fpset)],
        "foreign-npz": ["check", str(models / "src.pt"), str(tmp_path / "other.npz")],
        "missing-model": ["check", str(tmp_path / "nope.pt"), str(fpset)],
        "missing-set": ["check", str(models / "src.pt"), str(tmp_path / "nope.npz")],
        "bad-count": ["generate", str(models / "src.pt"), "--count", "0", "--out",
                      str(tmp_path / "x.npz")],
        "unknown-zoo": ["generate", "zoo:nope", "--out", str(tmp_path / "x.npz")],
    }[case]
    code, out, err = run(["fingerprint", *argv], capsys)
    assert code == 2
    assert message in err
    assert not (tmp_path / "x.npz").exists()
