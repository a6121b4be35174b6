"""Check any model against a fingerprint set: label match rate and verdict, explained."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.selftest import PASS, Policy, evaluate
from fpgaprint.fingerprint.source import Model


@dataclass
class CheckResult:
    """Outcome of one check; `passed` is the verdict at the set's threshold."""

    model: str
    model_sha256: str
    source_sha256: str
    algorithm: str
    count: int
    matches: int
    threshold: float
    calibration: dict
    status: str
    interval: tuple[float, float]
    marginal: bool
    mismatched: list[int] = field(default_factory=list)

    @property
    def match_rate(self) -> float:
        return self.matches / self.count if self.count else 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def same_source(self) -> bool:
        return self.model_sha256 == self.source_sha256

    def explain(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        cmp = ">=" if self.passed else "<"
        src = ("the set's source model" if self.same_source else
               f"not the set's source (model {self.model_sha256[:12]}, "
               f"source {self.source_sha256[:12]})")
        how = self.calibration.get("method", "not stated")
        lo, hi = self.interval
        lines = [
            f"{verdict}: {self.matches}/{self.count} labels match ({self.match_rate:.3f} {cmp} "
            f"threshold {self.threshold:.3f}; 95 % interval [{lo:.3f}, {hi:.3f}]) on "
            f"{self.count} {self.algorithm} examples",
            f"model: {self.model} is {src}",
            f"threshold: {how}",
        ]
        if self.marginal:
            lines.insert(1, "MARGINAL: the interval straddles the threshold; more examples "
                            "are needed for a confident verdict")
        if self.mismatched:
            shown = ", ".join(map(str, self.mismatched[:20]))
            more = f" and {len(self.mismatched) - 20} more" if len(self.mismatched) > 20 else ""
            lines.append(f"mismatched examples: {shown}{more}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(match_rate=self.match_rate, passed=self.passed, same_source=self.same_source)
        return d


def check(model: Model, fs: FingerprintSet, expect_source: bool = False) -> CheckResult:
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
    hit = pred == fs.labels
    ev = evaluate(None, pred, {"expected_labels": fs.labels},
                  Policy(("fingerprint",), float(fs.threshold)))
    fp = ev.check("fingerprint")
    return CheckResult(
        model=model.name,
        model_sha256=model.sha256,
        source_sha256=fs.source_sha256,
        algorithm=fs.algorithm,
        count=len(fs),
        matches=int(hit.sum()),
        threshold=float(fs.threshold),
        calibration=fs.calibration,
        status=ev.status,
        interval=tuple(fp.extra["interval"]),
        marginal=fp.extra["marginal"],
        mismatched=[int(i) for i in np.flatnonzero(~hit)],
    )


def match_rate(model: Model, fs: FingerprintSet) -> float:
    return float((model.predict(fs.inputs) == fs.labels).mean())
