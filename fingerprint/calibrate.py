"""Threshold calibration on benign variants of the source model.

Data-free by default: PTQ at 8/6/4 bits calibrated on the set's own inputs and magnitude
pruning at 50/70 % without fine-tune. With a data set, pruning is followed by a short
fine-tune. The threshold is the worst benign match rate minus a margin.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from compiler.data import Dataset
from compiler.errors import FpgaprintError
from fingerprint import variants
from fingerprint.check import match_rate
from fingerprint.fpset import FingerprintSet
from fingerprint.source import Model

PTQ_BITS = (8, 6, 4)
PRUNE_FRACTIONS = (0.5, 0.7)
DEFAULT_MARGIN = 0.05


def benign_variants(model: Model, calib_x: np.ndarray, data: Dataset | None = None,
                    seed: int = 0) -> tuple[dict[str, Callable[[], Model]], dict[str, str]]:
    """Builders of the calibration variants, and the variants that do not apply (why)."""
    builders: dict[str, Callable[[], Model]] = {}
    skipped: dict[str, str] = {}
    for bits in PTQ_BITS:
        if model.kind == "float":
            builders[f"ptq{bits}"] = lambda b=bits: variants.ptq(model, b, calib_x)
        else:
            skipped[f"ptq{bits}"] = f"{model.kind} model is already quantized"
    for frac in PRUNE_FRACTIONS:
        builders[f"prune{round(frac * 100)}"] = (
            lambda f=frac: variants.prune(model, f, data, epochs=3 if data else 0, seed=seed))
    return builders, skipped


def calibrate(fs: FingerprintSet, model: Model, data: Dataset | None = None,
              margin: float = DEFAULT_MARGIN, seed: int = 0) -> FingerprintSet:
    """A copy of `fs` whose threshold sits `margin` below the worst benign match rate."""
    builders, skipped = benign_variants(model, fs.inputs, data, seed)
    rates: dict[str, float] = {}
    for name, build in builders.items():
        try:
            rates[name] = match_rate(build(), fs)
        except FpgaprintError as e:
            skipped[name] = str(e)
    rates["source"] = match_rate(model, fs)
    worst_name = min(rates, key=rates.get)
    threshold = max(0.0, rates[worst_name] - margin)
    info = {
        "method": (f"worst benign match rate {rates[worst_name]:.3f} ({worst_name}) minus "
                   f"margin {margin:.3f} over {len(rates)} variants"),
        "variants": rates,
        "skipped": skipped,
        "margin": margin,
        "worst": worst_name,
        "data": data.name if data is not None else "none (data-free)",
    }
    return fs.with_threshold(threshold, info)
