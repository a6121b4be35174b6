"""The accelerator's input grid: the integers its first layer consumes, and their float
meaning for the pre-trained model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InputGrid:
    """The accelerator's input grid: unsigned integers of `bits` bits, x_float = q / qmax."""

    bits: int = 8

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1

    @property
    def datatype(self) -> str:
        return f"UINT{self.bits}"

    def to_int(self, x: np.ndarray) -> np.ndarray:
        """Project floats in [0, 1] onto the grid (round to nearest, clip)."""
        return np.clip(np.rint(np.asarray(x, dtype=np.float64) * self.qmax), 0, self.qmax).astype(
            np.int64
        )

    def to_float(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, dtype=np.float32) / np.float32(self.qmax)).astype(np.float32)

    def project(self, x: np.ndarray) -> np.ndarray:
        return self.to_float(self.to_int(x))
