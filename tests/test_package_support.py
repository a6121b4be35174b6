"""Builders shared by the package tests: small synthetic packages (no tests here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fpgaprint.compiler.package import finalize_package, write_selftest
from fpgaprint.core.package import Package

N, IN, RAW = 6, 64, 10
# The identity files of a package built by build_package (besides manifest.json/.sig), and
# its extras (a build report: outside the identity).
CONTENT_FILES = [
    "firmware/selftest_vectors.h",
    "hw/top.bit",
    "model/golden.onnx",
    "selftest/policy.json",
    "selftest/vectors.npz",
]
EXTRA_FILES = ["reports/build.json"]
ALL_FILES = sorted(CONTENT_FILES + ["manifest.json", "manifest.sig"])


def make_meta(input_dt: str = "UINT8", raw_dt: str = "INT16", raw: int = RAW) -> dict:
    return {
        "name": "digits-mlp",
        "board": "Pynq-Z1",
        "part": "xc7z020clg400-1",
        "platform": "zynq",
        "clock_ns": 10.0,
        "io": {
            "input": {"name": "global_in", "shape": [1, IN], "datatype": input_dt},
            "raw_output": {"name": "raw_out", "shape": [1, raw], "datatype": raw_dt},
            "output": {"name": "global_out", "shape": [1, raw]},
        },
        "bitstream": {"path": "hw/top.bit"},
    }


def make_vectors(seed: int = 0, in_range=(0, 255), raw_range=(-32768, 32767), raw: int = RAW):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(in_range[0], in_range[1] + 1, (N, IN))
    golden_raw = rng.integers(raw_range[0], raw_range[1] + 1, (N, raw))
    golden_raw[0, 0], golden_raw[0, 1] = raw_range  # the extremes of the datatype
    inputs[0, 0], inputs[0, 1] = in_range
    golden_labels = golden_raw.argmax(axis=1)
    expected_labels = golden_labels.copy()
    expected_labels[-1] = (expected_labels[-1] + 1) % raw
    return inputs, golden_raw, golden_labels, expected_labels


POLICY = {"checks": ["exact", "fingerprint"], "fingerprint_threshold": 0.8,
          "algorithm": "robust"}


def build_package(
    out: Path,
    key_path: Path | None,
    allow_unsigned: bool = False,
    tar: bool = False,
    meta: dict | None = None,
    vectors: tuple | None = None,
) -> Package:
    """A complete package at `out` from synthetic arrays and dummy model/bitstream bytes."""
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "hw").mkdir(exist_ok=True)
    (out / "reports").mkdir(exist_ok=True)
    (out / "model/golden.onnx").write_bytes(b"\x08\x07golden-model-bytes\x00\x01")
    (out / "hw/top.bit").write_bytes(bytes(range(256)) * 4)
    (out / "reports/build.json").write_text('{"steps": []}\n')
    write_selftest(out, *(vectors or make_vectors()), dict(POLICY))
    return finalize_package(out, meta or make_meta(), key_path=key_path,
                            allow_unsigned=allow_unsigned, tar=tar)
