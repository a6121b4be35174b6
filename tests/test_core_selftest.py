"""The one pass rule (`core.selftest`): policy validation, exact and fingerprint checks,
missing answers, and the confidence interval."""

from __future__ import annotations

import numpy as np
import pytest

from fpgaprint.core.errors import InputError
from fpgaprint.core.selftest import (
    FAIL,
    NO_VERDICT,
    PASS,
    Policy,
    clopper_pearson,
    evaluate,
)


@pytest.mark.parametrize("bad", [
    {"checks": []}, {"checks": ["exact", "exact"]}, {"checks": ["magic"]},
    {"checks": ["fingerprint"], "fingerprint_threshold": True},
    {"checks": ["fingerprint"], "fingerprint_threshold": 1.5},
    {"checks": ["fingerprint"]}, [], "exact",
])
def test_one_policy_validation_refuses(bad):
    with pytest.raises(InputError, match="policy"):
        Policy.from_dict(bad)


def test_policy_round_trip():
    p = Policy.from_dict({"checks": ["exact", "fingerprint"], "fingerprint_threshold": 0.9})
    assert Policy.from_dict(p.to_dict()) == p
    assert Policy.from_dict({"checks": ["exact"]}).checks == ("exact",)
    assert p.required_matches(100) == 90 and p.required_matches(7) == 7


def _vectors(n=10, width=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"golden_raw": rng.integers(-50, 50, (n, width)),
            "expected_labels": rng.integers(0, 10, n)}


def test_exact_and_fingerprint_pass_and_fail():
    v = _vectors()
    policy = Policy(("exact", "fingerprint"), 0.8)
    ev = evaluate(v["golden_raw"], v["expected_labels"], v, policy)
    assert ev.status == PASS and ev.match_rate == 1.0
    raw = v["golden_raw"].copy()
    raw[4, 1] += 1
    ev = evaluate(raw, v["expected_labels"], v, policy)
    assert ev.status == FAIL and ev.check("exact").failed == 1
    assert "vectors 4" in ev.reason and ev.raw_diff.tolist()[4] == 1
    labels = v["expected_labels"].copy()
    labels[:3] = (labels[:3] + 1) % 10  # 7/10 < 0.8
    ev = evaluate(None, labels, v, Policy(("fingerprint",), 0.8))
    assert ev.status == FAIL and "7/10" in ev.reason and "8 required" in ev.reason


def test_exact_holds_the_label_to_the_deployed_models_for_the_same_raw_output():
    v = _vectors()
    v["golden_labels"] = v["golden_raw"].argmax(1)
    policy = Policy(("exact", "fingerprint"), 0.8)
    labels = v["golden_labels"].copy()
    ev = evaluate(v["golden_raw"], labels, {**v, "expected_labels": labels}, policy)
    assert ev.status == PASS and ev.exact.all()
    assert "raw outputs and labels equal" in ev.check("exact").detail
    labels[6] = (labels[6] + 1) % 3  # the raw output is exact, its label is not
    ev = evaluate(v["golden_raw"], labels, {**v, "expected_labels": v["golden_labels"]}, policy)
    assert ev.status == FAIL and ev.check("fingerprint").status == PASS  # 9/10 >= 0.8
    c = ev.check("exact")
    assert c.failed == 1 and "1 with the golden raw output but another label (vectors 6)" \
        in c.detail
    assert ev.raw_diff.tolist()[6] == 0 and ev.exact.tolist()[6] is False
    with pytest.raises(InputError, match="9 golden labels for 10 vectors"):
        evaluate(v["golden_raw"], labels, {**v, "golden_labels": v["golden_labels"][:9]}, policy)


def test_missing_answers_never_pass():
    v = _vectors()
    answered = np.ones(10, bool)
    answered[9] = False
    ev = evaluate(v["golden_raw"], v["expected_labels"], v, Policy(("exact", "fingerprint"), 0.5),
                  answered=answered)
    assert ev.status == NO_VERDICT
    labels = (v["expected_labels"] + 1) % 10  # already proven below the threshold
    ev = evaluate(None, labels, v, Policy(("fingerprint",), 0.5), answered=answered)
    assert ev.status == FAIL


def test_interval_and_marginal_flag():
    lo, hi = clopper_pearson(95, 100)
    assert lo < 0.95 < hi and 0.88 < lo < 0.9 and 0.98 < hi < 0.99
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0
    from scipy.stats import beta  # the textbook form: beta quantiles

    for k, n in ((1, 48), (30, 48), (47, 48), (500, 1000)):
        a = (1 - 0.95) / 2
        assert clopper_pearson(k, n, 0.95) == pytest.approx(
            (beta.ppf(a, k, n - k + 1), beta.ppf(1 - a, k + 1, n - k)), abs=1e-12)
    v = _vectors(n=100)
    labels = v["expected_labels"].copy()
    labels[:8] = (labels[:8] + 1) % 10  # 92/100 at threshold 0.9: inside the interval
    fp = evaluate(None, labels, v, Policy(("fingerprint",), 0.9)).check("fingerprint")
    assert fp.status == PASS and fp.extra["marginal"]
    fp = evaluate(None, v["expected_labels"], v, Policy(("fingerprint",), 0.9)).check("fingerprint")
    assert fp.status == PASS and not fp.extra["marginal"]


def test_boundary_tier_is_strict_and_separate_from_the_fingerprint_tier():
    v = _vectors(n=30)
    policy = Policy(("exact", "fingerprint", "boundary"), 0.5, 10)  # vectors 20..29: boundary
    labels = v["expected_labels"].copy()
    labels[:5] = (labels[:5] + 1) % 10  # 15/20 fingerprint matches: still a pass at 0.5
    ev = evaluate(None, labels, v, Policy(("fingerprint", "boundary"), 0.5, 10))
    assert ev.status == PASS and ev.check("fingerprint").extra["match_rate"] == 0.75
    assert ev.check("boundary").detail == "10/10 labels equal the deployed model's"
    labels[27] = (labels[27] + 1) % 10  # one boundary label moves: FAIL
    ev = evaluate(v["golden_raw"], labels, v, policy)
    assert ev.status == FAIL and ev.check("boundary").failed == 1
    assert "boundary vectors 7" in ev.check("boundary").detail
    assert ev.check("fingerprint").status == PASS and ev.check("exact").status == PASS
    assert ev.label_ok.tolist()[27] is False and ev.label_checked.all()
    answered = np.ones(30, bool)
    answered[29] = False
    ev = evaluate(None, v["expected_labels"], v, Policy(("boundary",), 1.0, 10),
                  answered=answered)
    assert ev.check("boundary").status == NO_VERDICT
    assert not ev.label_checked[:20].any()  # no label check on the untiered vectors


@pytest.mark.parametrize("bad, message", [
    ({"checks": ["boundary"]}, "positive exactly when"),
    ({"checks": ["exact"], "boundary_count": 3}, "positive exactly when"),
    ({"checks": ["boundary"], "boundary_count": -1}, "from 0 to"),
    ({"checks": ["boundary"], "boundary_count": True}, "from 0 to"),
])
def test_boundary_policy_fields_are_validated(bad, message):
    with pytest.raises(InputError, match=message):
        Policy.from_dict(bad)


def test_boundary_count_must_fit_the_vectors():
    p = Policy.from_dict({"checks": ["fingerprint", "boundary"], "fingerprint_threshold": 0.5,
                          "boundary_count": 4})
    assert p.to_dict()["boundary_count"] == 4
    assert Policy(("exact", "fingerprint"), 0.5).to_dict() == {
        "checks": ["exact", "fingerprint"], "fingerprint_threshold": 0.5}  # unchanged form
    with pytest.raises(InputError, match="'boundary_count' is 4 but there are 3 vectors"):
        p.tiers(3)
    with pytest.raises(InputError, match="the fingerprint check has no vectors"):
        p.tiers(4)
    assert p.tiers(10) == (slice(0, 6), slice(6, 10))


def test_marginal_pass_is_flagged_and_the_interval_is_in_the_detail():
    v = _vectors(n=100)
    labels = v["expected_labels"].copy()
    labels[:8] = (labels[:8] + 1) % 10
    ev = evaluate(None, labels, v, Policy(("fingerprint",), 0.9))
    fp = ev.check("fingerprint")
    assert ev.status == PASS and ev.marginal  # the rule passes; callers must not say PASS
    assert fp.detail.startswith("MARGINAL: match rate 0.920 >= threshold 0.900 (92/100; "
                                "95 % interval [0.848, 0.965])")
    ev = evaluate(None, labels, v, Policy(("fingerprint",), 0.8), confidence=0.99)
    assert not ev.marginal and "99 % interval" in ev.check("fingerprint").detail
