"""The threshold rule, impostors, the score-level statistic, power and the trade-off: the
statistics on sets whose answers the test sets itself (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.selftest import clopper_pearson
from fpgaprint.fingerprint import impostor, power, scores
from fpgaprint.fingerprint.calibrate import (
    FALSE_ALARM,
    CalibrationOverlap,
    Predictions,
    Sides,
    Variant,
    calibrate_with,
    place_threshold,
)
from fpgaprint.fingerprint.evaluate import summarize, tradeoff

N, C, D = 60, 4, 16


class Outputs:
    """A model that answers this test's set with fixed outputs (what it stands for is the
    statistics below, not a network)."""

    def __init__(self, fs: FingerprintSet, outputs: np.ndarray, num_classes: int = C):
        self._p = Predictions("fixed", [fs.inputs], [outputs])
        self.num_classes = num_classes

    def logits(self, x):
        return self._p.logits(x)

    def predict(self, x):
        return self._p.predict(x)


def make_set(clustered: bool, seed: int = 0) -> FingerprintSet:
    """N vectors; `clustered`: each class a tight cluster (an impostor learns it from the
    set), else uniform noise with labels unrelated to the inputs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % C
    if clustered:
        centers = rng.integers(0, 256, (C, D))
        q = np.clip(centers[labels] + rng.integers(-2, 3, (N, D)), 0, 255)
    else:
        q = rng.integers(0, 256, (N, D))
    return FingerprintSet(q, labels, np.ones(N), "robust", {}, seed, "0" * 64, (D,))


def source_outputs(fs: FingerprintSet) -> np.ndarray:
    """Outputs whose argmax is the set's labels, and whose other classes have a fixed order."""
    out = np.tile(np.arange(C, dtype=float), (len(fs), 1))
    out[np.arange(len(fs)), fs.labels] = C + 1.0
    return out


def with_errors(fs: FingerprintSet, wrong: int, shuffle_rest: bool = False, seed: int = 1
                ) -> np.ndarray:
    """The source's outputs with the first `wrong` labels moved to another class."""
    out = source_outputs(fs)
    if shuffle_rest:
        rng = np.random.default_rng(seed)
        for row, y in zip(out, fs.labels):
            others = [c for c in range(C) if c != y]
            row[others] = rng.permutation(len(others))
    for i in range(wrong):
        y = fs.labels[i]
        out[i, (y + 1) % C] = C + 2.0
    return out


def sides_for(fs: FingerprintSet, benign_wrong: list[int], attack_wrong: list[int]) -> Sides:
    src = Outputs(fs, source_outputs(fs))
    ben = [Variant(f"b{w}", {"kind": "test"}, Outputs(fs, with_errors(fs, w)), 1.0)
           for w in benign_wrong]
    att = [Variant(f"a{w}", {"kind": "independent"},
                   Outputs(fs, with_errors(fs, w, shuffle_rest=True)), 1.0)
           for w in attack_wrong]
    return Sides(1.0, ben, [], att, source=src)


def test_threshold_is_the_worst_benign_lower_bound():
    fs = make_set(clustered=False)
    thr, cal = place_threshold(fs, sides_for(fs, [3, 9], [40, 45]))
    k = N - 9  # the worst benign variant matches N - 9
    assert cal["worst_benign"] == "b9"
    assert thr == pytest.approx(clopper_pearson(k, N, 1 - 2 * FALSE_ALARM)[0])
    lower = place_threshold(fs, sides_for(fs, [3, 9], [40, 45]), false_alarm=0.005)[0]
    assert lower < thr  # a lower false-alarm target lowers the threshold
    assert cal["rule"] == "benign lower bound" and "lower bound" in cal["method"]
    # the independent models are below it: rejected, and the threshold is kept
    assert cal["rejected"]["a40"] and cal["rejected"]["a45"]


def test_impostors_are_on_the_attack_side_and_judged_on_unseen_vectors():
    fs = make_set(clustered=False)
    _, cal = place_threshold(fs, sides_for(fs, [2], [40, 45]))
    assert set(cal["impostor"]) == {f"impostor-{n}" for n in impostor.IMPOSTORS}
    # labels unrelated to the inputs: cross-fitted impostors cannot learn them
    for e in cal["impostor"].values():
        assert e["match_rate"] < 0.6
    assert set(cal["rejected"]) == {"a40", "a45", *cal["impostor"]}


def test_an_impostor_at_the_benign_level_is_reported_as_not_separable():
    fs = make_set(clustered=True)  # classes the set's own vectors give away
    thr, cal = place_threshold(fs, sides_for(fs, [6], [40, 45]))
    assert thr is not None  # independent models are rejected: the set is written ...
    imp = cal["impostor"]["impostor-centroid"]["match_rate"]
    assert imp >= cal["benign"]["b6"]["match_rate"]
    assert not cal["separates"] and cal["no_threshold"]  # ... saying so
    assert "impostor-centroid" in cal["not_rejected"]
    assert "NO threshold separates" in cal["method"]
    out = calibrate_with(fs, sides_for(fs, [6], [40, 45]))
    assert out.threshold == pytest.approx(thr) and not out.calibration["separates"]


def test_an_independent_model_above_the_threshold_is_refused():
    fs = make_set(clustered=False)
    sides = sides_for(fs, [6], [5, 45])  # a5 matches better than the worst benign
    thr, cal = place_threshold(fs, sides)
    assert thr is None and not cal["rejected"]["a5"] and cal["no_threshold"]
    with pytest.raises(CalibrationOverlap, match="does not reject an independently trained"):
        calibrate_with(fs, sides)


def test_score_level_threshold_and_rejections():
    fs = make_set(clustered=False)
    _, cal = place_threshold(fs, sides_for(fs, [3], [20, 45]))
    sc = cal["score"]
    ben = cal["benign"]["b3"]["score"]
    assert sc["threshold"] == pytest.approx(ben["interval"][0]) and sc["worst_benign"] == "b3"
    # the attacks' other classes are shuffled: their order agreement is lower
    for k in ("a20", "a45"):
        assert cal["attack"][k]["score"]["mean"] < ben["mean"]
        assert sc["rejected"][k] == (cal["attack"][k]["score"]["mean"] < sc["threshold"])


def test_order_agreement_is_scale_free_and_counts_pairs():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(20, 6))
    assert np.all(scores.order_agreement(ref, 3.0 * ref + 7.0) == 1.0)
    assert np.all(scores.order_agreement(ref, -ref) == 0.0)
    swapped = ref.copy()
    top2 = np.argsort(-ref, 1)[:, :2]
    r = np.arange(20)
    swapped[r, top2[:, 0]], swapped[r, top2[:, 1]] = ref[r, top2[:, 1]], ref[r, top2[:, 0]]
    assert np.allclose(scores.order_agreement(ref, swapped), 1 - 1 / 15)  # one pair of 15
    m, lo, hi = scores.mean_interval(np.array([0.5, 0.7, 0.9]))
    assert m == pytest.approx(0.7) and lo < m < hi
    with pytest.raises(ValueError):
        scores.order_agreement(ref, ref[:, :3])


@pytest.mark.parametrize("b,a", [(0.9, 0.6), (0.86, 0.76), (1.0, 0.9)])
def test_vectors_needed_is_the_smallest_separating_count(b, a):
    n = power.vectors_needed(b, a)
    assert n is not None and power.separated(b, a, n)
    assert not any(power.separated(b, a, m) for m in range(1, n))


def test_vectors_needed_is_none_without_a_gap_or_beyond_the_cap():
    assert power.vectors_needed(0.7, 0.8) is None
    assert power.vectors_needed(0.80, 0.79) is None  # needs far more than 500
    assert power.line_seconds(200, 64, 10, 115200) == pytest.approx(2 *
                                                                    power.line_seconds(
                                                                        100, 64, 10, 115200))


def _row(name, family, benign, match, score=None, loss=0.0):
    return {"name": name, "family": family, "benign": benign, "level": "model",
            "accuracy": 1.0 - loss, "accuracy_loss": loss, "in_scope": benign and loss <= 0.05,
            "match": {"robust": match}, "verdict": {"robust": "PASS"},
            "detected": {"robust": False}, "score": {} if score is None else {"robust": score},
            "score_detected": {} if score is None else {"robust": score < 0.8}, "info": {}}


def test_tradeoff_and_uniqueness_from_rows():
    rows = [_row("b1", "ptq", True, 0.90, 0.95), _row("b2", "prune+ft", True, 0.80, 0.85),
            _row("heavy", "qat", True, 0.30, 0.5, loss=0.3),  # loses > 5 points: not counted
            _row("f1", "finetune-other-data", False, 0.85, 0.7),
            _row("f2", "finetune-other-data", False, 0.70, 0.75),
            _row("s1", "swap", False, 0.20, 0.4), _row("s2", "swap", False, 0.30, 0.45)]
    t = tradeoff(rows, ["robust"])
    lab = t["label"]["robust"]
    assert lab["at_zero"] == {"finetune-other-data": 0.5, "swap": 1.0}
    assert lab["for_full"] == {"finetune-other-data": 0.5, "swap": 0.0}
    assert t["score"]["robust"]["at_zero"]["finetune-other-data"] == 1.0
    for point in lab["curve"]:
        assert point["false_alarm"] == np.mean([v < point["threshold"] for v in (0.9, 0.8)])
    s = summarize(rows, {"natural_draws": [0.1, 0.2, 0.3]}, ["robust"])
    u = s["uniqueness"]["robust"]
    assert u["uniqueness"] == pytest.approx(0.85 - 0.25)
    assert s["natural_draws"]["mean"] == pytest.approx(0.2)
    assert s["natural_draws"]["std"] == pytest.approx(0.1)
    assert s["score_false_alarm"]["ptq"]["robust"] == 0.0
    assert s["score_detection"]["finetune-other-data"]["robust"] == 1.0
