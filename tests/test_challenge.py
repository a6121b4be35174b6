"""A PASS means the same in every mode: a verifier-held challenge is the self-test run with other
inputs, judged by the package's policy (exact, onchip, fingerprint at the stricter threshold).

Faulty boards are test doubles of a physical board gone bad: the real agent and link on a real
pty, the virtual board's memories flipped, or one backend method changed to lie, as a
compromised firmware would.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    first_changing_flip,
    in_process_board,
    make_challenge,
    moved,
    resign,
    run_fpgaprint,
)

from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet, load_set
from fpgaprint.core.golden import GoldenModel
from fpgaprint.core.package import load_vectors, verify_package
from fpgaprint.core.selftest import FAIL, PASS, clopper_pearson
from fpgaprint.harness.verify import challenge_plan, selftest_plan
from fpgaprint.hw_targets.faults import FaultSpec

RNG = np.random.default_rng(0)


@pytest.fixture
def boards(digits_package, keypair):
    """boards(wrap=None, faults=None) -> pty URL of an in-process digits board."""
    with contextlib.ExitStack() as stack:
        def start(wrap=None, faults=None):
            return stack.enter_context(in_process_board(
                digits_package, keypair[1], wrap=wrap, pty=True, faults=faults)).url

        yield start


@pytest.fixture(scope="module")
def challenge(digits_build, shared_dir):
    """A set the board never saw, labelled like a healthy board answers it."""
    return make_challenge(digits_build.golden, moved(digits_build.inputs),
                          shared_dir / "challenge-moved.npz")


@pytest.fixture(scope="module")
def flip(digits_build):
    """A weight-bit flip of MVAU_2 that changes the raw output of some challenge vectors."""
    golden = GoldenModel(digits_build.golden)
    return first_changing_flip(golden, moved(digits_build.inputs), "MVAU_2/weights", 3)[0]


def run(run_cli, pkg, pub, port, *extra, report: Path | None = None):
    args = ["verify", "--port", port, "--package", pkg, "--trusted-key", pub, *extra]
    if report is not None:
        args += ["--json", report]
    code, out, err = run_cli(*args)
    checks = {}
    if report is not None and report.exists():
        checks = {c["name"]: c for c in json.loads(report.read_text())["verdict"]["checks"]}
    return code, out + err, checks


class Wrapped:
    """A backend with some methods changed: everything else is the healthy board's."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        return getattr(self.backend, name)


class OneLsb(Wrapped):
    """A board one least significant bit off: raw element 0 of every answer is one higher; its
    labels are the healthy ones."""

    def infer(self, x):
        raw, labels = self.backend.infer(x)
        raw = np.array(raw, copy=True)
        raw[:, 0] += 1
        return raw, labels


class CentroidImpostor(Wrapped):
    """A board that never runs the model: it answers the embedded inputs from its package and
    every other input with the stored answer of the nearest class centroid of the embedded
    vectors (what the package leaks about the model)."""

    def __init__(self, backend):
        super().__init__(backend)
        v = backend.package.vectors()
        self.table = {r.tobytes(): (g, lab) for r, g, lab in
                      zip(v["inputs"].astype("<i8"), v["golden_raw"], v["golden_labels"])}
        x = v["inputs"].reshape(len(v["inputs"]), -1).astype(np.float64)
        classes = np.unique(v["golden_labels"])
        self.classes = classes
        self.centroids = np.stack([x[v["golden_labels"] == c].mean(0) for c in classes])
        self.raw = np.stack([np.rint(v["golden_raw"][v["golden_labels"] == c].mean(0))
                             for c in classes]).astype(np.int64)

    def infer(self, x):
        x = np.asarray(x, dtype="<i8").reshape(len(x), -1)
        raw, labels = [], []
        for row in x:
            hit = self.table.get(row.tobytes())
            if hit is None:
                k = int(np.argmin(((self.centroids - row) ** 2).sum(1)))
                hit = (self.raw[k], self.classes[k])
            raw.append(hit[0])
            labels.append(hit[1])
        return np.stack(raw), np.array(labels, dtype=np.int64)


class LabelLiar(Wrapped):
    """Raw outputs exact, but the label of the first vector of every batch is moved by one."""

    def infer(self, x):
        raw, labels = self.backend.infer(x)
        labels = np.array(labels, copy=True)
        labels[0] = (labels[0] + 1) % raw.shape[1]
        return raw, labels


# ---------------------------------------------------------------- boards, both modes


def test_a_healthy_board_passes_both_modes(run_cli, boards, digits_package, keypair, challenge,
                                           tmp_path):
    port = boards()
    for mode, extra in (("selftest", ()), ("challenge", ("--challenge", challenge))):
        code, text, checks = run(run_cli, digits_package, keypair[1], port, *extra,
                                 report=tmp_path / f"{mode}.json")
        assert code == 0 and "verdict: PASS" in text, text
        assert checks["exact"]["status"] == checks["fingerprint"]["status"] == PASS, mode


def test_one_flipped_weight_bit_fails_both_modes(run_cli, boards, digits_package, keypair,
                                                 challenge, flip, tmp_path):
    port = boards(faults=FaultSpec(flips=[flip]))
    code, text, checks = run(run_cli, digits_package, keypair[1], port, "--challenge", challenge,
                             report=tmp_path / "c.json")
    assert code == 1 and "exact" in text, text
    assert checks["exact"]["status"] == FAIL and checks["exact"]["failed"] >= 1


def test_a_board_one_lsb_off_fails_both_modes(run_cli, boards, digits_package, keypair,
                                              challenge, tmp_path):
    port = boards(wrap=OneLsb)
    for mode, extra in (("selftest", ()), ("challenge", ("--challenge", challenge))):
        code, text, checks = run(run_cli, digits_package, keypair[1], port, *extra,
                                 report=tmp_path / f"{mode}.json")
        n = checks["exact"]["failed"] + checks["exact"]["passed"]
        assert code == 1 and checks["exact"]["status"] == FAIL, (mode, text)
        assert checks["exact"]["failed"] == n  # every vector, element 0
        assert checks["fingerprint"]["status"] == PASS  # the labels alone would pass


def test_a_board_answering_from_the_embedded_centroids_fails(run_cli, boards, digits_package,
                                                             keypair, challenge, tmp_path):
    port = boards(wrap=CentroidImpostor)
    code, text, checks = run(run_cli, digits_package, keypair[1], port,
                             report=tmp_path / "s.json")
    assert code == 0, text  # it holds the package: the self-test cannot tell
    code, text, checks = run(run_cli, digits_package, keypair[1], port, "--challenge",
                             challenge, report=tmp_path / "c.json")
    assert code == 1 and checks["exact"]["status"] == FAIL, text


def test_a_label_liar_fails_a_boundary_challenge(run_cli, boards, digits_build, digits_package,
                                                 keypair, tmp_path):
    """Exact raw outputs do not excuse a wrong label: the boundary check judges labels."""
    pkg = verify_package(digits_package, trusted_key=keypair[1])
    golden_sha = pkg.manifest["files"]["model/golden.onnx"]
    fp = make_challenge(digits_build.golden, moved(digits_build.inputs), tmp_path / "b.npz",
                        threshold=1.0, algorithm="boundary", source_sha256=golden_sha)
    plan = challenge_plan(pkg, fp, RNG)
    assert plan.policy.checks[0] == "boundary" and plan.policy.boundary_count == len(plan.order)
    code, text, checks = run(run_cli, digits_package, keypair[1], boards(wrap=LabelLiar),
                             "--challenge", fp, report=tmp_path / "r.json")
    assert code == 1 and checks["boundary"]["status"] == FAIL, text
    assert checks["exact"]["status"] == FAIL and "another label" in checks["exact"]["detail"]
    code, text, _ = run(run_cli, digits_package, keypair[1], boards(), "--challenge", fp)
    assert code == 0, text


def test_a_board_with_exact_raw_outputs_and_other_labels_fails_both_modes(
        run_cli, boards, digits_package, keypair, challenge, tmp_path):
    """The label is a function of the raw output: an exact accelerator behind a tampered label
    step fails the exact check, though its labels alone would reach the match-rate threshold."""
    port = boards(wrap=LabelLiar)
    for mode, extra in (("selftest", ()), ("challenge", ("--challenge", challenge))):
        code, text, checks = run(run_cli, digits_package, keypair[1], port, *extra,
                                 report=tmp_path / f"{mode}.json")
        assert code == 1 and checks["exact"]["status"] == FAIL, (mode, text)
        assert "with the golden raw output but another label" in checks["exact"]["detail"]
        assert checks["fingerprint"]["status"] == PASS, (mode, text)
        rows = json.loads((tmp_path / f"{mode}.json").read_text())["verdict"]["vectors"]
        liars = [r for r in rows if r["exact"] is False]
        assert liars and all(r["raw_diff"] == 0 and r["label"] != r["golden_label"]
                             for r in liars), mode


# ---------------------------------------------------------------- the plan: one pass rule


def test_a_challenge_takes_the_package_policy_and_the_stricter_threshold(
        digits_build, digits_package, keypair, tmp_path):
    pkg = verify_package(digits_package, trusted_key=keypair[1])
    own = selftest_plan(pkg).policy
    x = moved(digits_build.inputs)
    own_thr = own.fingerprint_threshold
    # a set looser than the package, and one stricter that a healthy board passes confidently
    best = clopper_pearson(len(x), len(x))[0]
    for i, thr in enumerate((max(0.01, own_thr - 0.3), (own_thr + best) / 2)):
        fp = make_challenge(digits_build.golden, x, tmp_path / f"{i}.npz", threshold=thr)
        plan = challenge_plan(pkg, fp, RNG)
        assert plan.policy.fingerprint_threshold == max(thr, own.fingerprint_threshold)
        assert set(plan.policy.checks) == set(own.checks)
        raw, _, labels = GoldenModel(digits_build.golden).run(x)
        assert np.array_equal(plan.expected.golden_raw, raw)
        assert np.array_equal(plan.expected.golden_labels, labels)


def _exact_only(src: Path, dst: Path, key: Path, checks=("exact",), threshold=1.0) -> Path:
    import shutil

    shutil.copytree(src, dst)
    policy = dst / "selftest" / "policy.json"
    doc = json.loads(policy.read_text())
    doc.update(checks=list(checks), fingerprint_threshold=threshold)
    policy.write_text(json.dumps(doc))
    return resign(dst, key, edit=lambda m: m["selftest"].update(checks=list(checks)))


def test_challenges_that_cannot_judge_are_refused(digits_build, digits_package, keypair,
                                                  tmp_path):
    pkg = verify_package(digits_package, trusted_key=keypair[1])
    x = moved(digits_build.inputs)
    fp = load_set(make_challenge(digits_build.golden, x, tmp_path / "ok.npz"))
    # labels outside the model's classes
    bad = FingerprintSet(fp.inputs_int, np.where(np.arange(len(fp)) == 3, 10, fp.labels),
                         fp.margins, "robust", {}, 0, "", fp.input_shape, threshold=0.9)
    with pytest.raises(InputError, match=r"challenge label 10 \(vector 3\) is not a class"):
        challenge_plan(pkg, bad.save(tmp_path / "bad.npz"), RNG)
    # labels the deployed model itself does not give
    wrong = FingerprintSet(fp.inputs_int, (fp.labels + 1) % 10, fp.margins, "robust", {}, 0,
                           "", fp.input_shape, threshold=0.9)
    with pytest.raises(InputError, match="a healthy board would not pass this challenge"):
        challenge_plan(pkg, wrong.save(tmp_path / "wrong.npz"), RNG)
    # fewer vectors than the package's self-test: a PASS would rest on fewer answers
    few = make_challenge(digits_build.golden, x[:len(x) - 1], tmp_path / "few.npz")
    with pytest.raises(InputError, match=rf"{len(x) - 1} challenge vectors, fewer than the "
                                         rf"package's {len(x)} self-test vectors"):
        challenge_plan(pkg, few, RNG)
    # threshold 0 under a policy without a fingerprint threshold of its own
    exact = verify_package(_exact_only(digits_package, tmp_path / "exact", keypair[0]),
                           trusted_key=keypair[1])
    zero = make_challenge(digits_build.golden, x, tmp_path / "zero.npz", threshold=0.0)
    with pytest.raises(InputError, match="a threshold of 0 passes every board"):
        challenge_plan(exact, zero, RNG)


def test_a_fingerprint_only_policy_needs_its_flag_and_is_recorded(
        run_cli, boards, digits_package, keypair, challenge, tmp_path):
    weak = _exact_only(digits_package, tmp_path / "weak", keypair[0], ("fingerprint",), 0.5)
    pub = keypair[1]
    with in_process_board(weak, pub, pty=True) as link:
        for extra in ((), ("--challenge", challenge)):
            code, text, _ = run(run_cli, weak, pub, link.url, *extra)
            assert code == 2 and "has no integrity check" in text, text
            assert "--allow-fingerprint-only" in text
            report = tmp_path / f"r{len(extra)}.json"
            code, text, checks = run(run_cli, weak, pub, link.url, *extra,
                                     "--allow-fingerprint-only", report=report)
            assert code == 0 and "warning: package" in text and "NOT that the weights" in text
            assert json.loads(report.read_text())["fingerprint_only"] is True
            assert set(checks) == {"identity", "fingerprint"}
        db = tmp_path / "accept.db"
        code, out, err = run_cli("accept", "--ports", link.url, "--package", weak,
                                 "--trusted-key", pub, "--db", f"sqlite:///{db}")
        assert code == 2 and "has no integrity check" in err and not db.exists()
        code, out, err = run_cli("accept", "--ports", link.url, "--package", weak,
                                 "--trusted-key", pub, "--db", f"sqlite:///{db}",
                                 "--allow-fingerprint-only", "--junit", tmp_path / "j.xml")
        assert code == 0, out + err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status, fingerprint_only FROM accept_results").fetchall() \
            == [("PASS", 1)]
    assert "fingerprint_only" in (tmp_path / "j.xml").read_text()


def test_the_self_test_policy_is_the_one_the_board_is_judged_by(digits_package, keypair):
    pkg = verify_package(digits_package, trusted_key=keypair[1])
    plan = selftest_plan(pkg)
    v = load_vectors(digits_package)
    assert np.array_equal(plan.inputs, v["inputs"]) and not plan.fingerprint_only
    assert "exact" in plan.policy.checks


def test_a_challenge_under_a_policy_without_exact_check_needs_the_flag(
        digits_build, digits_package, keypair, tmp_path):
    """A boundary tier judges only the package's own vectors: an ordinary challenge of such a
    package would be judged by labels alone."""
    pkg = verify_package(digits_package, trusted_key=keypair[1])
    n = len(load_vectors(digits_package)["inputs"])
    weak = _exact_only(digits_package, tmp_path / "bd", keypair[0], ("fingerprint", "boundary"),
                       0.5)
    policy = weak / "selftest" / "policy.json"
    doc = json.loads(policy.read_text())
    doc["boundary_count"] = n // 4
    policy.write_text(json.dumps(doc))
    weak_pkg = verify_package(resign(weak, keypair[0]), trusted_key=keypair[1])
    assert not selftest_plan(weak_pkg).fingerprint_only  # the self-test has its boundary tier
    fp = make_challenge(digits_build.golden, moved(digits_build.inputs), tmp_path / "c.npz")
    with pytest.raises(InputError, match="would be judged by labels alone"):
        challenge_plan(weak_pkg, fp, RNG)
    assert challenge_plan(weak_pkg, fp, RNG, allow_fingerprint_only=True).fingerprint_only
    assert not challenge_plan(pkg, fp, RNG).fingerprint_only


class OtherBitstream(Wrapped):
    """A board that reports another bitstream than the package's."""

    def identity(self):
        return {**self.backend.identity(), "bitstream_sha256": "ab" * 32}


def test_the_station_judges_identity_and_marginal_passes_as_verify_does(
        digits_build, make_package, keypair, tmp_path):
    pub = keypair[1]

    def station(pkg, url):
        r = run_fpgaprint("station", "--port", url, "--package", pkg, "--trusted-key", pub)
        return r.returncode, r.stdout + r.stderr

    flashed = make_package("digits-mlp", tmp_path / "bit", hw={"top.bit": b"a bitstream"})
    with in_process_board(flashed, pub, wrap=OtherBitstream, pty=True) as link:
        code, text = station(flashed, link.url)
    assert code != 0 and "identity" in text and "verdict: PASS" not in text, text
    golden_labels = GoldenModel(digits_build.golden).run(digits_build.inputs)[2]
    k, n = int((golden_labels == digits_build.expected).sum()), len(golden_labels)
    edge = make_package("digits-mlp", tmp_path / "edge", threshold=k / n)  # rate == threshold
    with in_process_board(edge, pub, pty=True) as link:
        code, text = station(edge, link.url)
    assert code != 0 and "NO_VERDICT" in text and "verdict: PASS" not in text, text
