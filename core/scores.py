"""Score-level agreement: a model's outputs on fingerprint vectors, against the source's.

A core module (numpy and scipy only) so that the pass rule can use it as a check.

Labels say only which class wins. The outputs also say by how much, and a benign compression
keeps that more than a model changed by other training, or a board imitating the model from
its embedded vectors, does. The statistic is the **margin correlation**: over the set's
vectors, the Pearson correlation of the source's margin (its label's output minus the best
other) with the model's margin for the same label; with a Fisher-z interval. Invariant to a
positive scale and a shift common to all classes, so raw accumulators and float logits compare
alike. `order_agreement` (the share of class pairs ordered as the source orders them) is kept
as a second figure.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95  # the pass rule's interval level (core.selftest uses this one)


def margins(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per vector: the output of class `labels` minus the largest other output."""
    out = np.asarray(outputs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if out.ndim != 2 or out.shape[1] < 2 or len(y) != len(out):
        raise ValueError(f"outputs of shape {out.shape} for {len(y)} labels")
    rows = np.arange(len(y))
    other = out.copy()
    other[rows, y] = -np.inf
    return out[rows, y] - other.max(1)


def margin_correlation(reference: np.ndarray, outputs: np.ndarray, labels: np.ndarray,
                       confidence: float | None = None) -> tuple[float, float, float]:
    """(r, lower, upper): the correlation of the model's margins with the reference's for
    `labels`, and its Fisher-z interval at `confidence` (default: the pass rule's) (r = 0
    when either side's margins are constant)."""
    from scipy.special import ndtri

    if confidence is None:
        confidence = CONFIDENCE

    if np.shape(reference) != np.shape(outputs):
        raise ValueError(f"outputs of shape {np.shape(outputs)} against reference "
                         f"{np.shape(reference)}")
    a, b = margins(reference, labels), margins(outputs, labels)
    n = len(a)
    if n < 4:
        return 0.0, -1.0, 1.0
    if a.std() == 0 or b.std() == 0:
        r = 0.0
    else:
        r = float(np.clip(np.corrcoef(a, b)[0, 1], -0.999999, 0.999999))
    half = float(ndtri(0.5 + confidence / 2)) / np.sqrt(n - 3)
    z = np.arctanh(r)
    return r, float(np.tanh(z - half)), float(np.tanh(z + half))


def order_agreement(reference: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per vector: the share of class pairs ordered as in `reference` (ties disagree unless
    both tie)."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(outputs, dtype=np.float64)
    if ref.shape != out.shape or ref.ndim != 2 or ref.shape[1] < 2:
        raise ValueError(f"outputs of shape {out.shape} against reference {ref.shape}")
    i, j = np.triu_indices(ref.shape[1], 1)
    return (np.sign(ref[:, i] - ref[:, j]) == np.sign(out[:, i] - out[:, j])).mean(1)
