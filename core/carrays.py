"""The self-test arrays as C stores them: the smallest <stdint.h> type per datatype and the
CRC-32 (IEEE, zlib.crc32) of each array's little-endian bytes, row-major. The package reader
checks these CRC-32s; `fpgaprint.compiler.cheader` writes them into the firmware header."""

from __future__ import annotations

import zlib

import numpy as np

from fpgaprint.core.errors import InputError

# The order of the arrays in the header (and of their CRCs).
ARRAYS = ("inputs", "golden_raw", "expected_labels", "golden_labels")
LABEL_TYPE = "uint16_t"

_C_TYPES = [  # (C type, numpy little-endian dtype, min, max)
    ("uint8_t", "<u1", 0, 2**8 - 1),
    ("int8_t", "<i1", -(2**7), 2**7 - 1),
    ("uint16_t", "<u2", 0, 2**16 - 1),
    ("int16_t", "<i2", -(2**15), 2**15 - 1),
    ("uint32_t", "<u4", 0, 2**32 - 1),
    ("int32_t", "<i4", -(2**31), 2**31 - 1),
    ("uint64_t", "<u8", 0, 2**64 - 1),
    ("int64_t", "<i8", -(2**63), 2**63 - 1),
]
_NP = {c: np.dtype(d) for c, d, _, _ in _C_TYPES}


def datatype_range(datatype: str) -> tuple[int, int]:
    """(min, max) of an integer QONNX datatype name such as UINT8, INT16, BIPOLAR."""
    from qonnx.core.datatype import DataType

    try:
        dt = DataType[datatype]
    except (KeyError, AttributeError, TypeError, ValueError):
        raise InputError(f"unknown datatype {datatype!r}") from None
    if not dt.is_integer():
        raise InputError(f"datatype {datatype!r} is not an integer type (no C array for it)")
    return int(dt.min()), int(dt.max())


def c_type_for(lo: int, hi: int) -> str:
    """The smallest stdint type holding [lo, hi] (unsigned preferred at equal width)."""
    for ctype, _, tmin, tmax in _C_TYPES:
        if tmin <= lo and hi <= tmax:
            return ctype
    raise InputError(f"range [{lo}, {hi}] does not fit a 64-bit integer")


def array_crc32(values: np.ndarray, ctype: str) -> int:
    """CRC-32 (IEEE) of the array's little-endian bytes in `ctype`, row-major."""
    return zlib.crc32(np.ascontiguousarray(values, dtype=_NP[ctype]).tobytes()) & 0xFFFFFFFF


def _checked(name: str, values: np.ndarray, lo: int, hi: int, what: str) -> None:
    if values.size and (int(values.min()) < lo or int(values.max()) > hi):
        bad = values[(values < lo) | (values > hi)].ravel()[0]
        raise InputError(f"selftest {name}: value {int(bad)} outside {what} [{lo}, {hi}]")


def c_arrays(
    vectors: dict[str, np.ndarray], input_datatype: str, raw_datatype: str
) -> dict[str, tuple[np.ndarray, str]]:
    """Each array of ARRAYS, flattened to (N, size) or (N,), with its C type.

    Raises InputError when a value lies outside its datatype.
    """
    n = int(np.asarray(vectors["inputs"]).shape[0])
    inputs = np.asarray(vectors["inputs"]).reshape(n, -1)
    raw = np.asarray(vectors["golden_raw"]).reshape(n, -1)
    in_lo, in_hi = datatype_range(input_datatype)
    raw_lo, raw_hi = datatype_range(raw_datatype)
    _checked("inputs", inputs, in_lo, in_hi, f"input datatype {input_datatype}")
    _checked("golden_raw", raw, raw_lo, raw_hi, f"raw output datatype {raw_datatype}")
    out = {
        "inputs": (inputs, c_type_for(in_lo, in_hi)),
        "golden_raw": (raw, c_type_for(raw_lo, raw_hi)),
    }
    for key in ("expected_labels", "golden_labels"):
        labels = np.asarray(vectors[key]).reshape(n)
        _checked(key, labels, 0, 2**16 - 1, f"{LABEL_TYPE} label range")
        out[key] = (labels, LABEL_TYPE)
    return out


def crc32s(
    vectors: dict[str, np.ndarray], input_datatype: str, raw_datatype: str
) -> dict[str, str]:
    """The CRC-32 of each array of ARRAYS as "0x%08x", as the header records it."""
    arrays = c_arrays(vectors, input_datatype, raw_datatype)
    return {k: f"0x{array_crc32(v, t):08x}" for k, (v, t) in arrays.items()}
