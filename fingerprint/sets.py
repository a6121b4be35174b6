"""Splitting and comparing fingerprint sets: embedded and challenge sets never share an input."""

from __future__ import annotations

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet, shared_rows

MAX_COUNT = 10_000  # examples per set (and per challenge set) in one run


def split_disjoint(fs: FingerprintSet, count: int, seed: int = 0
                   ) -> tuple[FingerprintSet, FingerprintSet]:
    """Split a set into `count` embedded examples and the rest, classes shared out evenly;
    refuses (InputError) if any quantized input would appear in both."""
    ncls = int(fs.labels.max()) + 1 if len(fs) else 0
    quota = np.bincount(np.arange(count) % max(ncls, 1), minlength=ncls)
    rng = np.random.default_rng([seed, 0x5E7])
    first = []
    for c in range(ncls):
        idx = np.flatnonzero(fs.labels == c)
        first.extend(rng.permutation(idx)[:quota[c]].tolist())
    mask = np.zeros(len(fs), bool)
    mask[first] = True
    if mask.sum() != count:
        raise InputError(f"cannot share {len(fs)} examples into {count} embedded ones "
                         "with balanced classes")
    a, b = fs.subset(np.flatnonzero(mask)), fs.subset(np.flatnonzero(~mask))
    check_disjoint(a, b)
    return a, b


def check_disjoint(a: FingerprintSet, b: FingerprintSet, what: str = "embedded and challenge"
                   ) -> None:
    """InputError if a quantized input of `a` appears in `b`."""
    shared = len(shared_rows(a.inputs_int, b.inputs_int))
    if shared:
        raise InputError(f"{what} sets share {shared} quantized input(s)")
