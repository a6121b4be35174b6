"""Bit flips, baselines and the fidelity table (the golden model comes from a FINN+ build)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpgaprint.fingerprint import baselines, bitflips
from fpgaprint.fingerprint.evaluate import EvalConfig, dataset_for, evaluate
from fpgaprint.fingerprint.generate import generate
from fpgaprint.fingerprint.report import write_report
from fpgaprint.fingerprint.source import GoldenRunner, load_model


def test_baselines_label_with_source_predictions(src):
    ds = dataset_for(src)
    for fs in (baselines.natural(src, ds, 20), baselines.noise(src, 20),
               baselines.adversarial(src, ds, 20),
               baselines.sensitive_samples(src, ds, 10, steps=3)):
        np.testing.assert_array_equal(src.predict(fs.inputs), fs.labels)
        assert fs.source_sha256 == src.sha256
    nat = baselines.natural(src, ds, 20)
    assert np.bincount(ds.y_test[baselines.natural_pick(ds, 20, 0)]).tolist() == [2] * 10
    adv = baselines.adversarial(src, ds, 20)
    assert np.abs(adv.inputs - nat.inputs).max() <= 0.1 + 1 / 255


@pytest.fixture(scope="module")
def golden_path(digits_build):
    return digits_build.golden


@pytest.fixture(scope="module")
def golden(golden_path):
    from fpgaprint.core.golden import GoldenModel

    return GoldenModel(golden_path)


@pytest.mark.slow
def test_exact_mode_sees_high_order_weight_flip(src, golden):
    fs = generate(src, "robust", 30, seed=0)
    q = fs.inputs_int.reshape(len(fs), -1)
    raw, _, labels = golden.run(q)
    w = golden.memories()["MVAU_2/weights"]
    idx = int(np.argmax(np.abs(w.values)))
    flipped = golden.flipped([("MVAU_2/weights", idx, w.bits - 1)])
    raw2, _, labels2 = flipped.run(q)
    assert (raw2 != raw).any()
    assert (labels == fs.labels).mean() >= 0.9
    runner = GoldenRunner(golden, fs.grid_bits)
    np.testing.assert_array_equal(runner.raw(fs.inputs), raw)


@pytest.mark.slow
def test_progressive_bit_search_lowers_accuracy(src, golden):
    ds = dataset_for(src)
    x = fs_q = np.rint(ds.x_test * 255).astype(np.int64)
    idx = np.arange(128)
    steps = bitflips.progressive_bit_search(golden, fs_q[idx], ds.y_test[idx], max_flips=3)
    assert [len(s) for s in steps] == [1, 2, 3]
    acc0 = (golden.run(x)[2] == ds.y_test).mean()
    acc3 = (golden.flipped(steps[-1]).run(x)[2] == ds.y_test).mean()
    assert acc3 < acc0 - 0.05
    assert all(k.endswith("/weights") for k, _, _ in steps[-1])


@pytest.mark.slow
def test_fidelity_table_quick(tmp_path, golden_path):
    cfg = EvalConfig.quick()
    cfg.methods = ("robust", "boundary", "natural")
    cfg.flip_counts = (1, 64)
    cfg.single_flip_seeds = 5
    cfg.golden = str(golden_path)
    cfg.attack_epochs = 20
    res, sets = evaluate("zoo:digits-mlp", cfg)
    rows = {r["name"]: r for r in res["variants"]}
    assert rows["source"]["match"]["robust"] == 1.0
    assert rows["finn-golden"]["verdict"]["boundary"] == "PASS"
    assert rows["finn-golden"]["match"]["boundary"] == 1.0
    assert rows["swap-seed1"]["detected"]["robust"] and rows["transfer"]["detected"]["robust"]
    assert rows["transfer"]["accuracy"] < 0.2
    assert rows["ptq8"]["info"]["spec"] == {"kind": "ptq", "weight_bits": 8, "act_bits": 8}
    assert {"ptq3", "bnfold-w4a4", "prune70+ft", "extraction", "finetune-mixed",
            "stuck0-1n-s0"} <= set(rows)
    thr = res["methods"]["robust"]["threshold"]
    cal = res["methods"]["robust"]["calibration"]
    assert cal["attack"][cal["best_attack"]]["match_rate"] < thr
    assert res["repeated_checks"]["boundary"] == {"checks": 3, "not_pass": 0}
    s = res["summary"]
    assert s["random_exact"]["robust"]["64"] == 1.0
    assert s["single_weight"]["flips"] == 5
    assert len(res["bitflips"]["targeted"]) == 3
    paths = write_report(res, tmp_path / "out", sets)
    names = {p.name for p in paths}
    assert {"results.json", "table.md", "bitflips.png", "match_rates.png",
            "examples.png", "robust.npz", "boundary.npz"} <= names
    assert json.loads((tmp_path / "out" / "results.json").read_text())["model"]["kind"] == "float"
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| swap-seed1 | swap (attack) |" in md and "## Detection (FAIL) per attack" in md
    assert "checked repeatedly in random order" in md
    # the calibration per method, the line time at the rate it was computed for
    assert "## Calibration: the benign side's threshold" in md
    assert f"| line s at {cal['power']['baud']} baud |" in md


@pytest.mark.slow
def test_check_runs_golden_and_qonnx_files(src, golden_path, tmp_path, capsys):
    from fpgaprint.cli import main

    fs = generate(src, "robust", 20, seed=5).with_threshold(0.8, {"method": "fixed"})
    fs.save(tmp_path / "fp.npz")
    qonnx = golden_path.parent / "qonnx.onnx"
    for path, kind in ((golden_path, "golden"), (qonnx, "qonnx")):
        model = load_model(path)
        assert model.kind == kind and model.input_shape == (64,)
        with pytest.raises(SystemExit) as e:
            main(["fingerprint", "check", str(path), str(tmp_path / "fp.npz")])
        out = capsys.readouterr().out
        assert e.value.code == 0, out
        assert out.startswith("PASS") and "not the set's source" in out
    golden_labels = load_model(golden_path).predict(fs.inputs)
    np.testing.assert_array_equal(load_model(qonnx).predict(fs.inputs), golden_labels)


def test_stale_golden_model_is_refused(tmp_path):
    """A golden model built from another model would make every method 'detect' the build."""
    from fpgaprint.core.errors import InputError
    from fpgaprint.fingerprint.calibrate import check_golden_source as _check_golden_source

    (tmp_path / "model").mkdir()
    (tmp_path / "reports").mkdir()
    golden = tmp_path / "model" / "golden.onnx"
    golden.write_bytes(b"")
    (tmp_path / "reports" / "build.json").write_text('{"source_sha256": "aa11"}')
    _check_golden_source(golden, "aa11")
    with pytest.raises(InputError, match="not from the evaluated model"):
        _check_golden_source(golden, "bb22")
