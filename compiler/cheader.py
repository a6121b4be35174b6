"""firmware/selftest_vectors.h: the self-test vectors as C99 arrays with CRC-32s.

Each array is stored row-major in the smallest <stdint.h> type that holds its datatype; its
CRC-32 (IEEE, zlib.crc32) is taken over the array's little-endian bytes in that type, i.e.
over the array's memory on a little-endian target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fpgaprint.core.atomic import write_atomic
from fpgaprint.core.carrays import ARRAYS, LABEL_TYPE, array_crc32, c_arrays

PREFIX = "FPGAPRINT_SELFTEST"
GUARD = "FPGAPRINT_SELFTEST_VECTORS_H"


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
