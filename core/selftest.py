"""The self-test contract, written once: which checks exist, the policy, and the pass rule.

Every caller decides with `evaluate`: the board's power-on self-test, the host's verdict, the
OpenHTF station, the build (does the compiled model pass its own self-test?) and
`fingerprint check`.

Checks:
- ``exact``: the board's raw output equals the golden model's raw output, element for element,
  and (where the vectors record the deployed model's labels) its label equals the deployed
  model's label: the label is a function of the raw output, so an exact board with another
  label has a tampered output step;
- ``fingerprint``: the board's label equals the pre-trained model's label; the number of
  matches over *all* vectors of the fingerprint tier must reach ``ceil(threshold * N)``. The
  match rate's Clopper-Pearson interval is reported; a pass whose interval straddles the
  threshold is flagged ``marginal`` (callers never present it as a plain PASS);
- ``boundary`` (fragile tier): the board's label equals the *deployed* model's label on every
  vector of the boundary tier; one differing label is FAIL;
- ``onchip``: the accelerator's own self-test (BIST, `core.bist`) ran to completion over the
  package's vectors from its ROM and reports PASS, an intact ROM and the golden output
  signature the package records; packages built with a BIST carry it;
- ``score`` (sets whose calibration keeps it): over the fingerprint tier, the correlation of
  the board's deployed class-score margins with the pre-trained model's (`core.scores`), with
  its Fisher-z interval: FAIL when the interval's upper end is below ``score_threshold``,
  ``marginal`` when the interval straddles it. It only adds a way to fail.

A set of N vectors holds the fingerprint tier first and the boundary tier (the last
``boundary_count`` vectors) after it; the exact check covers both.

Missing answers never give PASS. A check is FAIL as soon as the answers received prove it (one
raw mismatch; too few label matches even if every missing answer matched); otherwise missing
answers leave it NO_VERDICT. The overall status is FAIL if any check fails, else NO_VERDICT if
any check has none, else PASS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.scores import CONFIDENCE, margin_correlation

PASS = "PASS"
FAIL = "FAIL"
NO_VERDICT = "NO_VERDICT"
MARGINAL = "MARGINAL"  # a PASS an interval does not support (no confident verdict)
EXIT_CODES = {PASS: 0, FAIL: 1, NO_VERDICT: 3}
CHECKS = ("exact", "fingerprint", "boundary", "onchip", "score")
MARGINAL_CHECKS = ("fingerprint", "score")  # checks whose interval may straddle a threshold
# CONFIDENCE: the level of every interval of the rule (match rate, score)
MAX_BOUNDARY = 1_000_000  # bound on the boundary tier's size read from a policy


@dataclass(frozen=True)
class Policy:
    """Which checks apply, the fingerprint match-rate threshold, the size of the boundary
    tier (the last `boundary_count` vectors) and the score check's margin-correlation
    threshold (exactly when it applies); the one validation."""

    checks: tuple[str, ...]
    fingerprint_threshold: float = 1.0
    boundary_count: int = 0
    score_threshold: float | None = None

    def __post_init__(self) -> None:
        check_checks(self.checks, "policy")
        check_threshold(self.fingerprint_threshold, "policy")
        check_boundary_count(self.boundary_count, self.checks, "policy")
        check_score_threshold(self.score_threshold, self.checks, "policy")

    @classmethod
    def from_dict(cls, d: Any, where: str = "policy") -> "Policy":
        if not isinstance(d, Mapping):
            raise InputError(f"{where}: expected a JSON object, got {type(d).__name__}")
        checks = check_checks(d.get("checks"), where)
        thr = d.get("fingerprint_threshold", 1.0 if "fingerprint" not in checks else None)
        nb = check_boundary_count(d.get("boundary_count", 0), checks, where)
        st = check_score_threshold(d.get("score_threshold"), checks, where)
        return cls(checks, check_threshold(thr, where), nb, st)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"checks": list(self.checks),
                             "fingerprint_threshold": self.fingerprint_threshold}
        if "boundary" in self.checks:
            d["boundary_count"] = self.boundary_count
        if "score" in self.checks:
            d["score_threshold"] = self.score_threshold
        return d

    def with_checks(self, *checks: str) -> "Policy":
        """This policy with `checks` added (their thresholds as set here)."""
        return replace(self, checks=(*self.checks, *(c for c in checks
                                                     if c not in self.checks)))

    def required_matches(self, n: int) -> int:
        """Label matches out of `n` that the fingerprint check needs."""
        return math.ceil(self.fingerprint_threshold * n - 1e-9)

    def tiers(self, n: int, where: str = "policy") -> tuple[slice, slice]:
        """(fingerprint tier, boundary tier) of `n` vectors; refuses sizes that do not fit."""
        nb = self.boundary_count
        if nb > n:
            raise InputError(f"{where}: 'boundary_count' is {nb} but there are {n} vectors")
        if "fingerprint" in self.checks and n - nb < 1 <= n:
            raise InputError(f"{where}: the fingerprint check has no vectors: all {n} are "
                             "in the boundary tier")
        return slice(0, n - nb), slice(n - nb, n)


def check_checks(checks: Any, where: str) -> tuple[str, ...]:
    if (not isinstance(checks, (list, tuple)) or not checks
            or any(not isinstance(c, str) or c not in CHECKS for c in checks)
            or len(set(checks)) != len(checks)):
        raise InputError(f"{where}: 'checks' must be a non-empty list of distinct checks from "
                         f"{list(CHECKS)}, got {checks!r}")
    return tuple(checks)


def check_boundary_count(nb: Any, checks: tuple[str, ...], where: str) -> int:
    if isinstance(nb, bool) or not isinstance(nb, int) or not 0 <= nb <= MAX_BOUNDARY:
        raise InputError(f"{where}: 'boundary_count' must be an integer from 0 to "
                         f"{MAX_BOUNDARY}, got {nb!r}")
    if ("boundary" in checks) != (nb > 0):
        raise InputError(f"{where}: 'boundary_count' must be positive exactly when the "
                         f"boundary check applies (checks {list(checks)}, boundary_count {nb})")
    return nb


def check_score_threshold(t: Any, checks: tuple[str, ...], where: str) -> float | None:
    """The score check's threshold: a correlation in [-1, 1], given exactly when it applies."""
    if "score" not in checks:
        if t is not None:
            raise InputError(f"{where}: 'score_threshold' is set but the score check does not "
                             f"apply (checks {list(checks)})")
        return None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not -1.0 <= float(t) <= 1.0:
        raise InputError(f"{where}: 'score_threshold' must be a number in [-1, 1] when the "
                         f"score check applies, got {t!r}")
    return float(t)


def check_threshold(t: Any, where: str) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= float(t) <= 1.0:
        raise InputError(f"{where}: 'fingerprint_threshold' must be a number in [0, 1], "
                         f"got {t!r}")
    return float(t)


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval of a rate k/n."""
    from scipy.special import betaincinv  # the beta quantile; scipy.stats costs a second

    if n <= 0:
        return 0.0, 1.0
    a = (1.0 - confidence) / 2
    lo = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, a))
    hi = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - a))
    return lo, hi


@dataclass
class CheckResult:
    """One check's outcome: status, a one-line detail, counts, and check-specific figures."""

    name: str
    status: str
    detail: str
    passed: int = 0
    failed: int = 0
    missing: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """The outcome of `evaluate`: overall status and reason, the checks, per-vector results."""

    status: str
    reason: str
    checks: list[CheckResult]
    raw_diff: np.ndarray | None  # (N,) differing raw elements; -1 where unknown
    label_ok: np.ndarray | None  # (N,) label matches the expected label
    label_checked: np.ndarray | None = None  # (N,) the vector's tier has a label check
    boundary_count: int = 0  # the last vectors form the boundary tier
    exact: np.ndarray | None = None  # (N,) the exact check holds for the vector

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def match_rate(self) -> float | None:
        c = self.check("fingerprint")
        return None if c is None else c.extra["match_rate"]

    @property
    def marginal(self) -> bool:
        return is_marginal(self.status, self.checks)


def is_marginal(status: str, checks: list[CheckResult]) -> bool:
    """PASS by the rule, but an interval (fingerprint, score) straddles its threshold: callers
    report it as MARGINAL (no confident verdict, exit 3), never as a plain PASS."""
    return status == PASS and bool(marginal_checks(checks))


def marginal_checks(checks: list[CheckResult]) -> list[CheckResult]:
    """The checks whose interval straddles their threshold."""
    return [c for c in checks if c.name in MARGINAL_CHECKS and c.extra.get("marginal")]


def marginal_reason(checks: list[CheckResult]) -> str:
    """The reason a marginal PASS gets: each straddling check's detail."""
    return "no confident verdict: " + "; ".join(f"{c.name}: {c.detail}"
                                                for c in marginal_checks(checks))


def _indices(mask: np.ndarray, limit: int = 10) -> str:
    idx = np.flatnonzero(mask)
    s = ", ".join(str(i) for i in idx[:limit])
    return s + (", ..." if len(idx) > limit else "")


def exact_check(golden_raw: np.ndarray, raw: np.ndarray | None, answered: np.ndarray,
                raw_ok: np.ndarray, golden_labels: np.ndarray | None = None,
                labels: np.ndarray | None = None
                ) -> tuple[CheckResult, np.ndarray, np.ndarray]:
    """Raw == golden raw, and label == the deployed model's label where `golden_labels` are
    given, for every vector; the check, per-vector differing raw elements and per-vector
    exactness (raw and label)."""
    n = len(answered)
    diff = np.full(n, -1, dtype=np.int64)
    ok = answered & raw_ok
    if raw is not None and ok.any():
        diff[ok] = (np.asarray(raw)[ok] != np.asarray(golden_raw)[ok]).sum(axis=1)
    bad_label = np.zeros(n, bool)
    if golden_labels is not None:
        bad_label = answered & (np.asarray(labels) != np.asarray(golden_labels))
    bad = (answered & ~raw_ok) | (ok & (diff > 0)) | bad_label
    exact = ok & (diff == 0) & ~bad_label
    passed, failed, missing = int(exact.sum()), int(bad.sum()), int(n - answered.sum())
    what = "raw outputs" if golden_labels is None else "raw outputs and labels"
    if failed:
        detail = f"{failed}/{n} vectors differ from the golden model (vectors {_indices(bad)})"
        if (answered & ~raw_ok).any():
            detail += "; some answers had no raw output of the expected width"
        label_only = bad_label & ok & (diff == 0)
        if label_only.any():
            detail += (f"; {int(label_only.sum())} with the golden raw output but another label "
                       f"(vectors {_indices(label_only)})")
        status = FAIL
    elif missing:
        status, detail = NO_VERDICT, f"{missing}/{n} vectors unanswered"
    else:
        status, detail = PASS, f"{n}/{n} {what} equal the golden model"
    return CheckResult("exact", status, detail, passed, failed, missing), diff, exact


def interval_text(lo: float, hi: float, confidence: float = CONFIDENCE) -> str:
    return f"{100 * confidence:g} % interval [{lo:.3f}, {hi:.3f}]"


def fingerprint_check(expected_labels: np.ndarray, labels: np.ndarray, answered: np.ndarray,
                      threshold: float, confidence: float = CONFIDENCE
                      ) -> tuple[CheckResult, np.ndarray]:
    """Label == expected label; the matches over all N vectors must reach the threshold.

    The match rate's Clopper-Pearson interval at `confidence` is reported; `marginal` is set
    when it straddles the threshold (the status follows the rule alone)."""
    n = len(answered)
    match = answered & (np.asarray(labels) == np.asarray(expected_labels))
    matches, missing = int(match.sum()), int(n - answered.sum())
    need = Policy(("fingerprint",), threshold).required_matches(n)
    rate = matches / n if n else 0.0
    lo, hi = clopper_pearson(matches, n, confidence)
    marginal = bool(lo < threshold <= hi) and not missing
    extra = {"match_rate": rate, "threshold": threshold, "required_matches": need,
             "interval": [lo, hi], "confidence": confidence, "marginal": marginal}
    ci = interval_text(lo, hi, confidence)
    if matches + missing < need:
        status = FAIL
        detail = (f"match rate {rate:.3f} < threshold {threshold:.3f} "
                  f"({matches}/{n} labels match, {need} required; {ci})")
        if marginal:
            detail += "; marginal: the interval reaches the threshold"
    elif missing:
        status = NO_VERDICT
        detail = f"{missing}/{n} vectors unanswered ({matches} match so far, {need} required)"
    else:
        status = PASS
        detail = f"match rate {rate:.3f} >= threshold {threshold:.3f} ({matches}/{n}; {ci})"
        if marginal:
            detail = (f"MARGINAL: {detail}: the interval straddles the threshold, more vectors "
                      "are needed for a confident verdict")
    return CheckResult("fingerprint", status, detail, matches, n - matches - missing, missing,
                       extra), match


def boundary_check(expected_labels: np.ndarray, labels: np.ndarray, answered: np.ndarray
                   ) -> tuple[CheckResult, np.ndarray]:
    """Strict: every label of the boundary tier equals the deployed model's label."""
    n = len(answered)
    match = answered & (np.asarray(labels) == np.asarray(expected_labels))
    bad = answered & ~match
    matches, failed, missing = int(match.sum()), int(bad.sum()), int(n - answered.sum())
    extra = {"count": n, "mismatched": [int(i) for i in np.flatnonzero(bad)]}
    if failed:
        status = FAIL
        detail = (f"{failed}/{n} labels differ from the deployed model's (boundary vectors "
                  f"{_indices(bad)})")
    elif missing:
        status, detail = NO_VERDICT, f"{missing}/{n} boundary vectors unanswered"
    else:
        status, detail = PASS, f"{n}/{n} labels equal the deployed model's"
    return CheckResult("boundary", status, detail, matches, failed, missing, extra), match


def score_outcome(lo: float, hi: float, threshold: float) -> str:
    """The score check's verdict for a correlation interval [lo, hi]: FAIL when it lies below
    `threshold`, MARGINAL when it straddles it, else PASS."""
    return FAIL if hi < threshold else MARGINAL if lo < threshold else PASS


def score_check(source: np.ndarray, scores: np.ndarray | None, labels: np.ndarray,
                have: np.ndarray, threshold: float, confidence: float = CONFIDENCE
                ) -> CheckResult:
    """The deployed class scores (N, C) against the pre-trained model's `source` (N, C) for
    its `labels`: margin correlation (`core.scores`) and its Fisher-z interval. FAIL when the
    upper end is below `threshold`; `marginal` when the interval straddles it; vectors not in
    `have` (no raw answer) leave it NO_VERDICT."""
    n = len(have)
    missing = int(n - np.asarray(have, bool).sum())
    extra: dict[str, Any] = {"threshold": threshold, "confidence": confidence}
    if missing or scores is None:
        return CheckResult("score", NO_VERDICT, f"{missing or n}/{n} vectors without a raw "
                           "output for the score check", 0, 0, missing or n, extra)
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        bad = ~np.isfinite(scores).all(axis=1)
        return CheckResult("score", FAIL, f"deployed scores are not finite (vectors "
                           f"{_indices(bad)})", 0, n, 0, extra)
    r, lo, hi = margin_correlation(source, scores, labels, confidence)
    outcome = score_outcome(lo, hi, threshold)
    marginal = outcome == MARGINAL
    extra.update(correlation=r, interval=[lo, hi], marginal=marginal)
    ci = interval_text(lo, hi, confidence)
    text = f"margin correlation {r:.3f} with the pre-trained model over {n} vectors ({ci})"
    if outcome == FAIL:
        return CheckResult("score", FAIL, f"{text} < threshold {threshold:.3f}", 0, n, 0,
                           extra)
    if marginal:
        return CheckResult("score", PASS, f"MARGINAL: {text}: the interval straddles the "
                           f"threshold {threshold:.3f}, more vectors are needed for a confident "
                           "verdict", n, 0, 0, extra)
    return CheckResult("score", PASS, f"{text} >= threshold {threshold:.3f}", n, 0, 0, extra)


def onchip_check(record: Mapping[str, Any] | None, spec) -> CheckResult:
    """The board's BIST registers (`core.bist.RECORD_FIELDS`, or None when it reported none)
    against the package's BIST description `spec` (a `core.bist.BistSpec`)."""
    from fpgaprint.core import bist

    if record is None:
        return CheckResult("onchip", NO_VERDICT, "the board reported no on-chip self-test")
    try:
        r = bist.check_record(record)
    except InputError as e:
        return CheckResult("onchip", FAIL, str(e), failed=1)
    st = bist.decode_status(r["status"])
    regs = {k: (f"0x{v:08x}" if k in ("signature", "expected_signature", "rom_crc",
                                      "rom_crc_expected", "id") else v) for k, v in r.items()}
    extra = {"registers": regs, "mode": spec.mode, "cycles": r["cycles"],
             "first_fail": None if r["first_fail"] == bist.NONE else r["first_fail"]}
    n = spec.vectors

    def fail(detail: str) -> CheckResult:
        return CheckResult("onchip", FAIL, detail, 0, 1, 0, extra)

    if st["timeout"]:
        return fail(f"the on-chip self-test timed out after {r['cycles']} cycles (the "
                    "accelerator stopped answering)")
    if not st["done"]:
        return CheckResult("onchip", NO_VERDICT, "the on-chip self-test has not finished",
                           0, 0, n, extra)
    if r["vectors"] != n or r["expected_signature"] != spec.signature \
            or r["rom_crc_expected"] != spec.rom_crc or st["signature_mode"] != (
                spec.mode == "signature"):
        return fail(f"the on-chip ROM is not this package's ({r['vectors']} vectors, expected "
                    f"signature 0x{r['expected_signature']:08x}; the package's BIST has {n}, "
                    f"0x{spec.signature:08x})")
    if not st["rom_ok"] or r["rom_crc"] != r["rom_crc_expected"]:
        return fail(f"the on-chip self-test ROM is corrupted (CRC-32 0x{r['rom_crc']:08x}, "
                    f"stored 0x{r['rom_crc_expected']:08x})")
    if r["fail_count"] or r["signature"] != spec.signature or not st["pass"]:
        where = (f"first failing vector {r['first_fail']}" if r["first_fail"] != bist.NONE
                 else "first failing vector unknown in signature mode")
        return fail(f"on-chip self-test FAIL: {r['fail_count']} failing, {where}; signature "
                    f"0x{r['signature']:08x}, expected 0x{spec.signature:08x}")
    return CheckResult("onchip", PASS, f"on-chip self-test PASS: {n}/{n} vectors ({spec.mode}), "
                       f"signature 0x{r['signature']:08x}, {r['cycles']} cycles", n, 0, 0, extra)


def combine(checks: list[CheckResult]) -> tuple[str, str]:
    """Overall status and reason from the checks."""
    if not checks:
        return NO_VERDICT, "no check applied"
    for status in (FAIL, NO_VERDICT):
        bad = [c for c in checks if c.status == status]
        if bad:
            return status, "; ".join(f"{c.name}: {c.detail}" for c in bad)
    return PASS, "; ".join(f"{c.name}: {c.detail}" for c in checks)


def evaluate(raw: np.ndarray | None, labels: np.ndarray, vectors: Mapping[str, np.ndarray],
             policy: Policy, answered: np.ndarray | None = None,
             raw_ok: np.ndarray | None = None,
             extra_checks: list[CheckResult] | None = None,
             confidence: float = CONFIDENCE, onchip: Mapping[str, Any] | None = None,
             bist=None, scores: np.ndarray | None = None) -> Evaluation:
    """Apply the policy's checks to a board's answers for N vectors.

    `vectors` holds ``expected_labels`` (N,) and, for the exact check, ``golden_raw`` (N, R)
    and optionally ``golden_labels`` (N,), the deployed model's labels (then checked too);
    the last ``policy.boundary_count`` vectors form the boundary tier, whose expected labels
    are the deployed model's. `answered` marks the vectors that have an answer (default:
    all); `raw_ok` those whose raw answer has the expected width (default: as answered).
    `extra_checks` (identity, binding…) take part in the overall status. `confidence` is the
    level of the fingerprint match rate's interval. `onchip` is the board's BIST register
    record (None: not reported) and `bist` the package's `core.bist.BistSpec`, both for the
    ``onchip`` check. For the ``score`` check, `vectors` holds ``source_outputs`` (the
    pre-trained model's outputs on the fingerprint tier) and `scores` (N, C) the board's
    deployed class scores (`GoldenModel.deployed_scores` of its raw outputs; rows without a
    raw answer of the expected width, per `raw_ok`, count as missing).
    """
    expected = np.asarray(vectors["expected_labels"], dtype=np.int64).reshape(-1)
    n = len(expected)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    answered = np.ones(n, bool) if answered is None else np.asarray(answered, bool)
    if len(labels) != n or len(answered) != n:
        raise ValueError(f"{len(labels)} labels and {len(answered)} answer flags for {n} vectors")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must be in (0, 1), got {confidence!r}")
    checks = list(extra_checks or [])
    diff = label_ok = exact = None
    if n == 0:
        checks.append(CheckResult("vectors", NO_VERDICT, "no vectors to check"))
    else:
        fp, bd = policy.tiers(n)
        if "exact" in policy.checks:
            golden = vectors.get("golden_raw")
            if golden is None:
                raise InputError("exact check requested but there is no golden raw output")
            golden = np.asarray(golden, dtype=np.int64).reshape(n, -1)
            if raw is not None:
                raw = np.asarray(raw, dtype=np.int64).reshape(n, -1)
            if raw_ok is None:
                raw_ok = answered.copy() if raw is not None and raw.shape == golden.shape \
                    else np.zeros(n, bool)
            golden_labels = vectors.get("golden_labels")
            if golden_labels is not None:
                golden_labels = np.asarray(golden_labels, dtype=np.int64).reshape(-1)
                if len(golden_labels) != n:
                    raise InputError(f"{len(golden_labels)} golden labels for {n} vectors")
            c, diff, exact = exact_check(golden, raw, answered, np.asarray(raw_ok, bool),
                                         golden_labels, labels)
            checks.append(c)
        if "fingerprint" in policy.checks or "boundary" in policy.checks:
            label_ok, checked = np.zeros(n, bool), np.zeros(n, bool)
        if "fingerprint" in policy.checks:
            c, label_ok[fp] = fingerprint_check(expected[fp], labels[fp], answered[fp],
                                                policy.fingerprint_threshold, confidence)
            checked[fp] = True
            checks.append(c)
        if "boundary" in policy.checks:
            c, label_ok[bd] = boundary_check(expected[bd], labels[bd], answered[bd])
            checked[bd] = True
            checks.append(c)
        if "score" in policy.checks:
            checks.append(_score(vectors, scores, expected[fp], answered[fp],
                                 None if raw_ok is None else np.asarray(raw_ok, bool)[fp],
                                 fp, policy.score_threshold, confidence))
    if "onchip" in policy.checks:
        if bist is None:
            raise InputError("onchip check requested but the package describes no BIST")
        checks.append(onchip_check(onchip, bist))
    status, reason = combine(checks)
    return Evaluation(status, reason, checks, diff, label_ok,
                      None if label_ok is None else checked, policy.boundary_count, exact)


def _score(vectors: Mapping[str, np.ndarray], scores: np.ndarray | None, labels: np.ndarray,
           answered: np.ndarray, raw_ok: np.ndarray | None, fp: slice, threshold: float,
           confidence: float) -> CheckResult:
    """The score check over the fingerprint tier `fp` (see `evaluate`)."""
    source = vectors.get("source_outputs")
    if source is None:
        raise InputError("score check requested but there are no source outputs")
    source = np.asarray(source, dtype=np.float64)
    n = len(labels)
    if source.ndim != 2 or source.shape[0] != n:
        raise InputError(f"score check: source outputs of shape {source.shape} for {n} "
                         "fingerprint vectors")
    have = answered if raw_ok is None else answered & raw_ok
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        scores = scores.reshape(len(scores), -1)[fp]
        if scores.shape != source.shape:
            raise InputError(f"score check: deployed scores of shape {scores.shape}, source "
                             f"outputs {source.shape}")
    return score_check(source, scores, labels, have, threshold, confidence)
