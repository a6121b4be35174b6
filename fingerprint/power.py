"""How many fingerprint vectors a gap needs, and what they cost on the board's line.

With the benign side's worst match rate `b` and the attack side's best `a` (both measured in
calibration), N vectors tell the two apart when the Clopper-Pearson intervals of b·N and a·N
matches at N do not overlap. `vectors_needed` is the smallest such N up to a cap.
"""

from __future__ import annotations

from fpgaprint.core.selftest import CONFIDENCE, clopper_pearson

CAP = 500
BAUD = 115200  # the boards' UART rate (core/boards.yaml)


def separated(b: float, a: float, n: int, confidence: float = CONFIDENCE) -> bool:
    """The intervals of rates `b` and `a` at N = `n` do not overlap."""
    lo_b = clopper_pearson(round(b * n), n, confidence)[0]
    hi_a = clopper_pearson(round(a * n), n, confidence)[1]
    return lo_b > hi_a


def vectors_needed(b: float, a: float, confidence: float = CONFIDENCE, cap: int = CAP
                   ) -> int | None:
    """The smallest N (at most `cap`) at which `b` and `a` are separated; None if none is."""
    if b <= a:
        return None
    return next((n for n in range(1, cap + 1) if separated(b, a, n, confidence)), None)


def line_seconds(vectors: int, values_per_vector: int, classes: int, baud: int = BAUD) -> float:
    """Seconds on a UART at `baud` (10 bits a byte) to send `vectors` inputs (1 B a value)
    and read back their answers (4 B a raw output, 1 B a label), framing left out."""
    return vectors * (values_per_vector + 4 * classes + 1) * 10.0 / baud
