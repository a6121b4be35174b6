"""firmware/selftest_vectors.h: the self-test vectors as C99 arrays with CRC-32s.

Each array is stored row-major in the smallest <stdint.h> type that holds its datatype; its
CRC-32 (IEEE, zlib.crc32) is taken over the array's little-endian bytes in that type, i.e.
over the array's memory on a little-endian target.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from fpgaprint.compiler.errors import InputError
from fpgaprint.compiler.manifest import write_atomic

PREFIX = "FPGAPRINT_SELFTEST"
GUARD = "FPGAPRINT_SELFTEST_VECTORS_H"
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


def c_string(text: str) -> str:
    """A C string literal: printable ASCII as is, everything else as octal escapes of UTF-8."""
    out = []
    for b in text.encode("utf-8"):
        c = chr(b)
        if c in '"\\' or not 0x20 <= b < 0x7F:
            out.append(f"\\{b:03o}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _literals(values: np.ndarray, ctype: str) -> list[str]:
    """C literals of a 1-D array's values in `ctype` (suffixes/macros where C needs them)."""
    ints = values.tolist()
    if ctype in ("uint8_t", "int8_t", "uint16_t", "int16_t"):
        return list(map(str, ints))
    if ctype == "uint32_t":
        return [f"{v}u" for v in ints]
    if ctype == "int32_t":
        return ["INT32_MIN" if v == -(2**31) else str(v) for v in ints]
    if ctype == "int64_t":
        return ["INT64_MIN" if v == -(2**63) else f"INT64_C({v})" for v in ints]
    return [f"UINT64_C({v})" for v in ints]


def _wrap(items: list[str], indent: str, width: int) -> list[str]:
    """`items` as comma-terminated entries, filled into lines of at most `width` characters."""
    lines: list[str] = []
    cur: list[str] = []
    used = len(indent)
    for it in items:
        piece = it + ","
        if cur and used + 1 + len(piece) > width:
            lines.append(indent + " ".join(cur))
            cur, used = [], len(indent)
        used += len(piece) + (1 if cur else 0)
        cur.append(piece)
    if cur:
        lines.append(indent + " ".join(cur))
    return lines


def _rows(values: np.ndarray, ctype: str, indent: str, width: int = 100) -> list[str]:
    """Brace-enclosed rows for a 2-D array (or a flat list for 1-D), wrapped at `width`."""
    if values.ndim == 1:
        return _wrap(_literals(values, ctype), indent, width)
    lines = []
    for row in values:
        lines.append(indent + "{")
        lines += _wrap(_literals(row, ctype), indent + "    ", width)
        lines.append(indent + "},")
    return lines


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


def render_header(
    name: str, vectors: dict[str, np.ndarray], input_datatype: str, raw_datatype: str
) -> tuple[str, dict[str, str]]:
    """The header text and the CRC-32 of each array as "0x%08x" strings (keys: ARRAYS)."""
    arrays = c_arrays(vectors, input_datatype, raw_datatype)
    crcs = {k: f"0x{array_crc32(v, t):08x}" for k, (v, t) in arrays.items()}
    n, inputs, raw = len(arrays["inputs"][0]), arrays["inputs"][0], arrays["golden_raw"][0]
    in_t, raw_t = arrays["inputs"][1], arrays["golden_raw"][1]
    lines = [
        "/* Self-test vectors of an fpgaprint deployment package (generated; do not edit). */",
        "/* CRC-32s are IEEE (zlib) over each array's little-endian bytes, row-major. */",
        f"#ifndef {GUARD}",
        f"#define {GUARD}",
        "",
        "#include <stdint.h>",
        "",
        f"#define {PREFIX}_PACKAGE_NAME {c_string(name)}",
        f"#define {PREFIX}_INPUT_DATATYPE {c_string(input_datatype)}",
        f"#define {PREFIX}_RAW_DATATYPE {c_string(raw_datatype)}",
        f"#define {PREFIX}_COUNT {n}",
        f"#define {PREFIX}_INPUT_SIZE {inputs.shape[1]}",
        f"#define {PREFIX}_RAW_SIZE {raw.shape[1]}",
    ]
    lines += [f"#define {PREFIX}_{k.upper()}_CRC32 {crcs[k]}u" for k in ARRAYS]
    lines += [
        "",
        f"typedef {in_t} fpgaprint_selftest_input_t;",
        f"typedef {raw_t} fpgaprint_selftest_raw_t;",
        f"typedef {LABEL_TYPE} fpgaprint_selftest_label_t;",
        "",
    ]
    dims = {
        "inputs": ("fpgaprint_selftest_input_t", f"[{PREFIX}_COUNT][{PREFIX}_INPUT_SIZE]"),
        "golden_raw": ("fpgaprint_selftest_raw_t", f"[{PREFIX}_COUNT][{PREFIX}_RAW_SIZE]"),
        "expected_labels": ("fpgaprint_selftest_label_t", f"[{PREFIX}_COUNT]"),
        "golden_labels": ("fpgaprint_selftest_label_t", f"[{PREFIX}_COUNT]"),
    }
    for key in ARRAYS:
        values, ctype = arrays[key]
        typ, dim = dims[key]
        lines.append(f"static const {typ}")
        lines.append(f"    fpgaprint_selftest_{key}{dim} = {{")
        lines += _rows(values, ctype, "    ")
        lines += ["};", ""]
    lines.append(f"#endif /* {GUARD} */")
    return "\n".join(lines) + "\n", crcs


def write_header(
    path: str | Path,
    name: str,
    vectors: dict[str, np.ndarray],
    input_datatype: str,
    raw_datatype: str,
) -> dict[str, str]:
    """Write the header atomically; return the CRC-32s it records."""
    text, crcs = render_header(name, vectors, input_datatype, raw_datatype)
    write_atomic(path, text.encode("ascii"))
    return crcs
