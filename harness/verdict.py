"""A board's verdict: its answers as they arrive, per-vector rows, identity, and the outcome.

The pass rule itself is `fpgaprint.core.selftest.evaluate`; this module collects a board's
answers (some may be missing) and reports what the rule decided, vector by vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.selftest import (  # noqa: F401  (re-exported for the harness)
    EXIT_CODES,
    FAIL,
    NO_VERDICT,
    PASS,
    CheckResult,
    Policy,
    combine,
    evaluate,
    is_marginal,
    marginal_reason,
)


@dataclass
class Expected:
    """What the board should answer for N vectors."""

    expected_labels: np.ndarray  # (N,) labels of the pre-trained model
    golden_raw: np.ndarray | None = None  # (N, R) golden raw output (exact check)
    golden_labels: np.ndarray | None = None  # (N,) argmax of the golden model
    # score check: the pre-trained model's outputs on the fingerprint tier (N_fp, C), and
    # the function turning raw outputs (B, R) into deployed class scores (B, C)
    source_outputs: np.ndarray | None = None
    scores_of: Callable[[np.ndarray], np.ndarray] | None = None

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
    fingerprint: bool | None  # the label check of the vector's tier; None: none or no answer
    tier: str = "fingerprint"  # "fingerprint" or "boundary" (strict, deployed model's label)


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

    @property
    def marginal(self) -> bool:
        """PASS by the rule with a fingerprint interval straddling the threshold."""
        return is_marginal(self.status, self.checks)

    @property
    def reported(self) -> str:
        """The status every caller reports: a marginal PASS is NO_VERDICT, never PASS."""
        return NO_VERDICT if self.marginal else self.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "checks": [asdict(c) for c in self.checks],
            "vectors": [asdict(v) for v in self.vectors],
        }


def decide(
    expected: Expected,
    answers: Answers,
    policy: Policy,
    extra_checks: list[CheckResult] | None = None,
    onchip: Mapping[str, Any] | None = None,
    bist: Any = None,
) -> Verdict:
    """Apply the policy's checks (`core.selftest.evaluate`) and add the per-vector rows;
    `onchip`: the board's BIST registers, `bist`: the package's BistSpec (onchip check)."""
    n = len(expected)
    if answers.n != n:
        raise ValueError(f"answers for {answers.n} vectors, expected {n}")
    vectors = {"expected_labels": expected.expected_labels}
    if expected.golden_raw is not None:
        vectors["golden_raw"] = expected.golden_raw
    if expected.golden_labels is not None:
        vectors["golden_labels"] = expected.golden_labels
    scores = None
    if "score" in policy.checks:
        scores = deployed_scores(expected, answers, n - policy.boundary_count)
        vectors["source_outputs"] = expected.source_outputs
    ev = evaluate(answers.raw, answers.labels, vectors, policy, answers.answered,
                  answers.raw_ok, extra_checks, onchip=onchip, bist=bist, scores=scores)
    diff, exact, label_ok, checked = ev.raw_diff, ev.exact, ev.label_ok, ev.label_checked
    first_boundary = n - ev.boundary_count
    vectors_out = []
    for i in range(n):
        a = bool(answers.answered[i])
        vectors_out.append(
            VectorResult(
                index=i,
                answered=a,
                label=int(answers.labels[i]) if a else None,
                expected_label=int(expected.expected_labels[i]),
                golden_label=(
                    None if expected.golden_labels is None else int(expected.golden_labels[i])
                ),
                exact=None if exact is None or not a else bool(exact[i]),
                raw_diff=None if diff is None or diff[i] < 0 else int(diff[i]),
                fingerprint=(None if label_ok is None or not a or not checked[i]
                             else bool(label_ok[i])),
                tier="boundary" if i >= first_boundary else "fingerprint",
            )
        )
    return Verdict(ev.status, ev.reason, ev.checks, vectors_out)


def deployed_scores(expected: Expected, answers: Answers, n_fp: int) -> np.ndarray | None:
    """The board's deployed class scores (N, C) for the score check: its raw answers of the
    first `n_fp` vectors (the fingerprint tier) through `expected.scores_of`; rows without a
    raw answer of the expected width stay NaN (the check counts them missing). None when no
    raw output was collected."""
    if expected.source_outputs is None or expected.scores_of is None:
        raise ValueError("the score check needs the source outputs and the scores function")
    if answers.raw is None:
        return None
    ok = answers.answered & answers.raw_ok
    ok[n_fp:] = False
    out = np.full((answers.n, expected.source_outputs.shape[1]), np.nan)
    if ok.any():
        out[ok] = np.asarray(expected.scores_of(answers.raw[ok])).reshape(int(ok.sum()), -1)
    return out


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
    phases_s: dict[str, float] = field(default_factory=dict)  # "identity", "vectors" seconds
    deadline_s: float | None = None  # the verification's overall deadline
    trust: dict[str, Any] | None = None  # the package's trust (pinned/unpinned/unsigned)
    unreachable: bool = False  # the port could not be opened: no board was reached
    fingerprint_only: bool = False  # verified under a policy without integrity check (allowed)

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
            "phases_s": self.phases_s,
            "deadline_s": self.deadline_s,
            "trust": self.trust,
            "fingerprint_only": self.fingerprint_only,
            "unreachable": self.unreachable,
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BoardOutcome":
        """The outcome back from `to_dict` (a spooled result)."""
        v = d.get("verdict")
        verdict = None if v is None else Verdict(
            v["status"], v["reason"], [CheckResult(**c) for c in v["checks"]],
            [VectorResult(**r) for r in v["vectors"]])
        fields = {k: d[k] for k in ("port", "status", "reason", "package_id", "package_name",
                                    "mode", "nonce", "identity", "board_selftest", "started",
                                    "duration_s", "deadline_s", "trust", "fingerprint_only",
                                    "unreachable")
                  if k in d}
        return cls(**fields, verdict=verdict)


def overall(statuses: list[str]) -> str:
    """Several boards: FAIL if any failed, else NO_VERDICT if any had none, else PASS."""
    if not statuses:
        return NO_VERDICT
    if FAIL in statuses:
        return FAIL
    if NO_VERDICT in statuses:
        return NO_VERDICT
    return PASS

