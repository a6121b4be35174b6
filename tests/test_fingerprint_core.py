"""Fingerprint generation, set files, check and calibration on the embedded digits-mlp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpgaprint.compiler import modelio
from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet, load_set
from fpgaprint.core.grid import InputGrid
from fpgaprint.fingerprint import variants
from fpgaprint.fingerprint.check import check
from fpgaprint.fingerprint.generate import GenParams, canonical, generate
from fpgaprint.fingerprint.source import from_module, load_model, state_dict_sha256, train_zoo


@pytest.fixture(scope="module")
def swapped():
    return train_zoo("digits-mlp", seed=1)


@pytest.fixture(scope="module")
def sets(src):
    return {alg: generate(src, alg, 40, seed=3) for alg in ("vanilla", "robust", "ltrc")}


@pytest.mark.parametrize("algorithm", ["vanilla", "robust", "ltrc"])
def test_examples_keep_labels_on_grid(src, sets, algorithm):
    fs = sets[algorithm]
    assert len(fs) == 40 and fs.algorithm == algorithm
    counts = np.bincount(fs.labels, minlength=10)
    short = {int(c): n for c, n in fs.params.get("class_shortfall", {}).items()}
    for c in range(10):  # balanced, but for classes whose examples did not survive
        assert counts[c] == 4 - short[c] if c in short else counts[c] >= 4
    grid = InputGrid(8)
    assert fs.inputs_int.min() >= 0 and fs.inputs_int.max() <= 255
    np.testing.assert_array_equal(grid.to_int(fs.inputs), fs.inputs_int)
    logits = src.logits(fs.inputs)
    np.testing.assert_array_equal(logits.argmax(1), fs.labels)
    assert (fs.margins >= GenParams().min_margin).all()
    assert fs.source_sha256 == src.sha256


def test_generation_is_seeded(src):
    short = GenParams(steps=20)  # a short run: the seed is under test, not the search
    one = generate(src, "robust", 20, seed=3, params=short)
    again = generate(src, "robust", 20, seed=3, params=short)
    np.testing.assert_array_equal(again.inputs_int, one.inputs_int)
    other = generate(src, "robust", 20, seed=4, params=short)
    assert not np.array_equal(other.inputs_int, one.inputs_int)


def test_paper_names_and_the_former_alias(src):
    assert [canonical(a) for a in ("vanilla", "robust", "ltrc", "boundary", "sensitive")] == \
        ["vanilla", "robust", "ltrc", "boundary", "ltrc"]
    with pytest.raises(InputError, match="unknown algorithm 'magic'; choose from vanilla, "
                                         "robust, ltrc, boundary"):
        canonical("magic")
    fs = generate(src, "sensitive", 10, seed=3, params=GenParams(steps=20))  # a short run
    assert fs.algorithm == "ltrc"


def test_ltrc_examples_are_high_frequency(sets):
    from scipy.fft import dctn

    def low_energy_share(fs):
        img = fs.inputs.reshape(-1, 8, 8) - fs.inputs.reshape(-1, 64).mean(1)[:, None, None]
        c = dctn(img, axes=(1, 2), norm="ortho") ** 2
        return c[:, :3, :3].sum() / c.sum()

    assert low_energy_share(sets["ltrc"]) < 0.5 * low_energy_share(sets["vanilla"])


def test_set_roundtrip_and_model_hash_stable(tmp_path, src, sets):
    path = sets["robust"].save(tmp_path / "fp.npz")
    back = load_set(path)
    np.testing.assert_array_equal(back.inputs_int, sets["robust"].inputs_int)
    np.testing.assert_array_equal(back.labels, sets["robust"].labels)
    assert back.params == sets["robust"].params and back.sha256() == sets["robust"].sha256()
    ckpt = modelio.Checkpoint(src.module, "float", (64,), 10, zoo="digits-mlp")
    modelio.save(ckpt, tmp_path / "a.pt")
    modelio.save(modelio.load(tmp_path / "a.pt"), tmp_path / "b.pt")
    assert load_model(tmp_path / "b.pt").sha256 == src.sha256
    assert state_dict_sha256(variants.ptq(src, 8, sets["robust"].inputs).module) != src.sha256


def test_check_passes_on_source_and_ptq8_fails_on_swap(src, swapped, sets):
    fs = sets["robust"].with_threshold(0.8, {"method": "fixed for the test"})
    ok = check(src, fs)
    assert ok.passed and ok.match_rate == 1.0 and ok.same_source
    q8 = check(variants.ptq(src, 8, fs.inputs), fs)
    assert q8.status == "PASS" and not q8.same_source
    bad = check(swapped, fs)
    assert not bad.passed and bad.match_rate < 0.8
    assert "FAIL" in bad.explain() and "not the set's source" in bad.explain()
    with pytest.raises(InputError, match="not the set's source model"):
        check(swapped, fs, expect_source=True)


def test_check_rejects_wrong_input_shape(sets):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    other = from_module(net, (1, 28, 28))
    with pytest.raises(InputError, match=r"shape \(1, 28, 28\).*\(64,\)"):
        check(other, sets["vanilla"])


def test_set_validation(tmp_path):
    with pytest.raises(InputError, match="inconsistent"):
        FingerprintSet(np.zeros((3, 64)), np.zeros(2), np.zeros(3), "vanilla", {}, 0, "x", (64,))
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="not a fingerprint set"):
        load_set(tmp_path / "foreign.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a fingerprint set"):
        load_set(tmp_path / "junk.npz")


def test_a_set_file_that_could_overstate_its_evidence_is_refused_naming_it(tmp_path):
    """Read from a file: repeated inputs (the interval counts vectors as independent),
    non-integer labels or inputs, a threshold outside [0, 1] and inconsistent arrays are one
    error naming the file."""
    x = np.arange(4 * 64).reshape(4, 64) % 256
    good = FingerprintSet(x, np.arange(4), np.ones(4), "robust", {}, 0, "", (64,), threshold=0.9)
    assert len(load_set(good.save(tmp_path / "good.npz"))) == 4

    def saved(name, **change):
        with np.load(tmp_path / "good.npz") as z:
            arrays = {k: z[k] for k in z.files}
        arrays.update(change)
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    cases = [
        (saved("repeat.npz", inputs_int=x[[0, 1, 2, 1]]), "input 3 repeats input 1"),
        (saved("zeros.npz", inputs_int=np.zeros_like(x)), "input 1 repeats input 0"),
        (saved("float.npz", labels=np.arange(4) + 0.5), "labels must be a 1-D array of integers"),
        (saved("2d.npz", labels=np.arange(4).reshape(2, 2)), "labels must be a 1-D array"),
        (saved("fl_in.npz", inputs_int=x + 0.25), "inputs_int must be integers"),
        (saved("thr.npz", threshold=np.array(2.0)), "must be a number in [0, 1], got 2.0"),
        (saved("nan.npz", threshold=np.array(np.nan)), "must be a number in [0, 1], got nan"),
        (saved("shape.npz", input_shape=np.array([8, 8])), "inconsistent fingerprint set"),
    ]
    for path, message in cases:
        with pytest.raises(InputError) as e:
            load_set(path)
        assert str(e.value).startswith(f"{path}: ") and message in str(e.value), path


def test_a_class_that_cannot_be_reached_cedes_its_share():
    """Class 9's logit is far below the others everywhere: its examples go to other classes,
    and the set says so; a model with no reachable class at all is an error."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 10))
    with torch.no_grad():
        net[0].bias[9] = -100.0
    model = from_module(net, (64,), 10)
    fs = generate(model, "vanilla", 20, seed=0,
                  params=GenParams(steps=60, min_margin=0.1, target_margin=0.2, max_rounds=3))
    assert len(fs) == 20 and 9 not in fs.labels
    assert {int(k): v for k, v in fs.params["class_shortfall"].items()} == {9: 2}
    with torch.no_grad():
        net[0].bias[:] = -100.0
        net[0].weight.zero_()
    with pytest.raises(InputError, match=r"20 of 20 examples missing .* the limit was the "
                                         r"margin"):
        generate(from_module(net, (64,), 10), "vanilla", 20, seed=0,
                 params=GenParams(steps=5, max_rounds=1))
