"""Check any model against a fingerprint set: label match rate, its interval, and the verdict.

The verdict is `core.selftest.evaluate`'s: the fingerprint check for intrinsic-example sets,
the strict boundary check for boundary sets, and the score check when the set carries it (the
model's class scores against the source's, `core.scores`). A pass whose interval (the match
rate's Clopper-Pearson one, or the score's Fisher-z one) straddles its threshold is MARGINAL:
no confident verdict (the CLI exits 3), never a plain PASS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.selftest import (
    CONFIDENCE,
    FAIL,
    MARGINAL,
    PASS,
    Policy,
    clopper_pearson,
    evaluate,
    interval_text,
)
from fpgaprint.fingerprint.source import Model


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
    score: dict | None = None  # the score check (status, detail, correlation, interval, ...)

    @property
    def match_rate(self) -> float:
        return self.matches / self.count if self.count else 0.0

    @property
    def labels_pass(self) -> bool:
        """The label check alone passes (the score check may still fail)."""
        return self.matches >= Policy(("fingerprint",), self.threshold).required_matches(
            self.count) if not self.strict else self.matches == self.count

    @property
    def score_failed(self) -> bool:
        return bool(self.score and self.score["status"] == FAIL)

    @property
    def score_marginal(self) -> bool:
        return bool(self.score and self.score.get("marginal"))

    @property
    def passed(self) -> bool:
        return self.status == PASS and not self.marginal and not self.score_marginal

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or MARGINAL (a pass an interval does not support)."""
        return MARGINAL if self.status == PASS and (self.marginal or self.score_marginal) \
            else self.status

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
            cmp = ">=" if self.labels_pass else "<"
            head = (f"{self.verdict}: {self.matches}/{self.count} labels match "
                    f"(match rate {self.match_rate:.3f} {cmp} threshold {self.threshold:.3f}; "
                    f"{ci}) on {self.count} {self.algorithm} examples")
        lines = [head, f"model: {self.model} is {src}", f"threshold: {how}"]
        if self.marginal and self.status == PASS:
            lines.insert(1, f"MARGINAL: the {ci} straddles the threshold {self.threshold:.3f}: "
                            "no confident verdict; check with more vectors")
        elif self.marginal:
            lines.insert(1, f"marginal: the {ci} reaches the threshold {self.threshold:.3f}")
        if self.score is not None:
            lines.insert(1, f"score: {self.score['status']}: {self.score['detail']}")
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
    golden = model.runner if getattr(model.runner, "kind", None) == "golden" else None
    if golden is not None:
        golden.grid = fs.grid  # integer graphs take the set's grid integers
    if not fs.has_score or fs.algorithm == "boundary":
        return judge(model.name, model.sha256, fs, model.predict(fs.inputs), confidence)
    if golden is not None:  # the deployed class scores: what the label is the argmax of
        g = golden.golden
        x = fs.inputs_int.reshape((len(fs), *g.input_shape[1:]))
        scores = g.tensors(x, [g.scores])[g.scores].reshape(len(fs), -1)
    else:
        scores = model.logits(fs.inputs)
    if scores.shape != fs.source_outputs.shape:
        raise InputError(f"{model.name} gives {scores.shape[1:]} class scores per vector, the "
                         f"set's source outputs have {fs.source_outputs.shape[1:]}")
    return judge(model.name, model.sha256, fs, scores.argmax(1), confidence, scores)


def judge(name: str, sha256: str, fs: FingerprintSet, pred: np.ndarray,
          confidence: float = CONFIDENCE, scores: np.ndarray | None = None) -> CheckResult:
    """The verdict on labels `pred` of the set's inputs (the one rule, `evaluate`); with
    `scores` (the model's class scores) also the score check when the set carries it."""
    hit = np.asarray(pred) == fs.labels
    n = len(fs)
    vectors = {"expected_labels": fs.labels}
    if fs.algorithm == "boundary":
        policy = Policy(("boundary",), 1.0, n)
    elif scores is not None and fs.has_score:
        policy = Policy(("fingerprint", "score"), float(fs.threshold),
                        score_threshold=fs.score_threshold)
        vectors["source_outputs"] = fs.source_outputs
    else:
        policy = Policy(("fingerprint",), float(fs.threshold))
    ev = evaluate(None, pred, vectors, policy, confidence=confidence, scores=scores)
    fp = ev.check("fingerprint")
    sc = ev.check("score")
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
        score=None if sc is None else {"status": sc.status, "detail": sc.detail, **sc.extra},
    )


def match_rate(model: Model, fs: FingerprintSet) -> float:
    return float((model.predict(fs.inputs) == fs.labels).mean())
