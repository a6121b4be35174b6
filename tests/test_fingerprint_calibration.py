"""The threshold rule, impostors, the score-level statistic, power and the trade-off: the
statistics on sets whose answers the test sets itself (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaprint.core import scores
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.selftest import clopper_pearson
from fpgaprint.fingerprint import impostor, power
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

    def __init__(self, fs: FingerprintSet, outputs: np.ndarray, num_classes: int = C,
                 also: tuple[FingerprintSet, ...] = ()):
        self._p = Predictions("fixed", [fs.inputs, *(o.inputs for o in also)],
                              [outputs, *(source_outputs(o) for o in also)])
        self.num_classes = num_classes

    def logits(self, x):
        return self._p.logits(x)

    def predict(self, x):
        return self._p.predict(x)


def make_set(clustered: bool, seed: int = 0, jitter: int = 0) -> FingerprintSet:
    """N vectors; `clustered`: each class a tight cluster (an impostor learns it from the
    set; `jitter` draws other vectors around the same centres), else uniform noise with
    labels unrelated to the inputs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % C
    if clustered:
        centers = rng.integers(0, 256, (C, D))
        noise = np.random.default_rng([seed, jitter]).integers(-2, 3, (N, D))
        q = np.clip(centers[labels] + noise, 0, 255)
    else:
        q = rng.integers(0, 256, (N, D))
    return FingerprintSet(q, labels, np.ones(N), "robust", {}, seed, "0" * 64, (D,))


def _boosted(fs: FingerprintSet, seed: int) -> np.ndarray:
    """Random outputs whose argmax is the set's labels, by a margin drawn per vector."""
    rng = np.random.default_rng([seed, 7])
    out = rng.normal(size=(len(fs), C))
    rows = np.arange(len(fs))
    out[rows, fs.labels] = -np.inf
    out[rows, fs.labels] = out.max(1) + rng.uniform(0.5, 3.0, len(fs))
    return out


def source_outputs(fs: FingerprintSet) -> np.ndarray:
    return _boosted(fs, 0)


def with_errors(fs: FingerprintSet, wrong: int, independent: bool = False) -> np.ndarray:
    """The source's outputs, slightly moved (`independent`: outputs of their own), with the
    first `wrong` labels moved to another class."""
    if independent:
        out = _boosted(fs, 1 + wrong)
    else:
        out = source_outputs(fs) + np.random.default_rng(wrong).normal(0, 0.05, (len(fs), C))
    for i in range(wrong):
        out[i, (fs.labels[i] + 1) % C] = out[i].max() + 1.0
    return out


def sides_for(fs: FingerprintSet, benign_wrong: list[int], attack_wrong: list[int],
              also: tuple[FingerprintSet, ...] = ()) -> Sides:
    """Both sides for `fs`; the source also answers the sets `also` (embedded sets)."""
    src = Outputs(fs, source_outputs(fs), also=also)
    ben = [Variant(f"b{w}", {"kind": "test"}, Outputs(fs, with_errors(fs, w)), 1.0)
           for w in benign_wrong]
    att = [Variant(f"a{w}", {"kind": "independent"},
                   Outputs(fs, with_errors(fs, w, independent=True)), 1.0)
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


def test_a_challenge_set_is_checked_against_impostors_trained_on_the_embedded_set():
    embedded = make_set(clustered=True)
    challenge = make_set(clustered=True, jitter=1)  # other vectors of the same kind
    assert not np.array_equal(embedded.inputs_int, challenge.inputs_int)
    other = make_set(clustered=True, seed=5)  # an embedded set of another kind
    sides = sides_for(challenge, [6], [40, 45], also=(embedded, other))
    out = calibrate_with(challenge, sides, embedded=embedded)
    cal = out.calibration
    assert all(e["note"] == "trained on the embedded set" for e in cal["impostor"].values())
    assert cal["impostor"]["impostor-centroid"]["match_rate"] == 1.0
    assert not cal["separates"] and cal["no_threshold"]
    cal = calibrate_with(challenge, sides, embedded=other).calibration
    assert cal["impostor"]["impostor-centroid"]["match_rate"] < 0.6


def test_an_independent_model_above_the_threshold_is_refused():
    fs = make_set(clustered=False)
    sides = sides_for(fs, [6], [5, 45])  # a5 matches better than the worst benign
    thr, cal = place_threshold(fs, sides)
    assert thr is None and not cal["rejected"]["a5"] and cal["no_threshold"]
    with pytest.raises(CalibrationOverlap, match="does not reject an independently trained"):
        calibrate_with(fs, sides)


def test_score_level_threshold_and_rejections():
    fs = make_set(clustered=False)
    _, cal = place_threshold(fs, sides_for(fs, [3, 5], [20, 45]))
    sc = cal["score"]
    worst = min(cal["benign"], key=lambda k: cal["benign"][k]["score"]["value"])
    assert sc["worst_benign"] == worst and sc["statistic"] == "margin correlation"
    lo = cal["benign"][worst]["score"]["interval"][0]
    assert lo - 1e-4 < sc["threshold"] <= lo  # the lower bound, rounded down to 4 decimals
    # the attacks' margins are their own: uncorrelated with the source's
    for k in ("a20", "a45"):
        assert cal["attack"][k]["score"]["value"] < sc["threshold"] and sc["rejected"][k]
    assert sc["separates"] == all(sc["rejected"].values())


def test_margin_correlation_is_scale_free_and_has_an_interval():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 6))
    y = ref.argmax(1)
    r, lo, hi = scores.margin_correlation(ref, 3.0 * ref + 7.0, y)
    assert r == pytest.approx(1.0, abs=1e-5) and lo < r <= hi
    r, lo, hi = scores.margin_correlation(ref, rng.normal(size=(50, 6)), y)
    assert lo < 0 < hi  # independent outputs: no correlation to speak of
    assert scores.margin_correlation(ref, np.zeros((50, 6)), y)[0] == 0.0
    assert np.all(scores.margins(ref, y) > 0)
    assert np.all(scores.order_agreement(ref, 3.0 * ref + 7.0) == 1.0)
    assert np.all(scores.order_agreement(ref, -ref) == 0.0)
    with pytest.raises(ValueError):
        scores.margin_correlation(ref, ref[:, :3], y)


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


def test_reports_say_when_no_threshold_separates():
    from fpgaprint.fingerprint.report import calibration_lines, markdown

    fs = make_set(clustered=True)
    thr, cal = place_threshold(fs, sides_for(fs, [6], [40, 45]))
    lines = calibration_lines(cal)
    assert lines[0].startswith("separates: NO") and "no threshold separates them" in lines[0]
    assert any(x.startswith("power:") for x in lines)
    res = {"model": {"name": "m", "sha256": "ab" * 32, "kind": "float", "input_shape": [D],
                     "data": "d", "accuracy": 1.0},
           "config": {"count": N}, "variants": [], "summary": {},
           "methods": {"robust": {"threshold": thr, "calibration": cal}}}
    text = markdown(res)
    row = next(x for x in text.splitlines() if x.startswith("| robust | "))
    assert "| NO |" in row and "(no threshold separates)" in row
