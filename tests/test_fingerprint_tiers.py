"""The fragile boundary tier, the exact executor, two-sided calibration, confident verdicts and
the fingerprint CLI's edges (digits-mlp and its FINN+ golden model from the session build)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from fpgaprint.compiler import modelio
from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import load_set
from fpgaprint.core.golden import GoldenModel
from fpgaprint.core.manifest import sha256_file
from fpgaprint.core.words import random_flips
from fpgaprint.fingerprint.boundary import BoundaryParams
from fpgaprint.fingerprint.calibrate import benign_variants, dataset_for
from fpgaprint.fingerprint.check import check
from fpgaprint.fingerprint.generate import GenParams, generate, generate_pair
from fpgaprint.fingerprint.intexec import IntExec, flipped_memories
from fpgaprint.fingerprint.source import GoldenRunner, Model, load_model

SMALL = BoundaryParams(pairs=150, flips=200)


@pytest.fixture(scope="module")
def golden(digits_build):
    return GoldenModel(digits_build.golden)


@pytest.fixture(scope="module")
def deployed(digits_build):
    return load_model(digits_build.golden)


@pytest.fixture(scope="module")
def bset(deployed):
    return generate(deployed, "boundary", 30, seed=0, params=SMALL)


@pytest.fixture(scope="module")
def robust(src):
    return generate(src, "robust", 30, seed=0, params=GenParams(steps=40))


def _as_model(golden: GoldenModel, like: Model) -> Model:
    return Model(like.input_shape, like.num_classes, "golden", "flipped", "flipped golden",
                 runner=GoldenRunner(golden))


def test_executor_equals_finn_execution(golden):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 64))
    ex = IntExec(golden)
    for a, b in zip(ex.run(x), golden.run(x)):
        np.testing.assert_array_equal(a, b)
    singles = random_flips(golden.memories(), 6, rng, kinds=("weights",))
    labels, changed = ex.flip_labels(x, singles, raw=True)
    base_raw = golden.run(x)[0]
    for k, f in enumerate(singles):
        raw, _, lab = golden.flipped([f]).run(x)
        np.testing.assert_array_equal(labels[k], lab)
        np.testing.assert_array_equal(changed[k], (raw != base_raw).any(1))
    several = random_flips(golden.memories(), 12, rng)  # weights and thresholds
    mine = ex.run(x, flipped_memories(golden.memories(), several))
    for a, b in zip(mine, golden.flipped(several).run(x)):
        np.testing.assert_array_equal(a, b)


def test_boundary_set_is_strict_and_bound_to_its_golden(deployed, bset, digits_build, src):
    assert bset.algorithm == "boundary" and len(bset) == 30 and bset.threshold == 1.0
    assert bset.source_sha256 == sha256_file(digits_build.golden)
    np.testing.assert_array_equal(deployed.predict(bset.inputs), bset.labels)
    assert check(deployed, bset).passed
    # the near-tie guard: every vector's top two logits differ
    assert (bset.margins > 0).all()
    with pytest.raises(InputError, match="made from the deployed model"):
        generate(src, "boundary", 10)


def test_boundary_tier_catches_a_flip_that_robust_misses(golden, deployed, bset, robust):
    """Label-only: a single weight-bit flip that leaves every robust label alone (robust passes
    strictly) but moves a boundary label."""
    ex = IntExec(golden)
    q_r = robust.inputs_int.reshape(len(robust), -1)
    q_b = bset.inputs_int.reshape(len(bset), -1)
    flips = [random_flips(golden.memories(), 1, np.random.default_rng([9, s]),
                          kinds=("weights",))[0] for s in range(300)]
    lab_r, lab_b = ex.flip_labels(q_r, flips), ex.flip_labels(q_b, flips)
    base_r = ex.run(q_r)[2]
    hits = [f for k, f in enumerate(flips)
            if (lab_r[k] == base_r).all() and (lab_b[k] != bset.labels).any()]
    assert hits, "no flip among 300 moved a boundary label while keeping the robust ones"
    flipped = _as_model(golden.flipped([hits[0]]), deployed)
    rs = robust.with_threshold(0.5, {"method": "fixed for the test"})
    assert check(flipped, rs).verdict == "PASS"
    got = check(flipped, bset)
    assert got.verdict == "FAIL" and got.strict and "strict" in got.explain()


def test_disjoint_embedded_and_challenge_sets(src, deployed):
    emb, chal = generate_pair(src, "robust", 20, 10, seed=4, params=GenParams(steps=30))
    assert len(emb) == 20 and len(chal) == 10
    rows = {r.tobytes() for r in emb.inputs_int.reshape(20, -1)}
    assert not any(r.tobytes() in rows for r in chal.inputs_int.reshape(10, -1))
    assert np.bincount(emb.labels, minlength=10).tolist() == [2] * 10
    b1, b2 = generate_pair(deployed, "boundary", 12, 8, seed=1, params=SMALL)
    rows = {r.tobytes() for r in b1.inputs_int.reshape(12, -1)}
    assert len(b2) == 8 and not any(r.tobytes() in rows for r in b2.inputs_int.reshape(8, -1))


def test_calibration_variants_are_held_out_from_generation(src):
    p = GenParams()
    made, skipped = benign_variants(src, dataset_for(src), p.weight_bits, p.act_bits)
    names = [v.name for v in made]
    assert {"ptq-w3a4", "bnfold-w4a3", "prune50+ft2"} <= set(names)
    assert "finn-golden" in skipped  # none given
    for v in made:
        assert not p.perturb.covers(v.spec) and not p.survival.covers(v.spec), v.name
    # the rule can fail: the build's own widths and an untuned pruning are family draws
    assert p.perturb.covers({"kind": "ptq", "weight_bits": 4, "act_bits": 4})
    assert p.survival.covers({"kind": "prune", "fraction": 0.2, "finetune_epochs": 0})


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, src):
    """The source checkpoint, and two look-alikes (the source with 1e-6 relative noise)."""
    d = tmp_path_factory.mktemp("ckpts")
    modelio.save(modelio.Checkpoint(src.module, "float", (64,), 10, zoo="digits-mlp",
                                    meta={"seed": 0}), d / "src.pt")
    for i in (1, 2):
        m = modelio.load(d / "src.pt")
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in m.model.parameters():
                p.mul_(1 + 1e-6 * torch.randn(p.shape, generator=g))
        modelio.save(m, d / f"alike{i}.pt")
    return d


def test_calibration_fails_cleanly_on_overlapping_sides(ckpts, run_cli, tmp_path):
    fp = tmp_path / "fp.npz"
    code, out, err = run_cli("fingerprint", "generate", ckpts / "src.pt", "--count", "20",
                             "--steps", "30", "--out", fp)
    assert code == 0, err
    before = fp.read_bytes()
    code, out, err = run_cli("fingerprint", "calibrate", ckpts / "src.pt", fp,
                             "--attack", ckpts / "alike1.pt", "--attack", ckpts / "alike2.pt")
    assert code == 1
    last = err.strip().splitlines()[-1]  # progress lines above it
    assert last.startswith("error: cannot calibrate: benign side: threshold")
    assert "does not reject an independently trained model, none written" in last
    assert fp.read_bytes() == before
    code, _, err = run_cli("fingerprint", "calibrate", ckpts / "src.pt", fp, "--attack",
                           ckpts / "alike1.pt")
    assert code == 2 and "at least 2" in err


def test_marginal_check_is_not_a_pass(ckpts, run_cli, tmp_path, src):
    fs = generate(src, "robust", 40, seed=6, params=GenParams(steps=30))
    fs.with_threshold(0.95, {"method": "fixed for the test"}).save(tmp_path / "m.npz")
    code, out, err = run_cli("fingerprint", "check", ckpts / "src.pt", tmp_path / "m.npz")
    assert code == 3  # 40/40: 95 % interval [0.912, 1] straddles 0.95
    assert out.startswith("MARGINAL: 40/40 labels match") and "95 % interval [0.912, 1.000]" in out
    assert "no confident verdict" in err
    fs.with_threshold(0.8, {"method": "fixed"}).save(tmp_path / "ok.npz")
    code, out, _ = run_cli("fingerprint", "check", ckpts / "src.pt", tmp_path / "ok.npz",
                           "--confidence", "0.99")
    assert code == 0 and out.startswith("PASS: 40/40") and "99 % interval [" in out


@pytest.mark.parametrize("args, message", [
    (["--count", "0"], "--count: expected an integer from 1 to 10000 or auto, got '0'"),
    (["--count", "1000000000"], "--count: expected an integer from 1 to 10000"),
    (["--count", "ten"], "--count: expected an integer from 1 to 10000 or auto, got 'ten'"),
    (["--seed", "-1"], "--seed: expected an integer from 0 to"),
    (["--margin", "nan"], "--margin: expected a number from 0 to 100, got 'nan'"),
    (["--steps", "0"], "--steps: expected an integer from 1 to 100000"),
    (["--weight-bits", "1"], "--weight-bits: expected an integer from 2 to 16"),
    (["--challenge-count", "5"], "--challenge-count: give --challenge-out"),
    (["--algorithm", "magic"], "unknown algorithm 'magic'"),
    (["--algorithm", "boundary", "--calibrate"], "--calibrate: boundary sets are strict"),
])
def test_generate_options_are_range_checked(ckpts, run_cli, tmp_path, args, message):
    code, out, err = run_cli("fingerprint", "generate", ckpts / "src.pt", "--out",
                             tmp_path / "x.npz", *args)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.npz").exists()


def test_cli_threads_and_confidence_are_range_checked(ckpts, run_cli, tmp_path):
    code, _, err = run_cli("fingerprint", "check", ckpts / "src.pt", "x", "--threads", "0")
    assert code == 2 and "--threads: expected an integer from 1 to 256" in err
    code, _, err = run_cli("fingerprint", "check", ckpts / "src.pt", "x", "--confidence", "1")
    assert code == 2 and "--confidence: expected a number from 0.5 to 0.999" in err


def test_generate_writes_disjoint_challenge_set(ckpts, run_cli, tmp_path):
    code, out, err = run_cli("fingerprint", "generate", ckpts / "src.pt", "--algorithm",
                             "sensitive", "--count", "20", "--out",
                             tmp_path / "e.npz", "--challenge-out", tmp_path / "c.npz",
                             "--challenge-count", "10")
    assert code == 0, err
    assert "ltrc examples (LTRC-examples)" in out and "disjoint" in out
    e, c = load_set(tmp_path / "e.npz"), load_set(tmp_path / "c.npz")
    assert e.algorithm == c.algorithm == "ltrc" and (len(e), len(c)) == (20, 10)
    rows = {r.tobytes() for r in e.inputs_int.reshape(len(e), -1)}
    assert not any(r.tobytes() in rows for r in c.inputs_int.reshape(len(c), -1))


def test_help_names_the_papers_algorithms(run_cli):
    code, out, _ = run_cli("fingerprint", "generate", "--help")
    assert code == 0 and "[vanilla|robust|ltrc|boundary]" in out and "sensitive" not in out


@pytest.mark.slow
def test_package_carries_both_tiers_and_verify_shows_them(digits_build, robust, keypair,
                                                          tmp_path, run_cli, monkeypatch):
    """Build with --boundary, serve the package, verify a healthy and a flipped board."""
    monkeypatch.setenv("COLUMNS", "250")  # one table row per check
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.core.package import verify_package
    from fpgaprint.hw_targets.served import ServedBoard

    out = tmp_path / "pkg"
    shutil.copytree(digits_build.out, out)
    b = generate(load_model(out / "model" / "golden.onnx"), "boundary", 30, seed=2,
                 params=SMALL)
    b.save(tmp_path / "b.npz")
    robust.with_threshold(0.5, {"method": "fixed for the test"}).save(tmp_path / "fp.npz")
    build_model("zoo:digits-mlp", "Pynq-Z1", out, BuildConfig(equivalence_samples=16),
                fingerprint=tmp_path / "fp.npz", boundary=tmp_path / "b.npz",
                key=keypair[0])
    with verify_package(out, trusted_key=keypair[1]) as pkg:
        policy = pkg.policy()
        # digits-mlp is all-RTL: its on-chip self-test ran in the build
        assert policy["checks"] == ["exact", "fingerprint", "boundary", "onchip"]
        assert policy["boundary_count"] == 30 and policy["count"] == 60
        golden = GoldenModel(pkg.golden_path)
    ex = IntExec(golden)
    q_r = robust.inputs_int.reshape(len(robust), -1)
    flips = [random_flips(golden.memories(), 1, np.random.default_rng([5, s]),
                          kinds=("weights",))[0] for s in range(300)]
    lab_r, lab_b = ex.flip_labels(q_r, flips), ex.flip_labels(b.inputs_int.reshape(30, -1),
                                                                flips)
    base = ex.run(q_r)[2]
    key, idx, bit = next(f for k, f in enumerate(flips)
                         if (lab_r[k] == base).all() and (lab_b[k] != b.labels).any())
    for faults, code_want in (((), 0), (("--flip", f"{key}:{idx}:{bit}"), 1)):
        with ServedBoard(out, "--pty", "--trusted-key", keypair[1], *faults) as board:
            code, text, err = run_cli("verify", "--port", board.port, "--package", out,
                                      "--trusted-key", keypair[1])
        assert code == code_want, text + err
        assert "boundary" in text and "fingerprint" in text and "95 % interval" in text
    assert "labels differ from the deployed model's" in text
    # a boundary set of another golden model is refused
    other = b.with_threshold(1.0, b.calibration)
    other.source_sha256 = "0" * 64
    other.save(tmp_path / "other.npz")
    with pytest.raises(InputError, match="boundary set was made from golden model 0000"):
        build_model("zoo:digits-mlp", "Pynq-Z1", out, BuildConfig(equivalence_samples=16),
                    fingerprint=tmp_path / "fp.npz", boundary=tmp_path / "other.npz",
                    key=keypair[0])


@pytest.mark.slow
def test_verify_reports_a_marginal_pass_as_no_verdict(digits_build, make_package, keypair,
                                                      tmp_path, run_cli, monkeypatch):
    """A board whose match rate only just reaches the threshold: exit 3, never PASS."""
    from fpgaprint.hw_targets.served import ServedBoard

    monkeypatch.setenv("COLUMNS", "250")
    golden_labels = GoldenModel(digits_build.golden).run(digits_build.inputs)[2]
    k, n = int((golden_labels == digits_build.expected).sum()), len(golden_labels)
    pkg = make_package("digits-mlp", tmp_path / "pkg", threshold=k / n)  # rate == threshold
    with ServedBoard(pkg, "--pty", "--trusted-key", keypair[1]) as board:
        code, out, err = run_cli("verify", "--port", board.port, "--package", pkg,
                                 "--trusted-key", keypair[1], "--json", tmp_path / "r.json")
    assert code == 3, out + err
    assert "NO_VERDICT" in out and "MARGINAL" in out and "95 % interval [" in out
    assert f"threshold {k / n:.3f}" in out and "no confident verdict" in out
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "NO_VERDICT" and report["verdict"]["status"] == "PASS"
