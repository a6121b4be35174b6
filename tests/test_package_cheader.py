"""firmware/selftest_vectors.h compiles as strict C99 and its arrays and CRC-32s are exact."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_package_support import N, build_package, make_meta, make_vectors

from fpgaprint.compiler import cheader
from fpgaprint.core import carrays
from fpgaprint.core.errors import InputError
from fpgaprint.core.package import verify_package

GCC = shutil.which("gcc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc not installed")

# A firmware-side self-check: recompute each array's CRC-32 (bitwise IEEE, reflected
# 0xEDB88320) over its memory, compare with the header's macros, print everything.
MAIN_C = r"""
#include <stddef.h>
#include <stdio.h>
#include "selftest_vectors.h"

static uint32_t crc32_ieee(const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < len; i++) {
        crc ^= p[i];
        for (k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

#define CHECK(arr, elem, macro)                                                      \
    do {                                                                             \
        uint32_t c = crc32_ieee(arr, sizeof(arr));                                   \
        printf(#arr " %08lx %lu\n", (unsigned long)c, (unsigned long)sizeof(elem));  \
        if (c != (macro)) bad = 1;                                                   \
    } while (0)

int other_unit(void);

int main(void) {
    int bad = 0, i, j;
    CHECK(fpgaprint_selftest_inputs, fpgaprint_selftest_inputs[0][0],
          FPGAPRINT_SELFTEST_INPUTS_CRC32);
    CHECK(fpgaprint_selftest_golden_raw, fpgaprint_selftest_golden_raw[0][0],
          FPGAPRINT_SELFTEST_GOLDEN_RAW_CRC32);
    CHECK(fpgaprint_selftest_expected_labels, fpgaprint_selftest_expected_labels[0],
          FPGAPRINT_SELFTEST_EXPECTED_LABELS_CRC32);
    CHECK(fpgaprint_selftest_golden_labels, fpgaprint_selftest_golden_labels[0],
          FPGAPRINT_SELFTEST_GOLDEN_LABELS_CRC32);
    printf("name %s %s %s\n", FPGAPRINT_SELFTEST_PACKAGE_NAME, FPGAPRINT_SELFTEST_INPUT_DATATYPE,
           FPGAPRINT_SELFTEST_RAW_DATATYPE);
    printf("dims %d %d %d %d\n", FPGAPRINT_SELFTEST_COUNT, FPGAPRINT_SELFTEST_INPUT_SIZE,
           FPGAPRINT_SELFTEST_RAW_SIZE, other_unit());
    for (i = 0; i < FPGAPRINT_SELFTEST_COUNT; i++) {
        printf("in");
        for (j = 0; j < FPGAPRINT_SELFTEST_INPUT_SIZE; j++)
            printf(" %ld", (long)fpgaprint_selftest_inputs[i][j]);
        printf("\nraw");
        for (j = 0; j < FPGAPRINT_SELFTEST_RAW_SIZE; j++)
            printf(" %ld", (long)fpgaprint_selftest_golden_raw[i][j]);
        printf("\nlabels %u %u\n", (unsigned)fpgaprint_selftest_golden_labels[i],
               (unsigned)fpgaprint_selftest_expected_labels[i]);
    }
    return bad;
}
"""
# A second translation unit including the same header: the arrays must not clash at link.
OTHER_C = (
    '#include "selftest_vectors.h"\n'
    "int other_unit(void) { return FPGAPRINT_SELFTEST_COUNT; }\n"
)


def _compile_and_run(header: Path, tmp: Path) -> list[str]:
    (tmp / "main.c").write_text(MAIN_C)
    (tmp / "other.c").write_text(OTHER_C)
    exe = tmp / "selfcheck"
    cc = subprocess.run(
        [GCC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{header.parent}",
         "-o", str(exe), str(tmp / "main.c"), str(tmp / "other.c")],
        capture_output=True, text=True,
    )
    assert cc.returncode == 0, cc.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=10)
    assert run.returncode == 0, f"CRC mismatch between arrays and macros:\n{run.stdout}"
    return run.stdout.splitlines()


CASES = [  # input datatype, raw datatype, input range, raw range, C element sizes
    ("UINT8", "INT16", (0, 255), (-32768, 32767), (1, 2)),
    ("INT4", "INT32", (-8, 7), (-(2**31), 2**31 - 1), (1, 4)),
    ("BIPOLAR", "INT24", (-1, 1), (-(2**23), 2**23 - 1), (1, 4)),
    ("UINT16", "UINT32", (0, 65535), (0, 2**32 - 1), (2, 4)),
]


@needs_gcc
@pytest.mark.parametrize("in_dt,raw_dt,in_range,raw_range,sizes", CASES)
def test_header_compiles_and_crcs_match(tmp_path, in_dt, raw_dt, in_range, raw_range, sizes):
    vectors = make_vectors(seed=3, in_range=in_range, raw_range=raw_range)
    if in_dt == "BIPOLAR":  # BIPOLAR holds only -1 and +1
        vectors[0][:] = np.where(vectors[0] >= 0, 1, -1)
    built = build_package(tmp_path / "pkg", None, allow_unsigned=True,
                          meta=make_meta(input_dt=in_dt, raw_dt=raw_dt), vectors=vectors)
    pkg = verify_package(built.dir, allow_unsigned=True)
    lines = _compile_and_run(pkg.header_path, tmp_path)

    crcs = {ln.split()[0].removeprefix("fpgaprint_selftest_"): ln.split()[1:]
            for ln in lines[:4]}
    assert crcs["inputs"][1] == str(sizes[0]) and crcs["golden_raw"][1] == str(sizes[1])
    assert crcs["expected_labels"][1] == crcs["golden_labels"][1] == "2"
    for key in carrays.ARRAYS:  # C (from memory) == manifest == Python zlib
        assert f"0x{crcs[key][0]}" == pkg.selftest_crc32[key]
    npz = pkg.vectors()
    assert pkg.selftest_crc32["inputs"] == "0x%08x" % zlib.crc32(
        npz["inputs"].astype(f"<{'i' if in_range[0] < 0 else 'u'}{sizes[0]}").tobytes())
    assert lines[4] == f"name digits-mlp {in_dt} {raw_dt}"
    assert lines[5] == f"dims {N} 64 10 {N}"

    body = lines[6:]
    got_in = np.array([[int(v) for v in ln.split()[1:]] for ln in body[0::3]])
    got_raw = np.array([[int(v) for v in ln.split()[1:]] for ln in body[1::3]])
    got_labels = np.array([[int(v) for v in ln.split()[1:]] for ln in body[2::3]])
    np.testing.assert_array_equal(got_in, npz["inputs"])
    np.testing.assert_array_equal(got_raw, npz["golden_raw"])
    np.testing.assert_array_equal(got_labels[:, 0], npz["golden_labels"])
    np.testing.assert_array_equal(got_labels[:, 1], npz["expected_labels"])
    assert got_raw.min() == raw_range[0] and got_raw.max() == raw_range[1]


@needs_gcc
def test_name_with_special_characters_is_escaped(tmp_path):
    meta = make_meta()
    meta["name"] = 'mlp "v2" \\ ü */'
    built = build_package(tmp_path / "pkg", None, allow_unsigned=True, meta=meta)
    lines = _compile_and_run(built.header_path, tmp_path)
    assert lines[4] == 'name mlp "v2" \\ ü */ UINT8 INT16'


def test_c_type_selection():
    assert carrays.c_type_for(*carrays.datatype_range("UINT8")) == "uint8_t"
    assert carrays.c_type_for(*carrays.datatype_range("BINARY")) == "uint8_t"
    assert carrays.c_type_for(*carrays.datatype_range("INT9")) == "int16_t"
    assert carrays.c_type_for(*carrays.datatype_range("UINT17")) == "uint32_t"
    assert carrays.c_type_for(*carrays.datatype_range("INT33")) == "int64_t"
    with pytest.raises(InputError, match="unknown datatype 'UINT_EIGHT'"):
        carrays.datatype_range("UINT_EIGHT")


def test_value_outside_raw_datatype_refused():
    inputs, raw, gl, el = make_vectors()
    raw[2, 3] = 40000
    vectors = dict(inputs=inputs, golden_raw=raw, golden_labels=gl, expected_labels=el)
    with pytest.raises(InputError, match=r"golden_raw: value 40000 outside raw output datatype "
                                         r"INT16 \[-32768, 32767\]"):
        cheader.render_header("x", vectors, "UINT8", "INT16")
