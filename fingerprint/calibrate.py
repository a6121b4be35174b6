"""Threshold calibration on benign variants of the source model.

Data-free by default: PTQ at 8/6/4 bits calibrated on the set's own inputs and magnitude
pruning at 50/70 % without fine-tune. With a data set, PTQ is calibrated on the data and
pruning is followed by a short fine-tune. The threshold is the worst benign match rate minus
a margin.
"""

from __future__ import annotations

import numpy as np

from fpgaprint.compiler.data import Dataset
from fpgaprint.core.errors import FpgaprintError
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.fingerprint import variants
from fpgaprint.fingerprint.check import match_rate
from fpgaprint.fingerprint.source import Model

PTQ_BITS = (8, 6, 4)
PRUNE_FRACTIONS = (0.5, 0.7)
DEFAULT_MARGIN = 0.05
FINETUNE_EPOCHS = 3


def benign_variants(model: Model, calib_x: np.ndarray, data: Dataset | None = None,
                    seed: int = 0) -> tuple[dict[str, Model], dict[str, str]]:
    """The calibration variants, and those that do not apply (with the reason)."""
    made: dict[str, Model] = {"source": model}
    skipped: dict[str, str] = {}
    for bits in PTQ_BITS:
        name = f"ptq{bits}"
        if model.kind != "float":
            skipped[name] = f"{model.kind} model is already quantized"
            continue
        try:
            made[name] = variants.ptq(model, bits, calib_x)
        except FpgaprintError as e:
            skipped[name] = str(e)
    for frac in PRUNE_FRACTIONS:
        v = variants.prune(model, frac, data, epochs=FINETUNE_EPOCHS if data else 0, seed=seed)
        made[v.name] = v
    return made, skipped


def threshold_from(fs: FingerprintSet, made: dict[str, Model], skipped: dict[str, str],
                   margin: float = DEFAULT_MARGIN, data: Dataset | None = None
                   ) -> FingerprintSet:
    """A copy of `fs` whose threshold sits `margin` below the worst of the `made` variants."""
    rates = {name: match_rate(m, fs) for name, m in made.items()}
    worst = min(rates, key=rates.get)
    info = {
        "method": (f"worst benign match rate {rates[worst]:.3f} ({worst}) minus margin "
                   f"{margin:.3f} over {len(rates)} variants"),
        "variants": rates,
        "skipped": dict(skipped),
        "margin": margin,
        "worst": worst,
        "data": data.name if data is not None else "none (data-free)",
    }
    return fs.with_threshold(max(0.0, rates[worst] - margin), info)


def calibrate(fs: FingerprintSet, model: Model, data: Dataset | None = None,
              margin: float = DEFAULT_MARGIN, seed: int = 0) -> FingerprintSet:
    """Calibrate `fs` on variants of `model`: data-free unless `data` is given."""
    calib_x = fs.inputs if data is None else data.x_train[:512]
    made, skipped = benign_variants(model, calib_x, data, seed)
    return threshold_from(fs, made, skipped, margin, data)
