"""Score-level agreement: how a model ranks the classes of each vector, against the source.

Labels say only which class wins. The outputs also say how the others are ordered, and a
benign compression keeps that order more than a model changed by other training does. Per
vector, the statistic is the share of the C(C-1)/2 class pairs that the model orders as the
source does (Kendall's tau rescaled to [0, 1]); scale-free, so raw accumulators, float
logits and the host-side scaled outputs compare alike. A set's score is its mean over the
vectors, with a Student-t interval.
"""

from __future__ import annotations

import numpy as np

from fpgaprint.core.selftest import CONFIDENCE


def order_agreement(reference: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per vector: the share of class pairs ordered as in `reference` (ties disagree unless
    both tie)."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(outputs, dtype=np.float64)
    if ref.shape != out.shape or ref.ndim != 2 or ref.shape[1] < 2:
        raise ValueError(f"outputs of shape {out.shape} against reference {ref.shape}")
    i, j = np.triu_indices(ref.shape[1], 1)
    return (np.sign(ref[:, i] - ref[:, j]) == np.sign(out[:, i] - out[:, j])).mean(1)


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE
                  ) -> tuple[float, float, float]:
    """(mean, lower, upper): the mean of per-vector values and its Student-t interval."""
    from scipy.special import stdtrit

    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    m = float(v.mean()) if n else 0.0
    if n < 2:
        return m, 0.0, 1.0
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * float(v.std(ddof=1)) / np.sqrt(n)
    return m, max(0.0, m - half), min(1.0, m + half)
