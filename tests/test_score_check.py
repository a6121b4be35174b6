"""The score check: the deployed class-score margins against the pre-trained model's, one more
way to FAIL in every mode (verify, challenge, the board's own self-test, `fingerprint check`).

The "modified model" is a real one: the digits model retrained with another seed plays the set's
source, the compiled seed-0 model the deployed one; their labels agree above the label
threshold, their margins do not. Every threshold below is derived from the build under test.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import META, confident_threshold, first_changing_flip, in_process_board

from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet, load_set, shared_rows
from fpgaprint.core.golden import GoldenModel
from fpgaprint.core.grid import InputGrid
from fpgaprint.core.scores import margin_correlation
from fpgaprint.core.selftest import FAIL, NO_VERDICT, PASS, Policy, evaluate
from fpgaprint.hw_targets.faults import FaultSpec

# ---------------------------------------------------------------- the pass rule alone


def _pair(n: int = 60, c: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)), rng.normal(size=(n, c))


def test_policy_carries_the_score_threshold_exactly_when_the_check_applies():
    p = Policy.from_dict({"checks": ["exact", "score"], "score_threshold": 0.4})
    assert p.score_threshold == 0.4 and Policy.from_dict(p.to_dict()) == p
    for bad in ({"checks": ["exact", "score"]},
                {"checks": ["exact", "score"], "score_threshold": 1.5},
                {"checks": ["exact", "score"], "score_threshold": True},
                {"checks": ["exact"], "score_threshold": 0.4}):
        with pytest.raises(InputError, match="score_threshold"):
            Policy.from_dict(bad)
    assert p.with_checks("onchip").score_threshold == 0.4


def test_the_score_check_fails_passes_and_is_marginal_by_its_interval():
    source, other = _pair()
    labels = source.argmax(1)
    v = {"expected_labels": labels, "source_outputs": source}
    pol = Policy(("fingerprint", "score"), 0.5, score_threshold=0.5)
    same = evaluate(None, labels, v, pol, scores=3 * source + 7)  # scale and common shift
    assert same.status == PASS and not same.marginal
    assert same.check("score").extra["correlation"] == pytest.approx(1.0, abs=1e-5)
    r, _, hi = margin_correlation(source, other, labels)
    assert hi < 0.5  # an unrelated model (precondition of this data)
    bad = evaluate(None, labels, v, pol, scores=other)  # its labels still count as matching
    assert bad.status == FAIL and bad.reason.startswith("score:")
    assert bad.check("fingerprint").status == PASS
    straddle = Policy(("fingerprint", "score"), 0.5, score_threshold=r)
    ev = evaluate(None, labels, v, straddle, scores=other)
    assert ev.status == PASS and ev.marginal and "MARGINAL" in ev.check("score").detail
    missing = np.ones(len(labels), bool)
    missing[3] = False
    ev = evaluate(None, labels, v, pol, answered=missing, scores=3 * source)
    assert ev.check("score").status == NO_VERDICT


def test_the_score_check_never_turns_another_checks_fail_into_pass():
    source, _ = _pair()
    labels = source.argmax(1)
    raw = np.arange(len(labels) * 4).reshape(-1, 4)
    v = {"expected_labels": labels, "source_outputs": source, "golden_raw": raw}
    pol = Policy(("exact", "fingerprint", "score"), 0.5, score_threshold=0.5)
    wrong = raw.copy()
    wrong[0, 0] += 1
    ev = evaluate(wrong, labels, v, pol, scores=source)
    assert ev.check("score").status == PASS and ev.status == FAIL
    assert ev.reason.startswith("exact:")


# ---------------------------------------------------------------- calibration keeps it or not


def test_calibration_keeps_the_score_check_only_where_it_rejects_independent_models(tmp_path):
    from test_fingerprint_calibration import make_set, sides_for, source_outputs

    from fpgaprint.fingerprint.calibrate import calibrate_with

    fs = make_set(clustered=False)
    sides = sides_for(fs, [0, 1], [40, 45])  # independent models: outputs of their own
    out = calibrate_with(fs, sides)
    sc = out.calibration["score"]
    assert out.has_score and out.calibration["score_check"]["kept"]
    assert out.score_threshold == pytest.approx(sc["threshold"])
    assert np.allclose(out.source_outputs, source_outputs(fs))
    assert all(sc["outcome"][k] == "FAIL" for k in ("a40", "a45"))
    left = calibrate_with(fs, sides, score=False)  # calibrate --no-score
    assert not left.has_score and "left out" in left.calibration["score_check"]["why"]
    back = load_set(out.save(tmp_path / "kept.npz"))
    assert back.has_score and back.sha256() == out.sha256()
    assert np.array_equal(back.source_outputs, out.source_outputs)
    # benign variants whose margins move more (labels moved on 3 and 9 vectors) put the score
    # threshold where the independent models' intervals reach it: it does not separate, so
    # the set carries no score check and its report says why
    out = calibrate_with(fs, sides_for(fs, [3, 9], [40, 45]))
    sc = out.calibration["score"]
    assert any(sc["outcome"][k] != "FAIL" for k in ("a40", "a45"))
    assert not out.has_score and not out.calibration["score_check"]["kept"]
    assert "does not reject every independently trained model" in \
        out.calibration["score_check"]["why"]
    # one benign variant says nothing of the benign spread: not carried either
    out = calibrate_with(fs, sides_for(fs, [0], [40, 45]))
    assert all(o == "FAIL" for k, o in out.calibration["score"]["outcome"].items()
               if k.startswith("a"))
    assert not out.has_score and "at least 2" in out.calibration["score_check"]["why"]


# ---------------------------------------------------------------- a compiled model


def _logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.eval()(torch.from_numpy(x).float()).numpy().astype(np.float64)


@pytest.fixture(scope="module")
def refs(digits_build):
    """The build's deployed scores, and the float outputs of its own source (seed 0) and of the
    model retrained with seed 1, on the self-test vectors and on a challenge the board never
    saw (the next test digits); the thresholds derived from them."""
    from fpgaprint.compiler import zoo

    c = digits_build
    grid = InputGrid(8)
    golden = GoldenModel(c.golden)
    fe = c.result.frontend
    own = fe.float_model if fe.float_model is not None else fe.torch_model
    other = zoo.make("digits-mlp", seed=1).model
    n = len(c.inputs)
    fresh = grid.to_int(fe.data.x_test[n:2 * n]).reshape(c.inputs.shape)
    assert not shared_rows(c.inputs, fresh)
    out = {}
    for name, x in (("selftest", c.inputs), ("challenge", fresh)):
        raw, _, labels = golden.run(x)
        dep = golden.deployed_scores(raw)
        xf = grid.to_float(x)
        srcs = {"own": _logits(own, xf), "other": _logits(other, xf)}
        corr = {k: margin_correlation(s, dep, s.argmax(1)) for k, s in srcs.items()}
        agree = min(int((s.argmax(1) == labels).sum()) for s in srcs.values())
        out[name] = {"x": x, "raw": raw, "labels": labels, "src": srcs, "corr": corr,
                     "agree": agree}
    label_threshold = confident_threshold(min(o["agree"] for o in out.values()), n)
    for name, o in out.items():
        o["label_threshold"] = label_threshold
        lo_own, hi_other = o["corr"]["own"][1], o["corr"]["other"][2]
        # the premise: the retrained model's margins are told apart at this N
        assert hi_other < lo_own, (name, o["corr"])
        o["score_threshold"] = (hi_other + lo_own) / 2
    return out


def test_deployed_scores_are_the_raw_outputs_through_the_host_tail(digits_build):
    golden = GoldenModel(digits_build.golden)
    raw, final, _ = golden.run(digits_build.inputs)
    assert [op["op"] for op in golden.host_ops] == ["Mul", "Add"]  # scale, per-class bias
    scores = golden.deployed_scores(raw)
    assert np.allclose(scores, final, rtol=1e-6, atol=1e-6)  # no head: the final output
    # a per-class bias moves margins: they are not the raw margins scaled
    from fpgaprint.core.scores import margins

    y = scores.argmax(1)
    assert np.corrcoef(margins(raw, y), margins(scores, y))[0, 1] < 1 - 1e-6


def _package(out: Path, c, keypair, source: np.ndarray, label_thr: float,
             score_thr: float | None, exact: bool = True) -> Path:
    """A signed package of the digits build whose expected labels (and, with `score_thr`, the
    score check's source outputs) come from `source`; without the exact check if not
    `exact`."""
    from fpgaprint.compiler.package import finalize_package, write_selftest

    (out / "model").mkdir(parents=True)
    shutil.copy2(c.golden, out / "model" / "golden.onnx")
    raw, _, labels = GoldenModel(c.golden).run(c.inputs)
    checks = ["exact", "fingerprint"] if exact else ["fingerprint"]
    policy = {"checks": checks, "fingerprint_threshold": label_thr}
    if score_thr is not None:
        policy.update(checks=[*checks, "score"], score_threshold=score_thr)
    write_selftest(out, c.inputs, raw, labels, source.argmax(1), policy,
                   source if score_thr is not None else None)
    finalize_package(out, {"name": "digits-mlp", **META, "io": c.io}, key_path=keypair[0])
    return out


@pytest.fixture(scope="module")
def packages(digits_build, keypair, refs, tmp_path_factory):
    """healthy / modified (seed-1 source) / modified without the score check / marginal /
    both without the exact check."""
    d = tmp_path_factory.mktemp("score-pkgs")
    st = refs["selftest"]
    lt, thr = st["label_threshold"], st["score_threshold"]
    own, other = st["src"]["own"], st["src"]["other"]
    return {
        "healthy": _package(d / "healthy", digits_build, keypair, own, lt, thr),
        "modified": _package(d / "modified", digits_build, keypair, other, lt, thr),
        "modified-labels-only": _package(d / "mod-lab", digits_build, keypair, other, lt, None),
        "marginal": _package(d / "marginal", digits_build, keypair, own, lt,
                             st["corr"]["own"][0]),
        "no-exact": _package(d / "no-exact", digits_build, keypair, own, lt, thr, exact=False),
        "no-exact-modified": _package(d / "no-exact-mod", digits_build, keypair, other, lt,
                                      thr, exact=False),
    }


def verify(run_cli, pkg: Path, pub: Path, port: str, report: Path, *extra):
    code, out, err = run_cli("verify", "--port", port, "--package", pkg, "--trusted-key", pub,
                             "--json", report, *extra)
    checks = {}
    if report.exists():
        checks = {c["name"]: c for c in json.loads(report.read_text())["verdict"]["checks"]}
    return code, out + err, checks


@contextlib.contextmanager
def board(pkg: Path, pub: Path, faults=None):
    with in_process_board(pkg, pub, pty=True, faults=faults) as link:
        yield link.url


def test_a_healthy_board_passes_the_score_check(run_cli, packages, keypair, refs, tmp_path):
    with board(packages["healthy"], keypair[1]) as port:
        code, text, checks = verify(run_cli, packages["healthy"], keypair[1], port,
                                    tmp_path / "v.json")
    assert code == 0 and "verdict: PASS" in text, text
    assert checks["score"]["status"] == PASS
    want = refs["selftest"]["corr"]["own"][0]  # the build's deployed scores, host tail applied
    assert checks["score"]["extra"]["correlation"] == pytest.approx(want, abs=1e-6)


def test_a_package_from_a_retrained_model_fails_on_score_alone(run_cli, packages, keypair,
                                                               tmp_path):
    with board(packages["modified"], keypair[1]) as port:
        code, text, checks = verify(run_cli, packages["modified"], keypair[1], port,
                                    tmp_path / "m.json")
    assert code == 1 and "score" in text, text
    assert checks["score"]["status"] == FAIL
    assert checks["exact"]["status"] == checks["fingerprint"]["status"] == PASS
    # the same package without the score check: the labels alone let it through
    pkg = packages["modified-labels-only"]
    with board(pkg, keypair[1]) as port:
        code, text, checks = verify(run_cli, pkg, keypair[1], port, tmp_path / "l.json")
    assert code == 0 and "score" not in checks, text


def test_a_straddling_score_interval_is_no_verdict(run_cli, packages, keypair, tmp_path):
    with board(packages["marginal"], keypair[1]) as port:
        code, text, checks = verify(run_cli, packages["marginal"], keypair[1], port,
                                    tmp_path / "s.json")
    assert code == 3 and "no confident verdict: score" in text, text
    assert checks["score"]["extra"]["marginal"]


def test_a_flipped_weight_fails_with_the_score_check_present(run_cli, packages, keypair,
                                                             digits_build, tmp_path):
    golden = GoldenModel(digits_build.golden)
    flip = first_changing_flip(golden, digits_build.inputs, "MVAU_2/weights", 3)[0]
    with board(packages["healthy"], keypair[1], FaultSpec(flips=[flip])) as port:
        code, text, checks = verify(run_cli, packages["healthy"], keypair[1], port,
                                    tmp_path / "f.json")
    assert code == 1 and checks["exact"]["status"] == FAIL, text


def test_the_boards_own_self_test_applies_the_score_check(packages, keypair):
    from fpgaprint.hw_targets.backends import open_backend

    for name, want in (("healthy", True), ("modified", False)):
        with open_backend(packages[name], trusted_key=keypair[1]) as b:
            st = b.selftest()
        assert "score" in st["checks"] and st["passed"] is want, name


def _challenge(out: Path, o: dict, source: str, score_thr: float | None) -> Path:
    src = o["src"][source]
    fs = FingerprintSet(o["x"], src.argmax(1), np.ones(len(src)), "robust", {}, 0, "",
                        o["x"].shape[1:], threshold=o["label_threshold"])
    if score_thr is not None:
        fs = fs.with_score(src, score_thr)
    return fs.save(out)


def test_a_challenge_set_carrying_the_score_check_applies_it(run_cli, packages, keypair, refs,
                                                           tmp_path):
    o = refs["challenge"]
    healthy = _challenge(tmp_path / "own.npz", o, "own", o["score_threshold"])
    other = _challenge(tmp_path / "other.npz", o, "other", o["score_threshold"])
    pkg = packages["modified-labels-only"]  # a policy without the score check
    with board(pkg, keypair[1]) as port:
        code, text, checks = verify(run_cli, pkg, keypair[1], port, tmp_path / "h.json",
                                    "--challenge", healthy)
        assert code == 0 and checks["score"]["status"] == PASS, text
        code, text, _ = verify(run_cli, pkg, keypair[1], port, tmp_path / "o.json",
                               "--challenge", other)
    # the package's own golden model would fail it: refused before any vector is sent
    assert code == 2 and "score check" in text, text


# ---------------------------------------------------------------- fingerprint check


def test_fingerprint_check_applies_the_score_check_of_the_set(run_cli, digits_build, refs,
                                                             tmp_path):
    o = refs["selftest"]
    thr = o["score_threshold"]
    golden = str(digits_build.golden)
    code, out, err = run_cli("fingerprint", "check", golden, _challenge(
        tmp_path / "own.npz", o, "own", thr))
    assert code == 0 and "score: PASS" in out, out + err
    code, out, err = run_cli("fingerprint", "check", golden, _challenge(
        tmp_path / "other.npz", o, "other", thr))
    assert code == 1 and "score mismatch" in err, out + err
    code, out, err = run_cli("fingerprint", "check", golden, _challenge(
        tmp_path / "plain.npz", o, "other", None))  # no score check: the labels pass
    assert code == 0 and "score" not in out, out + err


def _tampered_sets(tmp_path: Path, good: Path) -> dict[str, Path]:
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    nan = dict(arrays, source_outputs=arrays["source_outputs"].copy())
    nan["source_outputs"][2, 1] = np.nan
    short = dict(arrays, source_outputs=arrays["source_outputs"][:-1])
    text = dict(arrays, score_threshold=np.array("high"))
    lone = {k: v for k, v in arrays.items() if k != "score_threshold"}
    out = {}
    for name, a in (("nan", nan), ("short", short), ("text", text), ("lone", lone)):
        np.savez(tmp_path / f"{name}.npz", **a)
        out[name] = tmp_path / f"{name}.npz"
    return out


def test_a_tampered_score_set_is_one_line_exit_2(run_cli, digits_build, refs, tmp_path):
    good = _challenge(tmp_path / "good.npz", refs["selftest"], "own", 0.5)
    for name, path in _tampered_sets(tmp_path, good).items():
        code, out, err = run_cli("fingerprint", "check", str(digits_build.golden), path)
        assert code == 2 and len(err.strip().splitlines()) == 1, (name, out, err)
        assert "source_outputs" in err or "score_threshold" in err, (name, err)


def test_a_tampered_score_package_is_one_line_exit_2(run_cli, packages, keypair, tmp_path):
    from conftest import resign

    for name, edit in (("nan", lambda a: a.__setitem__(1, np.nan)),
                       ("short", None)):
        pkg = shutil.copytree(packages["healthy"], tmp_path / name)
        vec = pkg / "selftest" / "vectors.npz"
        with np.load(vec) as z:
            arrays = {k: z[k] for k in z.files}
        src = arrays["source_outputs"].copy()
        if edit is None:
            src = src[:-1]
        else:
            edit(src[0])
        np.savez(vec, **dict(arrays, source_outputs=src))
        resign(pkg, keypair[0])
        for args in (("package", "verify", pkg), ("verify", "--port", "loop://", "--package",
                                                  pkg)):
            code, out, err = run_cli(*args, "--trusted-key", keypair[1])
            assert code == 2 and len(err.strip().splitlines()) == 1, (name, args, out, err)
            assert "source_outputs" in err, err


# ---------------------------------------------------------------- build and station


def test_the_build_embeds_the_score_check_and_refuses_one_its_model_fails(
        run_cli, refs, keypair, tmp_path):
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.core.package import verify_package

    o = refs["selftest"]
    own = _challenge(tmp_path / "own.npz", o, "own", o["score_threshold"])
    res = build_model("zoo:digits-mlp", "Pynq-Z1", tmp_path / "pkg", BuildConfig(
        equivalence_samples=4), fingerprint=own, key=keypair[0])
    pkg = verify_package(res.out, trusted_key=keypair[1])
    policy = pkg.policy()
    assert "score" in policy["checks"]
    assert policy["score_threshold"] == pytest.approx(o["score_threshold"])
    assert np.allclose(pkg.vectors()["source_outputs"], o["src"]["own"], atol=1e-5)
    with board(res.out, keypair[1]) as port:
        code, text, checks = verify(run_cli, res.out, keypair[1], port, tmp_path / "v.json")
    assert code == 0 and checks["score"]["status"] == PASS, text
    other = _challenge(tmp_path / "other.npz", o, "other", o["score_threshold"])
    with pytest.raises(InputError, match="own self-test: score:"):
        build_model("zoo:digits-mlp", "Pynq-Z1", tmp_path / "pkg2", BuildConfig(
            equivalence_samples=4), fingerprint=other, key=keypair[0])


def test_the_station_applies_the_score_check(packages, keypair):
    """The modified package differs from the healthy one only in what the score check reads
    (its exact and label checks pass: see the verify test above)."""
    from conftest import run_fpgaprint

    for name, want in (("healthy", 0), ("modified", 1)):
        with board(packages[name], keypair[1]) as port:
            r = run_fpgaprint("station", "--port", port, "--package", packages[name],
                              "--trusted-key", keypair[1])
        assert r.returncode == want, (name, r.stdout + r.stderr)


def test_accept_records_the_score_check(run_cli, packages, keypair, tmp_path):
    import sqlite3

    db = tmp_path / "accept.db"
    with board(packages["modified"], keypair[1]) as port:
        code, out, err = run_cli("accept", "--ports", port, "--package", packages["modified"],
                                 "--trusted-key", keypair[1], "--db", f"sqlite:///{db}",
                                 "--junit", tmp_path / "j.xml")
    assert code == 1 and "score" in out + err, out + err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM accept_results").fetchall() == [("FAIL",)]
    assert 'name="score"' in (tmp_path / "j.xml").read_text()


def test_without_the_exact_check_the_board_still_returns_raw_outputs_for_the_score(
        run_cli, packages, keypair, tmp_path):
    for name, want in (("no-exact", 0), ("no-exact-modified", 1)):
        with board(packages[name], keypair[1]) as port:
            code, text, checks = verify(run_cli, packages[name], keypair[1], port,
                                        tmp_path / f"{name}.json", "--allow-fingerprint-only")
        assert code == want and set(checks) == {"identity", "fingerprint", "score"}, text
        assert checks["score"]["status"] == (PASS if want == 0 else FAIL), text
