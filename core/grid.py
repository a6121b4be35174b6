"""The accelerator's input grid: the integers its first layer consumes, and their float
meaning for the pre-trained model (x = q · scale).

A model with an input quantizer brings its own grid (the quantizer's datatype and scale,
signed or unsigned); a float model without one gets the default UINT<bits> grid with
scale 1/(2^bits − 1), i.e. inputs in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fpgaprint.core.errors import InputError

MAX_BITS = 24  # integers up to 2^24 stay exact in float32, the graphs' number type


@dataclass(frozen=True)
class InputGrid:
    """Integers q of `bits` bits (signed: two's complement range, narrow: without the most
    negative value), meaning x = q · scale in float32."""

    bits: int = 8
    signed: bool = False
    scale: float | None = None  # None: 1 / (2^bits - 1), the default unsigned grid
    narrow: bool = False
    source: str = "default"  # "default", or the input quantizer's node name

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not (
                1 <= self.bits <= MAX_BITS):
            raise InputError(f"input grid: {self.bits!r} bits, expected 1 to {MAX_BITS}")
        if self.scale is not None and not (np.isfinite(self.scale) and self.scale > 0):
            raise InputError(f"input grid: scale {self.scale!r}, expected a positive number")
        if self.signed and self.bits < 2:
            raise InputError("input grid: a signed grid needs at least 2 bits")

    @property
    def qmin(self) -> int:
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def step(self) -> np.float32:
        """The float32 scale the graph multiplies the integers with."""
        s = self.scale if self.scale is not None else 1.0 / ((1 << self.bits) - 1)
        return np.float32(s)

    @property
    def datatype(self) -> str:
        return f"{'INT' if self.signed else 'UINT'}{self.bits}"

    @property
    def lo(self) -> float:
        return float(np.float32(self.qmin) * self.step)

    @property
    def hi(self) -> float:
        return float(np.float32(self.qmax) * self.step)

    def to_int(self, x: np.ndarray) -> np.ndarray:
        """Project floats onto the grid (round to nearest, clip to [qmin, qmax])."""
        q = np.rint(np.asarray(x, dtype=np.float64) / float(self.step))
        return np.clip(q, self.qmin, self.qmax).astype(np.int64)

    def to_float(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, dtype=np.float32) * self.step).astype(np.float32)

    def project(self, x: np.ndarray) -> np.ndarray:
        return self.to_float(self.to_int(x))

    def random(self, rng: np.random.Generator, shape) -> np.ndarray:
        """Uniform random integers on the grid."""
        return rng.integers(self.qmin, self.qmax + 1, size=shape).astype(np.int64)

    def contains(self, q: np.ndarray) -> bool:
        q = np.asarray(q)
        return q.size == 0 or (int(q.min()) >= self.qmin and int(q.max()) <= self.qmax)

    def to_dict(self) -> dict[str, Any]:
        return {"datatype": self.datatype, "bits": self.bits, "signed": self.signed,
                "narrow": self.narrow, "scale": float(self.step), "source": self.source}

    @classmethod
    def from_dict(cls, d: Any, where: str = "input grid") -> "InputGrid":
        if not isinstance(d, dict):
            raise InputError(f"{where}: expected a mapping")
        try:
            return cls(int(d["bits"]), bool(d.get("signed", False)), float(d["scale"]),
                       bool(d.get("narrow", False)), str(d.get("source", "default")))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: malformed ({e!r})") from None

    def same_integers(self, other: "InputGrid") -> bool:
        """Whether both grids mean the same integers and floats (the source may differ)."""
        return (self.datatype, self.narrow, float(self.step)) == (
            other.datatype, other.narrow, float(other.step))

    def describe(self) -> str:
        rng = f"{self.qmin}..{self.qmax}"
        return f"{self.datatype} ({rng}) x {float(self.step):.6g} from {self.source}"
