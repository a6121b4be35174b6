"""Verdict logic on synthetic arrays: exact and fingerprint checks, partial answers, identity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpgaprint.core.errors import InputError
from fpgaprint.harness.verdict import (
    FAIL,
    NO_VERDICT,
    PASS,
    Answers,
    Expected,
    Policy,
    decide,
    identity_check,
)

BOTH = Policy(("exact", "fingerprint"), 0.9)


def _expected(n: int = 20, r: int = 10, seed: int = 0) -> Expected:
    rng = np.random.default_rng(seed)
    raw = rng.integers(-300, 300, size=(n, r))
    golden = raw.argmax(axis=1)
    return Expected(expected_labels=golden.copy(), golden_raw=raw, golden_labels=golden)


def _perfect(exp: Expected) -> Answers:
    a = Answers(len(exp), exp.golden_raw.shape[1])
    a.record(np.arange(len(exp)), exp.golden_raw, exp.golden_labels)
    return a


def test_perfect_answers_pass_both_checks():
    exp = _expected()
    v = decide(exp, _perfect(exp), BOTH)
    assert v.status == PASS
    assert [c.status for c in v.checks] == [PASS, PASS]
    assert v.match_rate == 1.0
    assert all(r.exact and r.fingerprint and r.raw_diff == 0 for r in v.vectors)


def test_single_raw_bit_flip_fails_exact_but_not_fingerprint():
    exp = _expected()
    a = Answers(len(exp), 10)
    raw = exp.golden_raw.copy()
    raw[7, 3] ^= 1 << 4
    a.record(np.arange(len(exp)), raw, exp.golden_labels)
    v = decide(exp, a, BOTH)
    assert v.status == FAIL
    assert v.check("exact").status == FAIL and v.check("exact").failed == 1
    assert "vectors 7" in v.check("exact").detail
    assert v.check("fingerprint").status == PASS
    assert v.vectors[7].exact is False and v.vectors[7].raw_diff == 1
    assert v.vectors[6].exact is True


def test_fingerprint_threshold_boundary():
    exp = _expected(n=20)
    labels = exp.expected_labels.copy()
    labels[:2] = (labels[:2] + 1) % 10  # 18/20 = 0.90 -> meets 0.9
    a = Answers(20)
    a.record(np.arange(20), None, labels)
    pol = Policy(("fingerprint",), 0.9)
    assert decide(exp, a, pol).status == PASS
    labels[2] = (labels[2] + 1) % 10  # 17/20 = 0.85
    a.record(np.arange(20), None, labels)
    v = decide(exp, a, pol)
    assert v.status == FAIL
    assert "0.850 < threshold 0.900" in v.reason
    assert v.match_rate == pytest.approx(0.85)


def test_missing_answers_never_pass():
    exp = _expected()
    a = Answers(len(exp), 10)
    a.record(np.arange(19), exp.golden_raw[:19], exp.golden_labels[:19])
    v = decide(exp, a, BOTH)
    assert v.status == NO_VERDICT
    assert "1/20 vectors unanswered" in v.reason
    assert v.vectors[19].answered is False and v.vectors[19].exact is None


def test_partial_answers_with_proven_fault_fail():
    exp = _expected()
    a = Answers(len(exp), 10)
    raw = exp.golden_raw[:5].copy()
    raw[0, 0] += 1
    a.record(np.arange(5), raw, exp.golden_labels[:5])
    assert decide(exp, a, BOTH).status == FAIL
    # fingerprint alone: 5 answered, 3 wrong, 15 missing -> 17 max matches < 18 required
    labels = exp.expected_labels[:5].copy()
    labels[:3] += 1
    b = Answers(len(exp))
    b.record(np.arange(5), None, labels)
    v = decide(exp, b, Policy(("fingerprint",), 0.9))
    assert v.status == FAIL


def test_wrong_raw_width_is_an_exact_failure():
    exp = _expected(n=4)
    a = Answers(4, 10)
    a.record(np.arange(4), np.zeros((4, 7), dtype=np.int64), exp.golden_labels)
    v = decide(exp, a, Policy(("exact",)))
    assert v.status == FAIL
    assert "expected width" in v.reason


def test_label_only_policy_ignores_raw():
    exp = Expected(expected_labels=np.array([1, 2, 3]))
    a = Answers(3)
    a.record(np.array([2, 0, 1]), None, np.array([3, 1, 2]))
    v = decide(exp, a, Policy(("fingerprint",), 1.0))
    assert v.status == PASS
    assert [c.name for c in v.checks] == ["fingerprint"]
    assert v.vectors[0].exact is None


def test_exact_without_golden_raw_is_input_error():
    exp = Expected(expected_labels=np.array([1]))
    with pytest.raises(InputError, match="no golden raw output"):
        decide(exp, Answers(1), Policy(("exact",)))


def test_identity_failure_dominates():
    exp = _expected()
    idc = identity_check({"package_id": "aa", "protocol": 1}, {"package_id": "bb", "protocol": 1})
    v = decide(exp, _perfect(exp), BOTH, extra_checks=[idc])
    assert v.status == FAIL
    assert "package_id: board reports 'bb', expected 'aa'" in v.reason
    assert identity_check({"package_id": "aa"}, {"package_id": "aa"}).status == PASS


@pytest.mark.parametrize(
    "policy, msg",
    [
        ({"checks": []}, "non-empty"),
        ({"checks": ["exact", "crc"]}, "checks from"),
        ({"checks": ["fingerprint"], "fingerprint_threshold": 1.5}, r"\[0, 1\]"),
    ],
)
def test_bad_policy_is_input_error(policy, msg):
    with pytest.raises(InputError, match=msg):
        Policy.from_dict(policy, where="pkg/selftest/policy.json")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 30),
    wrong=st.sets(st.integers(0, 29)),
    missing=st.sets(st.integers(0, 29)),
    thr=st.floats(0.0, 1.0),
)
def test_fingerprint_verdict_matches_definition(n, wrong, missing, thr):
    exp = Expected(expected_labels=np.arange(n) % 10)
    wrong = {i for i in wrong if i < n}
    missing = {i for i in missing if i < n}
    labels = exp.expected_labels.copy()
    for i in wrong:
        labels[i] = (labels[i] + 1) % 10
    idx = np.array([i for i in range(n) if i not in missing], dtype=np.int64)
    a = Answers(n)
    a.record(idx, None, labels[idx])
    v = decide(exp, a, Policy(("fingerprint",), thr))
    matches = sum(1 for i in range(n) if i not in wrong and i not in missing)
    best = matches + len(missing)
    if best / n < thr - 1e-9:
        assert v.status == FAIL
    elif missing:
        assert v.status == NO_VERDICT
    else:
        assert v.status == (PASS if matches / n >= thr - 1e-9 else FAIL)
