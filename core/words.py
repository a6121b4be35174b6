"""Memory words, written once: how the accelerator stores a value of a FINN datatype, and
what a flipped or stuck bit of that word means.

Signed integers are stored in two's complement of the datatype's width, unsigned ones as they
are, BIPOLAR as one bit (0 = -1, 1 = +1) and BINARY as one bit (0, 1). A flipped bit always
gives a value of the datatype's own storage: flipping a BIPOLAR word gives the other sign.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from fpgaprint.core.errors import InputError

Flip = tuple[str, int, int]  # (memory key, flat word index, bit)


@dataclass(frozen=True)
class WordFormat:
    """How one datatype is stored: width in bits and the encoding."""

    datatype: str
    bits: int
    encoding: str  # "bipolar", "signed" or "unsigned"

    @classmethod
    def of(cls, datatype: str) -> "WordFormat":
        from qonnx.core.datatype import DataType

        try:
            dt = DataType[datatype]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InputError(f"unknown datatype {datatype!r}") from None
        if datatype == "BIPOLAR":
            return cls(datatype, 1, "bipolar")
        if not dt.is_integer():
            raise InputError(f"{datatype} values are not integer words: bit faults need an "
                             "integer datatype")
        return cls(datatype, int(dt.bitwidth()), "signed" if dt.signed() else "unsigned")

    def to_word(self, values) -> np.ndarray:
        """Stored bit patterns of `values` (int64 array)."""
        v = np.asarray(values, dtype=np.int64)
        if self.encoding == "bipolar":
            return (v > 0).astype(np.int64)
        return v & ((1 << self.bits) - 1)

    def from_word(self, words) -> np.ndarray:
        """The values that stored bit patterns mean (int64 array)."""
        w = np.asarray(words, dtype=np.int64) & ((1 << self.bits) - 1)
        if self.encoding == "bipolar":
            return np.where(w & 1, 1, -1).astype(np.int64)
        if self.encoding == "signed":
            return np.where(w >= 1 << (self.bits - 1), w - (1 << self.bits), w)
        return w

    def check_bit(self, bit: int) -> None:
        if not 0 <= int(bit) < self.bits:
            raise InputError(f"bit {bit} out of range for a {self.bits}-bit {self.datatype} word")


def _scalar_or_array(result: np.ndarray, like):
    return int(result) if np.ndim(like) == 0 else result


def to_word(values, datatype: str):
    """Stored bit pattern(s) of `values` in `datatype`."""
    return _scalar_or_array(WordFormat.of(datatype).to_word(values), values)


def from_word(words, datatype: str):
    """The value(s) that stored bit pattern(s) mean in `datatype`."""
    return _scalar_or_array(WordFormat.of(datatype).from_word(words), words)


def flip(values, bit: int, datatype: str):
    """`values` with `bit` of each stored word flipped."""
    fmt = WordFormat.of(datatype)
    fmt.check_bit(bit)
    return _scalar_or_array(fmt.from_word(fmt.to_word(values) ^ (1 << int(bit))), values)


def stick(values, bit: int, level: int, datatype: str):
    """`values` with `bit` of each stored word held at `level` (0 or 1)."""
    fmt = WordFormat.of(datatype)
    fmt.check_bit(bit)
    if level not in (0, 1):
        raise InputError(f"stuck-at level must be 0 or 1, got {level!r}")
    w = fmt.to_word(values)
    w = w | (1 << int(bit)) if level else w & ~(1 << int(bit))
    return _scalar_or_array(fmt.from_word(w), values)


@dataclass
class MemoryImage:
    """One memory of the accelerator: integer values in a FINN datatype."""

    layer: str
    tensor: str
    kind: str  # "weights" or "thresholds"
    values: np.ndarray  # int64
    datatype: str
    bits: int
    signed: bool

    @property
    def format(self) -> WordFormat:
        return WordFormat.of(self.datatype)


def random_flips(mems: dict[str, MemoryImage], count: int,
                 rng: np.random.Generator | int = 0,
                 kinds: Iterable[str] = ("weights", "thresholds")) -> list[Flip]:
    """`count` distinct (memory, index, bit), uniform over every bit of every word of the
    memories of the given kinds (sorted by key), drawn from `rng` (or a seed)."""
    kinds = tuple(kinds)
    keys = sorted(k for k, m in mems.items() if m.kind in kinds)
    if not keys:
        raise InputError(f"the model has no {'/'.join(kinds)} memories to flip")
    widths = [WordFormat.of(mems[k].datatype).bits for k in keys]
    sizes = np.array([mems[k].values.size * w for k, w in zip(keys, widths)], dtype=np.int64)
    total = int(sizes.sum())
    if count > total:
        raise InputError(f"cannot flip {count} distinct bits: the memories hold {total} bits")
    if count <= 0:
        return []
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    picks = rng.choice(total, size=count, replace=False)
    ends = np.cumsum(sizes)
    out = []
    for p in picks.tolist():
        m = int(np.searchsorted(ends, p, side="right"))
        offset = p - (int(ends[m - 1]) if m else 0)
        out.append((keys[m], offset // widths[m], offset % widths[m]))
    return out
