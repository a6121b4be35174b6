"""Check any model against a fingerprint set: label match rate, its interval, and the verdict.

The verdict is `core.selftest.evaluate`'s: the fingerprint check for intrinsic-example sets,
the strict boundary check for boundary sets. A pass whose Clopper-Pearson interval straddles
the threshold is MARGINAL: no confident verdict (the CLI exits 3), never a plain PASS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.selftest import (
    CONFIDENCE,
    PASS,
    Policy,
    clopper_pearson,
    evaluate,
    interval_text,
)
from fpgaprint.fingerprint.source import Model

MARGINAL = "MARGINAL"


@dataclass
class CheckResult:
    """Outcome of one check; `passed` is a confident PASS at the set's threshold."""

    model: str
    model_sha256: str
    source_sha256: str
    algorithm: str
    count: int
    matches: int
    threshold: float
    calibration: dict
    status: str  # the rule's status: PASS or FAIL
    interval: tuple[float, float]
    marginal: bool
    confidence: float = CONFIDENCE
    mismatched: list[int] = field(default_factory=list)

    @property
    def match_rate(self) -> float:
        return self.matches / self.count if self.count else 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASS and not self.marginal

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or MARGINAL (a pass the interval does not support)."""
        return MARGINAL if self.status == PASS and self.marginal else self.status

    @property
    def strict(self) -> bool:
        return self.algorithm == "boundary"

    @property
    def same_source(self) -> bool:
        return self.model_sha256 == self.source_sha256

    def explain(self) -> str:
        src = ("the set's source model" if self.same_source else
               f"not the set's source (model {self.model_sha256[:12]}, "
               f"source {self.source_sha256[:12]})")
        how = self.calibration.get("method", "not stated")
        ci = interval_text(*self.interval, self.confidence)
        if self.strict:
            head = (f"{self.verdict}: {self.matches}/{self.count} labels equal the deployed "
                    f"model's on {self.count} boundary vectors (strict: every label must)")
        else:
            cmp = ">=" if self.status == PASS else "<"
            head = (f"{self.verdict}: {self.matches}/{self.count} labels match "
                    f"(match rate {self.match_rate:.3f} {cmp} threshold {self.threshold:.3f}; "
                    f"{ci}) on {self.count} {self.algorithm} examples")
        lines = [head, f"model: {self.model} is {src}", f"threshold: {how}"]
        if self.marginal and self.status == PASS:
            lines.insert(1, f"MARGINAL: the {ci} straddles the threshold {self.threshold:.3f}: "
                            "no confident verdict; check with more vectors")
        elif self.marginal:
            lines.insert(1, f"marginal: the {ci} reaches the threshold {self.threshold:.3f}")
        if self.mismatched:
            shown = ", ".join(map(str, self.mismatched[:20]))
            more = f" and {len(self.mismatched) - 20} more" if len(self.mismatched) > 20 else ""
            lines.append(f"mismatched examples: {shown}{more}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(match_rate=self.match_rate, passed=self.passed, verdict=self.verdict,
                 same_source=self.same_source)
        return d


def check(model: Model, fs: FingerprintSet, expect_source: bool = False,
          confidence: float = CONFIDENCE) -> CheckResult:
    """Run `model` on the set's grid inputs and compare its labels with the set's labels.

    A model other than the set's source is what a check is for; with `expect_source` a hash
    mismatch is an input error instead.
    """
    if tuple(model.input_shape) != tuple(fs.input_shape):
        raise InputError(
            f"{model.name} takes inputs of shape {tuple(model.input_shape)} but the fingerprint "
            f"set holds {tuple(fs.input_shape)}"
        )
    if expect_source and model.sha256 != fs.source_sha256:
        raise InputError(
            f"{model.name} (sha256 {model.sha256}) is not the set's source model "
            f"(sha256 {fs.source_sha256})"
        )
    if getattr(model.runner, "kind", None) == "golden":
        model.runner.grid = fs.grid  # integer graphs take the set's grid integers
    pred = model.predict(fs.inputs)
    return judge(model.name, model.sha256, fs, pred, confidence)


def judge(name: str, sha256: str, fs: FingerprintSet, pred: np.ndarray,
          confidence: float = CONFIDENCE) -> CheckResult:
    """The verdict on labels `pred` of the set's inputs (the one rule, `evaluate`)."""
    hit = np.asarray(pred) == fs.labels
    n = len(fs)
    if fs.algorithm == "boundary":
        policy = Policy(("boundary",), 1.0, n)
    else:
        policy = Policy(("fingerprint",), float(fs.threshold))
    ev = evaluate(None, pred, {"expected_labels": fs.labels}, policy, confidence=confidence)
    fp = ev.check("fingerprint")
    interval = tuple(fp.extra["interval"]) if fp else clopper_pearson(int(hit.sum()), n,
                                                                       confidence)
    return CheckResult(
        model=name,
        model_sha256=sha256,
        source_sha256=fs.source_sha256,
        algorithm=fs.algorithm,
        count=n,
        matches=int(hit.sum()),
        threshold=float(fs.threshold),
        calibration=fs.calibration,
        status=ev.status,
        interval=interval,
        marginal=bool(fp.extra["marginal"]) if fp else False,
        confidence=confidence,
        mismatched=[int(i) for i in np.flatnonzero(~hit)],
    )


def match_rate(model: Model, fs: FingerprintSet) -> float:
    return float((model.predict(fs.inputs) == fs.labels).mean())
