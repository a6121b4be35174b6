"""How many fingerprint vectors a gap needs, and what they cost on the board's line.

With the benign side's worst match rate `b` and the attack side's best `a` (both measured in
calibration), N vectors tell the two apart when the Clopper-Pearson intervals of b·N and a·N
matches at N do not overlap. `vectors_needed` is the smallest such N up to a cap;
`size_to_gap` picks it from a calibration's measured rates (`generate --count auto`).
"""

from __future__ import annotations

from fpgaprint.core.boards import get_board
from fpgaprint.core.selftest import CONFIDENCE, clopper_pearson

CAP = 500
BAUD = 115200  # the line rate when no board is given (the boards' UART rate, core/boards.yaml)


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


def size_to_gap(benign: dict[str, float], attack: dict[str, float],
                confidence: float = CONFIDENCE, cap: int = CAP) -> dict:
    """The count that tells the worst of `benign` from the best of `attack` (name → match
    rate): `needed` is `vectors_needed` of the two, `chosen` is it, or `cap` when no N up to
    `cap` separates them (`needed` None); with the names, rates, gap and the reason in words."""
    if not benign or not attack:
        raise ValueError("size_to_gap needs at least one benign and one attack rate")
    worst = min(benign, key=benign.__getitem__)
    best = max(attack, key=attack.__getitem__)
    b, a = benign[worst], attack[best]
    need = vectors_needed(b, a, confidence, cap)
    ci = f"{100 * confidence:g} %"
    if need is not None:
        reason = f"the smallest N at which their {ci} intervals do not overlap"
    elif b > a:
        reason = f"the cap: no N up to {cap} separates their {ci} intervals"
    else:
        reason = "the cap: no N separates them (the attack matches as well)"
    return {"chosen": cap if need is None else need, "needed": need, "cap": cap,
            "confidence": confidence, "worst_benign": worst, "benign_rate": b,
            "against": best, "attack_rate": a, "gap": b - a, "reason": reason}


def board_baud(board: str | None) -> tuple[int, str]:
    """The UART rate line times are given at, and where it comes from: the board's
    (core/boards.yaml), else `BAUD`."""
    if board is None:
        return BAUD, f"no board given: the default {BAUD}"
    b = get_board(board)
    if b.baud is None:
        return BAUD, f"{b.name} has no UART, its agent is reached over TCP: the default {BAUD}"
    return int(b.baud), f"{b.name}'s UART, core/boards.yaml"
