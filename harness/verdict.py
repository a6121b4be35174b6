"""Verdict logic: per-vector results and PASS / FAIL / NO_VERDICT from the board's answers.

Two checks (ARCHITECTURE.md, "Verdicts"):
- ``exact``: the board's raw output equals the golden model's raw output, element for element.
- ``fingerprint``: the board's label equals the pre-trained model's label; the share of matches
  over *all* vectors must reach the policy threshold.

Missing answers never give PASS. A check is FAIL as soon as the answers received prove it (one
raw mismatch; too few label matches even if every missing answer matched); otherwise missing
answers leave it NO_VERDICT. The overall verdict is FAIL if any check fails, else NO_VERDICT if
any check has no verdict, else PASS.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from fpgaprint.compiler.errors import InputError

PASS = "PASS"
FAIL = "FAIL"
NO_VERDICT = "NO_VERDICT"
CHECKS = ("exact", "fingerprint")


@dataclass(frozen=True)
class Policy:
    """Which checks apply and the fingerprint match-rate threshold."""

    checks: tuple[str, ...]
    fingerprint_threshold: float = 1.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "policy") -> "Policy":
        checks = d.get("checks")
        if not isinstance(checks, (list, tuple)) or not checks:
            raise InputError(f"{where}: 'checks' must be a non-empty list of {list(CHECKS)}")
        unknown = [c for c in checks if c not in CHECKS]
        if unknown:
            raise InputError(f"{where}: unknown check(s) {unknown}; known: {list(CHECKS)}")
        thr = d.get("fingerprint_threshold", 1.0)
        if not isinstance(thr, (int, float)) or not 0.0 <= float(thr) <= 1.0:
            raise InputError(f"{where}: 'fingerprint_threshold' must be in [0, 1], got {thr!r}")
        return cls(tuple(checks), float(thr))


@dataclass
class Expected:
    """What the board should answer for N vectors."""

    expected_labels: np.ndarray  # (N,) labels of the pre-trained model
    golden_raw: np.ndarray | None = None  # (N, R) golden raw output (exact check)
    golden_labels: np.ndarray | None = None  # (N,) argmax of the golden model

    def __post_init__(self) -> None:
        self.expected_labels = np.asarray(self.expected_labels, dtype=np.int64).reshape(-1)
        n = len(self.expected_labels)
        if self.golden_raw is not None:
            self.golden_raw = np.asarray(self.golden_raw, dtype=np.int64).reshape(n, -1)
        if self.golden_labels is not None:
            self.golden_labels = np.asarray(self.golden_labels, dtype=np.int64).reshape(-1)
            if len(self.golden_labels) != n:
                raise InputError(f"golden_labels has {len(self.golden_labels)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.expected_labels)


class Answers:
    """The board's answers, filled batch by batch; unanswered vectors stay marked missing."""

    def __init__(self, n: int, raw_width: int | None = None) -> None:
        self.n = n
        self.raw_width = raw_width
        self.labels = np.full(n, -1, dtype=np.int64)
        self.answered = np.zeros(n, dtype=bool)
        self.raw = None if raw_width is None else np.zeros((n, raw_width), dtype=np.int64)
        self.raw_ok = np.zeros(n, dtype=bool)  # raw answer present with the expected width

    def record(self, indices: np.ndarray, raw: np.ndarray | None, labels: np.ndarray) -> None:
        """Store answers for `indices` (positions in the expected arrays)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(lab) != len(idx):
            raise ValueError(f"{len(lab)} labels for {len(idx)} vectors")
        self.labels[idx] = lab
        self.answered[idx] = True
        if self.raw is not None and raw is not None:
            r = np.asarray(raw, dtype=np.int64).reshape(len(idx), -1)
            if r.shape[1] == self.raw_width:
                self.raw[idx] = r
                self.raw_ok[idx] = True

    @property
    def missing(self) -> int:
        return int(self.n - self.answered.sum())


@dataclass
class VectorResult:
    index: int
    answered: bool
    label: int | None
    expected_label: int
    golden_label: int | None
    exact: bool | None  # None: check not applied or no answer
    raw_diff: int | None  # differing raw elements; None when unknown
    fingerprint: bool | None


@dataclass
class CheckResult:
    name: str
    status: str
    detail: str
    passed: int = 0
    failed: int = 0
    missing: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    status: str
    reason: str
    checks: list[CheckResult]
    vectors: list[VectorResult]

    def check(self, name: str) -> CheckResult | None:
        return next((c for c in self.checks if c.name == name), None)

    @property
    def match_rate(self) -> float | None:
        c = self.check("fingerprint")
        return None if c is None else c.extra.get("match_rate")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "checks": [asdict(c) for c in self.checks],
            "vectors": [asdict(v) for v in self.vectors],
        }


def _indices(mask: np.ndarray, limit: int = 10) -> str:
    idx = np.flatnonzero(mask)
    s = ", ".join(str(i) for i in idx[:limit])
    return s + (", ..." if len(idx) > limit else "")


def exact_check(expected: Expected, answers: Answers) -> tuple[CheckResult, np.ndarray]:
    """Raw == golden_raw for every vector; returns the check and per-vector differing counts."""
    if expected.golden_raw is None:
        raise InputError("exact check requested but the package has no golden_raw")
    n = len(expected)
    diff = np.full(n, -1, dtype=np.int64)
    ok = answers.answered & answers.raw_ok
    if answers.raw is not None:
        diff[ok] = (answers.raw[ok] != expected.golden_raw[ok]).sum(axis=1)
    bad = (answers.answered & ~answers.raw_ok) | (ok & (diff > 0))
    passed = int((ok & (diff == 0)).sum())
    failed, missing = int(bad.sum()), answers.missing
    if failed:
        status = FAIL
        detail = f"{failed}/{n} vectors differ from the golden model (vectors {_indices(bad)})"
        if (answers.answered & ~answers.raw_ok).any():
            detail += "; some answers had no raw output of the expected width"
    elif missing:
        status, detail = NO_VERDICT, f"{missing}/{n} vectors unanswered"
    else:
        status, detail = PASS, f"{n}/{n} raw outputs equal the golden model"
    return CheckResult("exact", status, detail, passed, failed, missing), diff


def fingerprint_check(
    expected: Expected, answers: Answers, threshold: float
) -> tuple[CheckResult, np.ndarray]:
    """Label == expected label; the match rate over all N vectors must reach `threshold`."""
    n = len(expected)
    match = answers.answered & (answers.labels == expected.expected_labels)
    matches, missing = int(match.sum()), answers.missing
    failed = int(n - matches - missing)
    need = math.ceil(threshold * n - 1e-9)
    rate = matches / n if n else 0.0
    answered = n - missing
    extra = {
        "match_rate": rate,
        "match_rate_answered": matches / answered if answered else None,
        "threshold": threshold,
        "required_matches": need,
    }
    if matches + missing < need:
        status = FAIL
        detail = (
            f"match rate {rate:.3f} < threshold {threshold:.3f} "
            f"({matches}/{n} labels match, {need} required)"
        )
    elif missing:
        status = NO_VERDICT
        detail = f"{missing}/{n} vectors unanswered ({matches} match so far, {need} required)"
    else:
        status = PASS
        detail = f"match rate {rate:.3f} >= threshold {threshold:.3f} ({matches}/{n})"
    return CheckResult("fingerprint", status, detail, matches, failed, missing, extra), match


def combine(checks: list[CheckResult]) -> tuple[str, str]:
    """Overall status and reason from the checks."""
    if not checks:
        return NO_VERDICT, "no check applied"
    for status in (FAIL, NO_VERDICT):
        bad = [c for c in checks if c.status == status]
        if bad:
            return status, "; ".join(f"{c.name}: {c.detail}" for c in bad)
    return PASS, "; ".join(f"{c.name}: {c.detail}" for c in checks)


def decide(
    expected: Expected,
    answers: Answers,
    policy: Policy,
    extra_checks: list[CheckResult] | None = None,
) -> Verdict:
    """Apply the policy's checks to the answers and return the verdict with per-vector rows."""
    n = len(expected)
    if answers.n != n:
        raise ValueError(f"answers for {answers.n} vectors, expected {n}")
    checks = list(extra_checks or [])
    diff = exact_ok = fp_ok = None
    if n == 0:
        checks.append(CheckResult("vectors", NO_VERDICT, "no vectors to check"))
    else:
        if "exact" in policy.checks:
            c, diff = exact_check(expected, answers)
            exact_ok = diff == 0
            checks.append(c)
        if "fingerprint" in policy.checks:
            c, fp_ok = fingerprint_check(expected, answers, policy.fingerprint_threshold)
            checks.append(c)
    vectors = []
    for i in range(n):
        a = bool(answers.answered[i])
        vectors.append(
            VectorResult(
                index=i,
                answered=a,
                label=int(answers.labels[i]) if a else None,
                expected_label=int(expected.expected_labels[i]),
                golden_label=(
                    None if expected.golden_labels is None else int(expected.golden_labels[i])
                ),
                exact=None if diff is None or not a else bool(exact_ok[i]),
                raw_diff=None if diff is None or diff[i] < 0 else int(diff[i]),
                fingerprint=None if fp_ok is None or not a else bool(fp_ok[i]),
            )
        )
    status, reason = combine(checks)
    return Verdict(status, reason, checks, vectors)


def identity_check(expected: Mapping[str, Any], reported: Mapping[str, Any]) -> CheckResult:
    """Compare the identity fields the board reports with the expected ones (present keys only)."""
    wrong = [
        f"{k}: board reports {reported.get(k)!r}, expected {v!r}"
        for k, v in expected.items()
        if v is not None and reported.get(k) != v
    ]
    if wrong:
        detail = "identity mismatch: " + "; ".join(wrong)
        return CheckResult("identity", FAIL, detail, 0, len(wrong))
    keys = [k for k, v in expected.items() if v is not None]
    return CheckResult("identity", PASS, f"board reports the expected {', '.join(keys)}", len(keys))


@dataclass
class BoardOutcome:
    """Everything known about one board's verification: identity, verdict, timing, error."""

    port: str
    status: str
    reason: str
    package_id: str
    package_name: str = ""
    mode: str = "selftest"  # "selftest" (package vectors) or "challenge" (verifier-held set)
    identity: dict[str, Any] = field(default_factory=dict)  # as reported by the board
    board_selftest: dict[str, Any] | None = None  # the board's own power-on self-test claim
    verdict: Verdict | None = None
    started: float = 0.0  # epoch seconds
    duration_s: float = 0.0
    nonce: str | None = None  # challenge nonce (hex)

    @property
    def serial(self) -> str | None:
        return self.identity.get("serial")

    @property
    def match_rate(self) -> float | None:
        return None if self.verdict is None else self.verdict.match_rate

    @property
    def exact_failed(self) -> int | None:
        c = None if self.verdict is None else self.verdict.check("exact")
        return None if c is None else c.failed

    @property
    def answered(self) -> int:
        if self.verdict is None:
            return 0
        return sum(1 for v in self.verdict.vectors if v.answered)

    @property
    def total(self) -> int:
        return 0 if self.verdict is None else len(self.verdict.vectors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "status": self.status,
            "reason": self.reason,
            "package_id": self.package_id,
            "package_name": self.package_name,
            "mode": self.mode,
            "nonce": self.nonce,
            "identity": self.identity,
            "board_selftest": self.board_selftest,
            "started": self.started,
            "duration_s": self.duration_s,
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
        }


def overall(statuses: list[str]) -> str:
    """Several boards: FAIL if any failed, else NO_VERDICT if any had none, else PASS."""
    if not statuses:
        return NO_VERDICT
    if FAIL in statuses:
        return FAIL
    if NO_VERDICT in statuses:
        return NO_VERDICT
    return PASS


EXIT_CODES = {PASS: 0, FAIL: 1, NO_VERDICT: 3}
