"""Verify one board against its deployment package: identity, then the vectors, then the verdict.

One pass rule for every mode (`core.selftest.evaluate` with the package's policy):
- ``selftest``: the package's embedded vectors.
- ``challenge``: a verifier-held fingerprint set the board never stored, sent in random order,
  each batch bound to a fresh nonce. It is the self-test run with other inputs: the expected
  raw outputs and deployed labels come from the package's golden model, and the policy's
  `exact` and `onchip` checks apply as in the self-test; the label check is `fingerprint`
  against the set's pre-trained labels, at the stricter of the set's and the policy's
  thresholds (`boundary` for a boundary set), and `score` when the set carries it (at the
  stricter of its and the policy's score thresholds; the deployed class scores come from the
  board's raw outputs through the golden graph's host tail). A set sharing any input with the
  package's vectors is refused: a board may hold the package, and the answers to those inputs
  with it.

A policy without an integrity check (`exact` or `boundary`) is refused unless the caller allows
it (`--allow-fingerprint-only`, warned and recorded). A PASS whose fingerprint or score interval
straddles its threshold is reported as NO_VERDICT (exit 3), with a reason starting "no
confident verdict": never as a plain PASS.

Everything is bounded by one deadline (`LinkSettings.deadline`, by default derived from the
number of vectors and the line rate); a board that does not finish in time gives NO_VERDICT.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from fpgaprint.core.errors import InputError, LinkError, PortUnavailable, VerdictFail
from fpgaprint.core.grid import InputGrid
from fpgaprint.harness.verdict import (
    FAIL,
    NO_VERDICT,
    PASS,
    Answers,
    BoardOutcome,
    CheckResult,
    Expected,
    Policy,
    Verdict,
    decide,
    evaluate,
    identity_check,
    marginal_reason,
)

if TYPE_CHECKING:
    from fpgaprint.core.package import Package

DEFAULT_BATCH = 16
NONCE_BYTES = 16


@dataclass
class Plan:
    """What to send and what to expect: inputs (N, ...), expected answers, the checks."""

    mode: str
    inputs: np.ndarray
    expected: Expected
    policy: Policy
    order: np.ndarray  # the sending order (a permutation of range(N))
    bist: Any = None  # the package's on-chip self-test (core.bist.BistSpec), onchip check
    fingerprint_only: bool = False  # a policy without integrity check, allowed by the caller


@dataclass(frozen=True)
class LinkSettings:
    """How the host talks to a board; the defaults are the CLI's defaults."""

    timeout: float = 2.0  # longest silence for one answer (adapted down to the line)
    retries: int = 3  # resends of a request while the board stays silent (more on live lines)
    batch: int = DEFAULT_BATCH  # vectors per INFER/CHALLENGE call
    baud: int = 115200  # line rate: port speed and time allowances
    deadline: float | None = None  # seconds for the whole verification; None: derived

    def deadline_for(self, plan: "Plan") -> float:
        return self.deadline if self.deadline is not None else default_deadline(
            len(plan.order), int(plan.inputs[0].size) if len(plan.inputs) else 0, self.baud)


def default_deadline(vectors: int, values_per_vector: int, baud: int) -> float:
    """Seconds a whole verification may take: 20 s for set-up (port, HELLO, INFO), ten times
    the line time of the vectors and their answers (8 B per input value at worst, 64 B of
    answer and framing per vector), and 0.1 s of compute per vector."""
    line = vectors * (8 * values_per_vector + 64) * 10.0 / baud
    return 20.0 + 10.0 * line + 0.1 * vectors


def load_package(
    path: str | Path, trusted_key: str | Path | tuple | None = None,
    allow_unsigned: bool = False, allow_unpinned: bool = False,
) -> "Package":
    """Verify the package (signature under the host's trust anchors, hashes, contents);
    InputError names what failed."""
    from fpgaprint.core.package import verify_package

    return verify_package(path, trusted_key=trusted_key, allow_unsigned=allow_unsigned,
                          allow_unpinned=allow_unpinned)


def raw_width(pkg: "Package") -> int:
    return math.prod(pkg.io["raw_output"]["shape"][1:])


def answer_width(pkg: "Package", policy: Policy) -> int | None:
    """The raw width to collect from the board: when a check reads raw outputs (`exact`,
    `score`), else None."""
    return raw_width(pkg) if {"exact", "score"} & set(policy.checks) else None


def check_policy_strength(policy: Policy, allow_fingerprint_only: bool, where: str) -> bool:
    """Refuse a policy with no integrity check (neither `exact` nor `boundary`) unless allowed:
    labels at a threshold tell a model's provenance, not whether its weights are intact (docs/
    fingerprint.md). Returns True when such a policy was allowed (warned and recorded)."""
    if "exact" in policy.checks or "boundary" in policy.checks:
        return False
    if not allow_fingerprint_only:
        raise InputError(
            f"{where}: the policy has no integrity check (checks {list(policy.checks)}): a "
            "label match rate does not detect weight faults or tampering; give "
            "--allow-fingerprint-only to verify with it anyway (warned and recorded)")
    return True


def selftest_plan(pkg: "Package", allow_fingerprint_only: bool = False) -> Plan:
    """The package's embedded vectors, in order, with its policy."""
    v = pkg.vectors()
    policy = Policy.from_dict(pkg.policy(), where=f"{pkg.dir}: selftest/policy.json")
    weak = check_policy_strength(policy, allow_fingerprint_only,
                                 f"{pkg.dir}: selftest/policy.json")
    score = "score" in policy.checks
    expected = Expected(v["expected_labels"], v["golden_raw"], v["golden_labels"],
                        v.get("source_outputs") if score else None,
                        pkg.golden().deployed_scores if score else None)
    n = len(expected)
    bist = pkg.bist()
    if "onchip" in policy.checks and bist is None:
        raise InputError(f"{pkg.dir}: the policy has the onchip check but the package has no "
                         "on-chip self-test (hw/rtl/bist/bist.json)")
    return Plan("selftest", np.asarray(v["inputs"], dtype=np.int64), expected, policy,
                np.arange(n), bist, weak)


def challenge_plan(pkg: "Package", fp_path: str | Path, rng: np.random.Generator,
                   allow_fingerprint_only: bool = False) -> Plan:
    """A verifier-held fingerprint set, judged by the package's own pass rule.

    The set's inputs are the self-test run's inputs: the golden raw outputs and deployed labels
    come from the package's golden model, bit-exactly, and every check of the package's policy
    that can apply does (`exact` on the challenge vectors, `onchip` from the board's registers,
    `fingerprint` against the set's pre-trained labels at the stricter of the set's and the
    policy's thresholds; a boundary set: `boundary` against the deployed labels)."""
    from fpgaprint.core.fpset import load_set

    base_plan = selftest_plan(pkg, allow_fingerprint_only)  # the package's policy, checked
    base = base_plan.policy
    fp = load_set(fp_path)
    in_shape = tuple(pkg.io["input"]["shape"][1:])
    if tuple(fp.input_shape) != in_shape:
        raise InputError(
            f"{fp_path}: challenge inputs have shape {tuple(fp.input_shape)}, the package "
            f"{pkg.dir} takes {in_shape}"
        )
    dtype = pkg.io["input"].get("datatype")
    if dtype and dtype != fp.grid.datatype:
        raise InputError(
            f"{fp_path}: challenge set is on the {fp.grid.datatype} grid, the package's input "
            f"datatype is {dtype}"
        )
    if pkg.manifest.get("input_grid") is not None:
        grid = InputGrid.from_dict(pkg.manifest["input_grid"], f"{pkg.dir}: input_grid")
        if not fp.grid.same_integers(grid):
            raise InputError(f"{fp_path}: challenge set is on the input grid "
                             f"{fp.grid.describe()}, the package's is {grid.describe()}")
    if len(fp) == 0:
        raise InputError(f"{fp_path}: empty challenge set")
    check_disjoint(pkg, fp.inputs_int, fp_path)
    own_count = len(base_plan.expected)
    if len(fp) < own_count:
        raise InputError(f"{fp_path}: {len(fp)} challenge vectors, fewer than the package's "
                         f"{own_count} self-test vectors: a challenge PASS must rest on at least "
                         "as many answers as the self-test's; use a larger set")
    golden = pkg.golden()
    golden_raw, golden_labels, classes = golden_answers(pkg, fp.inputs_int, golden)
    bad = np.flatnonzero((fp.labels < 0) | (fp.labels >= classes))
    if len(bad):
        raise InputError(f"{fp_path}: challenge label {int(fp.labels[bad[0]])} (vector "
                         f"{int(bad[0])}) is not a class of the package's model (0 to "
                         f"{classes - 1})")
    kept = tuple(c for c in ("exact", "onchip") if c in base.checks)
    n = len(fp)
    if fp.algorithm == "boundary":  # labels of the deployed model: bound to its golden graph
        golden_sha = pkg.manifest.get("files", {}).get("model/golden.onnx")
        if fp.source_sha256 != golden_sha:
            raise InputError(
                f"{fp_path}: boundary set was made from the golden model {fp.source_sha256[:16]}…"
                f", the package {pkg.dir} holds {str(golden_sha)[:16]}…")
        differ = np.flatnonzero(fp.labels != golden_labels)
        if len(differ):
            raise InputError(f"{fp_path}: boundary label of vector {int(differ[0])} is "
                             f"{int(fp.labels[differ[0]])}, the package's golden model says "
                             f"{int(golden_labels[differ[0]])}")
        policy = Policy(("boundary", *kept), 1.0, n)
    else:
        source = pkg.policy().get("source_model_sha256")
        if source and fp.source_sha256 and source != fp.source_sha256:
            raise InputError(
                f"{fp_path}: challenge set comes from model {fp.source_sha256[:16]}…, the "
                f"package was built from {source[:16]}…"
            )
        own = base.fingerprint_threshold if "fingerprint" in base.checks else 0.0
        threshold = max(float(fp.threshold), own)
        if threshold <= 0.0:
            raise InputError(f"{fp_path}: challenge threshold {fp.threshold:g}: a threshold of "
                             "0 passes every board")
        policy = Policy(("fingerprint", *kept), threshold)
        own_answers = evaluate(None, golden_labels, {"expected_labels": fp.labels},
                               Policy(("fingerprint",), threshold))
        if fp.has_score:
            policy = challenge_score(pkg, fp, fp_path, base, policy, golden, golden_raw)
        if own_answers.status != PASS or own_answers.marginal:
            c = own_answers.check("fingerprint")
            raise InputError(
                f"{fp_path}: the package's own golden model gives {c.passed}/{n} of the set's "
                f"labels at threshold {threshold:.3f} (" + ("MARGINAL" if c.status == PASS
                                                            else "FAIL")
                + "): a healthy board would not pass this challenge confidently; use a larger "
                "set or one calibrated for this package")
    weak = base_plan.fingerprint_only
    if "exact" not in kept and fp.algorithm != "boundary" and not weak:
        if not allow_fingerprint_only:  # the policy's boundary tier covers only its own vectors
            raise InputError(
                f"{fp_path}: the package's policy has no exact check, so this challenge would be "
                "judged by labels alone (a boundary set is judged strictly); give "
                "--allow-fingerprint-only to verify with it anyway (warned and recorded)")
        weak = True
    score = "score" in policy.checks
    expected = Expected(fp.labels, golden_raw if "exact" in kept else None, golden_labels,
                        fp.source_outputs if score else None,
                        golden.deployed_scores if score else None)
    return Plan("challenge", fp.inputs_int, expected, policy, rng.permutation(n),
                base_plan.bist, weak)


def challenge_score(pkg: "Package", fp, fp_path, base: Policy, policy: Policy, golden,
                    golden_raw: np.ndarray) -> Policy:
    """`policy` with the score check of a challenge set that carries it, at the stricter of
    the set's and the package policy's score thresholds; refused (InputError) when the
    package's own golden model would not pass it confidently."""
    classes = int(fp.source_outputs.shape[1])
    if classes != raw_width(pkg):
        raise InputError(f"{fp_path}: the set's source outputs have {classes} classes, the "
                         f"package's raw output {raw_width(pkg)} values")
    own = base.score_threshold if "score" in base.checks else -1.0
    score = Policy((*policy.checks, "score"), policy.fingerprint_threshold,
                   policy.boundary_count, max(float(fp.score_threshold), own))
    mine = evaluate(None, fp.labels, {"expected_labels": fp.labels,
                                      "source_outputs": fp.source_outputs},
                    Policy(("score",), score_threshold=score.score_threshold),
                    scores=golden.deployed_scores(golden_raw)).check("score")
    if mine.status != PASS or mine.extra.get("marginal"):
        raise InputError(f"{fp_path}: the package's own golden model does not pass the set's "
                         f"score check confidently ({mine.detail}); use a set calibrated for "
                         "this package")
    return score


def golden_answers(pkg: "Package", inputs: np.ndarray, golden=None
                   ) -> tuple[np.ndarray, np.ndarray, int]:
    """(golden raw outputs, deployed labels, number of classes) of `inputs` from the package's
    golden model, computed bit-exactly as the build computes the embedded vectors'."""
    golden = golden or pkg.golden()
    raw, logits, labels = golden.run(inputs)
    return raw, labels, int(np.asarray(logits).reshape(len(inputs), -1).shape[1])


def check_disjoint(pkg: "Package", challenge: np.ndarray, where: str | Path) -> None:
    """Refuse a challenge that shares an input with the package's self-test vectors: the
    board holds the package, so it can look those answers up instead of computing them."""
    from fpgaprint.core.fpset import shared_rows

    shared = shared_rows(pkg.vectors()["inputs"], challenge)
    if shared:
        i, j = shared[0]
        raise InputError(
            f"{where}: challenge set shares {len(shared)} of its {len(challenge)} inputs with "
            f"the package's self-test vectors (challenge input {i} is self-test vector {j}); "
            "a board holds its package and can look those answers up, so a challenge must be "
            "a set the board never saw"
        )


def expected_identity(pkg: "Package", protocol: Any) -> dict[str, Any]:
    """Identity fields the board must report for this package."""
    return {"package_id": pkg.package_id, "protocol": protocol,
            "bitstream_sha256": pkg.bitstream_sha256}


def _protocol_version() -> int:
    from fpgaprint.hw_targets.protocol import PROTOCOL_VERSION

    return PROTOCOL_VERSION


def run_plan(
    client: Any,
    plan: Plan,
    answers: Answers,
    batch_size: int = DEFAULT_BATCH,
    nonces: list[str] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Send the plan's vectors in batches and record the answers (LinkError propagates)."""
    for start in range(0, len(plan.order), batch_size):
        idx = plan.order[start:start + batch_size]
        x = plan.inputs[idx]
        if plan.mode == "challenge":
            nonce = os.urandom(NONCE_BYTES)
            if nonces is not None:
                nonces.append(nonce.hex())
            raw, labels = client.challenge(nonce, x)
        else:
            raw, labels = client.infer(x)
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(idx):
            raise LinkError(f"board answered {len(labels)} labels for a batch of {len(idx)}")
        answers.record(idx, raw, labels)
        if on_batch is not None:
            on_batch(len(idx))


def verify_board(
    port: str,
    pkg: "Package",
    plan: Plan,
    settings: LinkSettings = LinkSettings(),
    client_factory: Callable[..., Any] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> BoardOutcome:
    """Connect, check identity, run the plan; never raises LinkError (it becomes NO_VERDICT)
    and never takes longer than the deadline (plus closing the port)."""
    if client_factory is None:
        from fpgaprint.harness.client import BoardClient as client_factory
    started = time.time()
    t0 = time.perf_counter()
    deadline = settings.deadline_for(plan)
    answers = Answers(len(plan.expected), answer_width(pkg, plan.policy))
    identity: dict[str, Any] = {}
    board_selftest: dict[str, Any] | None = None
    nonces: list[str] = []
    ident: CheckResult | None = None
    link_error: str | None = None
    unreachable = False
    bound: CheckResult | None = None
    phases: dict[str, float] = {}  # seconds of the HELLO exchange and of the vectors
    try:
        with client_factory(port, timeout=settings.timeout, retries=settings.retries,
                            baud=settings.baud, deadline=deadline) as client:
            identity = dict(client.hello())
            phases["identity"] = time.perf_counter() - t0
            ident = identity_check(expected_identity(pkg, _protocol_version()), identity)
            if ident.status != FAIL:
                t_info = time.perf_counter()
                try:  # the board's own power-on self-test; the onchip check reads its BIST
                    board_selftest = dict(client.info()).get("selftest")
                except LinkError as e:
                    board_selftest = {"unavailable": str(e)}
                phases["onchip"] = time.perf_counter() - t_info
                t1 = time.perf_counter()
                try:
                    run_plan(client, plan, answers, settings.batch, nonces, on_batch)
                finally:
                    phases["vectors"] = time.perf_counter() - t1
    except PortUnavailable as e:
        link_error, unreachable = str(e), True
    except LinkError as e:
        link_error = str(e)
    except VerdictFail as e:  # a challenge answer not bound to its nonce and inputs
        bound = CheckResult("binding", FAIL, str(e), failed=1)
    if ident is None:
        ident = CheckResult("identity", NO_VERDICT, f"no answer to HELLO: {link_error}")
    if ident.status == FAIL:
        verdict = Verdict(FAIL, ident.detail, [ident], [])
    else:
        extra = [ident] if bound is None else [ident, bound]
        onchip = (board_selftest or {}).get("bist") if "onchip" in plan.policy.checks else None
        verdict = decide(plan.expected, answers, plan.policy, extra_checks=extra,
                         onchip=onchip, bist=plan.bist)
    status, reason = verdict.status, verdict.reason
    if unreachable:  # the one reason: nothing was sent, so nothing else is worth saying
        reason = link_error
    elif link_error and verdict.status == NO_VERDICT and "HELLO" not in reason:
        reason = f"link error: {link_error}; {reason}"
    if verdict.marginal:  # a pass an interval does not support: no confident verdict
        status = verdict.reported
        reason = marginal_reason(verdict.checks)
    verification = pkg.verification
    return BoardOutcome(
        port=port, status=status, reason=reason, package_id=pkg.package_id,
        package_name=pkg.manifest.get("name", ""), mode=plan.mode, identity=identity,
        board_selftest=board_selftest, verdict=verdict, started=started,
        duration_s=time.perf_counter() - t0, nonce=",".join(nonces) or None, phases_s=phases,
        deadline_s=deadline,
        trust=None if verification is None else verification.trust_record(),
        unreachable=unreachable, fingerprint_only=plan.fingerprint_only,
    )
