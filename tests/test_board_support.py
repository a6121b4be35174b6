"""Real packages for the board tests: zoo models compiled once per test process (no tests here).

`compiled(name)` runs `compiler.build.build_model` for a zoo model; `make_package(...)` turns a
compiled golden model into a signed package with embedded self-test vectors taken from the
model's own test data, expected labels from the pre-trained float model.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(tempfile.mkdtemp(prefix="fpgaprint-board-tests-"))
atexit.register(shutil.rmtree, ROOT, True)
SELFTEST_COUNT = 48


@dataclass
class Compiled:
    name: str
    out: Path
    golden: Path
    io: dict
    inputs: np.ndarray  # int64 test vectors on the input grid
    expected: np.ndarray  # labels of the pre-trained float model


@functools.cache
def compiled(name: str) -> Compiled:
    """Compile zoo:NAME for Pynq-Z1 into a temporary build directory (once per process)."""
    import torch

    from fpgaprint.compiler.build import build_model
    from fpgaprint.core.grid import InputGrid

    out = ROOT / f"build-{name}"
    result = build_model(f"zoo:{name}", "Pynq-Z1", out)
    fe = result.frontend
    grid = InputGrid(8)
    x = fe.data.x_test[:SELFTEST_COUNT]
    inputs = grid.to_int(x).reshape((-1, *fe.input_shape))
    model = fe.float_model if fe.float_model is not None else fe.torch_model
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(grid.to_float(inputs)))
    return Compiled(name, out, result.golden_path, result.report["io"], inputs,
                    logits.argmax(1).numpy().astype(np.int64))


@functools.cache
def keypair() -> tuple[Path, Path]:
    from fpgaprint.core.keys import generate_keypair

    return generate_keypair(ROOT / "keys")


META = {"board": "Pynq-Z1", "part": "xc7z020clg400-1", "platform": "zynq", "clock_ns": 10.0}


def make_package(name: str, out: Path, threshold: float = 0.8,
                 golden_from: Path | None = None, signed: bool = True,
                 hw: dict[str, bytes] | None = None) -> Path:
    """A finalized package of zoo:NAME in `out` (golden model from `golden_from` if given;
    `hw` files, e.g. {"top.bit": ..., "settings.json": ...}, go to hw/)."""
    from fpgaprint.compiler.package import finalize_package, write_selftest
    from fpgaprint.core.golden import GoldenModel

    c = compiled(name)
    golden = golden_from or c.golden
    (out / "model").mkdir(parents=True, exist_ok=True)
    shutil.copy2(golden, out / "model" / "golden.onnx")
    raw, _, labels = GoldenModel(golden).run(c.inputs)
    write_selftest(out, c.inputs, raw, labels, c.expected,
                   {"checks": ["exact", "fingerprint"], "fingerprint_threshold": threshold})
    meta = {"name": name, **META, "io": c.io}
    for rel, data in (hw or {}).items():
        (out / "hw").mkdir(exist_ok=True)
        (out / "hw" / rel).write_bytes(data)
        if rel.endswith(".bit"):
            meta["bitstream"] = {"path": f"hw/{rel}"}
    finalize_package(out, meta,
                     key_path=keypair()[0] if signed else None, allow_unsigned=not signed)
    return out


@functools.cache
def digits_package() -> Path:
    """A signed digits-mlp package shared read-only by the tests of one process."""
    return make_package("digits-mlp", ROOT / "pkg-digits")
