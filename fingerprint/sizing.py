"""`generate --count auto`: a fingerprint set sized to the gap its calibration measures.

A pilot set of `PILOT` vectors is measured against the calibration's sides. The count is the
smallest N at which the intervals of the worst benign variant and of the best independently
trained model do not overlap (`power.size_to_gap`), at most `power.CAP`. The set is then
generated at that count from the same seed and calibrated again, so `--count auto` writes what
`--count N --calibrate` writes, plus the record of the choice (`calibration["sizing"]`).
Generation is not prefix-stable (the balanced targets and the rounds depend on the count), so
the pilot is reused only when N equals its size. N comes from the pilot's rates, the more
precise measurement when N is below the pilot's size. When the rates re-measured on the set
at N still overlap at N, N is sized again from them (at most `ROUNDS` sizings in all, never
smaller); every round is recorded (`rounds`) and the last one's rates shown (`at_chosen`).

The independent models set N because they are the attack the calibration must reject (it
refuses a set that does not). The set's impostors are measured on the pilot and their own
needs reported, but do not set N: trained on the set's own vectors they match about as well
as the worst benign variant (docs/fingerprint.md, Known limits), so sizing to them would pin
every set at the cap without separating them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.progress import Progress
from fpgaprint.fingerprint import power
from fpgaprint.fingerprint.calibrate import Sides, calibrate_with, place_threshold
from fpgaprint.fingerprint.generate import generate, generate_pair
from fpgaprint.fingerprint.source import Model

PILOT = 100  # the pilot's size: the default --count
ROUNDS = 3  # sizings at most: the pilot's, then again from the rates measured at N


@dataclass
class Sized:
    """The calibrated set at the chosen count, its challenge set, and the choice."""

    fs: FingerprintSet
    challenge: FingerprintSet | None
    sizing: dict


def generate_sized(model: Model, algorithm: str, sides: Sides | Callable[[], Sides],
                   seed: int = 0, params=None,
                   challenge: bool = False, challenge_count: int | None = None,
                   pilot: int = PILOT, cap: int = power.CAP, board: str | None = None,
                   progress: Progress | None = None) -> Sized:
    """Size, generate and calibrate a set of `model` (and a challenge set of `challenge_count`
    vectors, default the chosen count, when `challenge`); `board` gives the UART rate of the
    line time (core/boards.yaml). `sides` may be a function making them: it is called once
    the pilot is made, so a pilot that cannot be made fails before any training."""
    baud, baud_source = power.board_baud(board)
    progress = progress or Progress(None)
    first = _made(f"the pilot of {pilot}", generate, model, algorithm, pilot, seed, params,
                  progress)
    if callable(sides):
        sides = sides()
    with progress.task("calibration of the pilot"):
        _, rep = place_threshold(first, sides, baud=baud)
    rates = {side: {k: e["match_rate"] for k, e in rep[side].items()}
             for side in ("benign", "attack", "impostor")}
    size = power.size_to_gap(rates["benign"], rates["attack"], rep["confidence"], cap)
    n = size["chosen"]
    rounds: list[dict] = []
    while True:
        reuse = n == len(first) and not challenge
        if reuse:
            fs, chal = first, None
        else:
            fs, chal = _made(f"the set of N={n}", generate_pair, model, algorithm, n,
                             (challenge_count or n) if challenge else 0, seed, params,
                             progress)
        with progress.task("calibration"):
            fs = calibrate_with(fs, sides, baud=baud)
        at = _at_chosen(fs.calibration)
        rounds.append({"count": n, "separated": at["separated"],
                       "vectors_needed": at["vectors_needed"]})
        # the rates measured at N may need more vectors than the pilot's: size again
        more = at["vectors_needed"]
        if at["separated"] or more is None or more <= n or len(rounds) == ROUNDS:
            break
        n = more
    if chal is not None:
        with progress.task("calibration of the challenge set"):
            chal = calibrate_with(chal, sides, embedded=fs, baud=baud)
    b = size["benign_rate"]
    size = {**size, "from_pilot": size["chosen"], "chosen": n}
    sizing = {
        "requested": "auto", "pilot": len(first), **size, "rounds": rounds,
        "benign": rates["benign"], "attack": rates["attack"],
        "impostor": {k: {"match_rate": r, "vectors_needed":
                         power.vectors_needed(b, r, rep["confidence"], cap)}
                     for k, r in rates["impostor"].items()},
        "pilot_reused": reuse, "baud": baud, "baud_source": baud_source,
        "line_seconds": power.line_seconds(n, fs.inputs[0].size, model.num_classes, baud),
        "at_chosen": at,
    }
    return Sized(fs.with_threshold(fs.threshold, {**fs.calibration, "sizing": sizing}), chal,
                 sizing)


def _made(what: str, make, *args):
    """`make(*args)`; an InputError says which of the two generations it came from."""
    try:
        return make(*args)
    except InputError as e:
        raise InputError(f"--count auto: {what}: {e}") from None


def _at_chosen(cal: dict) -> dict:
    """The same two sides re-measured on the set at the chosen count (the calibration's own
    figures: `confident` and the independent models' `vectors_needed`)."""
    return {"worst_benign": cal["worst_benign"],
            "benign_rate": cal["benign"][cal["worst_benign"]]["match_rate"],
            "against": cal["best_attack"],
            "attack_rate": cal["attack"][cal["best_attack"]]["match_rate"],
            "separated": cal["confident"],
            "vectors_needed": cal["power"]["vectors_needed_independent"]}


def sizing_lines(sz: dict) -> list[str]:
    """The choice in one line; the rates re-measured at N and the impostors' own needs."""
    counts = [r["count"] for r in sz.get("rounds", [])]
    resized = (" (sized again from the rates at N=" + ", ".join(map(str, counts[:-1])) + ")"
               if len(counts) > 1 else "")
    head = (f"count auto: N={sz['chosen']}{resized}, {sz['reason']}: on a pilot of {sz['pilot']} "
            f"{sz['worst_benign']} {sz['benign_rate']:.3f} against {sz['against']} "
            f"{sz['attack_rate']:.3f} (gap {sz['gap']:.3f})"
            + ("" if sz["needed"] is not None else "; the capped set is written")
            + f"; line time {sz['line_seconds']:.2f} s at {sz['baud']} baud "
            f"({sz['baud_source']})")
    out = [head]
    at = sz.get("at_chosen")
    if at:
        need = at["vectors_needed"]
        out.append(f"at N={sz['chosen']}: {at['worst_benign']} {at['benign_rate']:.3f} against "
                   f"{at['against']} {at['attack_rate']:.3f}, intervals "
                   + ("separated" if at["separated"] else
                      "overlap (" + (f"{need} would separate these rates"
                                     if need is not None else
                                     f"no N up to {sz['cap']} separates these rates") + ")"))
    imp = sz.get("impostor", {})
    if not imp:
        return out

    def need(e: dict) -> str:
        if e["vectors_needed"] is not None:
            return f"needs {e['vectors_needed']}"
        return "no N" if e["match_rate"] >= sz["benign_rate"] else f"needs more than {sz['cap']}"

    return [*out, "impostors on the pilot (reported, not sizing N): " + ", ".join(
        f"{k} {e['match_rate']:.3f} ({need(e)})" for k, e in imp.items())]
