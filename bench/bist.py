"""On-chip self-test (BIST) benchmark. Prints figures only.

    .venv/bin/python bench/bist.py [--work DIR] [--models digits-mlp,tfc-w2a2] [--vectors 100]

For each zoo model (built with impl_style auto, all-RTL, stitched) and 100 vectors (the
model's test data on its input grid): the BIST's cycles as the simulated controller counts
them and the time at the board's clock, ROM bits and BRAM_18K for `exact` and `signature`
(the BRAM beyond the input vectors' own ROM), the resource estimate, and the Verilator
seconds (compile of the BIST top with the stitched design, empty cache; then the simulated
power-on self-test).

Goal: 100 vectors in under 1 ms at the board clock; `signature` mode at most 2 BRAM_18K beyond
the vectors.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="build directory (default: temp)")
    ap.add_argument("--models", default="digits-mlp,tfc-w2a2")
    ap.add_argument("--vectors", type=int, default=100)
    args = ap.parse_args()
    console = Console(width=180)
    work = args.work or Path(tempfile.mkdtemp(prefix="fpgaprint-bench-bist-"))
    os.environ.setdefault("FINN_BUILD_DIR", str(work / "finn"))
    os.environ["FPGAPRINT_VERILATOR_CACHE"] = str(work / "verilator-cache")  # empty cache

    from fpgaprint.compiler.bist.generate import bram18, generate
    from fpgaprint.compiler.bist.sim import BistSim, build_bist
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.compiler.rtlsim.design import StitchedDesign
    from fpgaprint.core import bist as B
    from fpgaprint.core.boards import get_board
    from fpgaprint.core.golden import GoldenModel
    from fpgaprint.core.grid import InputGrid

    board = get_board("Pynq-Z1")
    t = Table(title=f"on-chip self-test, {args.vectors} vectors, {board.name} "
                    f"({1000 / board.clock_ns:g} MHz)", box=None)
    for c in ("model", "mode", "result", "cycles", "predicted", "time at clock",
              "ROM bits (in + exp)", "BRAM_18K", "beyond vectors", "LUT / FF est.",
              "compile s", "sim s"):
        t.add_column(c, justify="right" if c not in ("model", "mode", "result") else "left")
    for name in args.models.split(","):
        out = work / name
        console.print(f"building zoo:{name} …")
        res = build_model(f"zoo:{name}", board.name, out, BuildConfig(equivalence_samples=16),
                          allow_unsigned=True)
        fe = res.frontend
        x = InputGrid(8).to_int(fe.data.x_test[:args.vectors]).reshape((-1, *fe.input_shape))
        raw = GoldenModel(res.golden_path).run(x)[0]
        st = res.report["rtl"]["stitched"]
        predicted = round(st["latency_cycles"] + (len(x) - 1) * st["ii_cycles"])
        for mode in ("exact", "signature"):
            design = StitchedDesign(out / "hw" / "rtl")
            spec = generate(design.dir, design.io, x, raw, mode, predicted_cycles=predicted,
                            latency_cycles=st["latency_cycles"])
            t0 = time.perf_counter()
            build = build_bist(design)
            t1 = time.perf_counter()
            with BistSim(design, build=build) as sim:
                regs = sim.registers()
            t2 = time.perf_counter()
            rom, est = spec.raw["rom_bits"], spec.raw["resources"]
            vec_bram = bram18(spec.in_width, spec.vectors * spec.in_words)
            ok = regs == B.expected_record(spec, regs["cycles"])
            t.add_row(name, mode, "PASS" if ok else "FAIL", f"{regs['cycles']:,}",
                      f"{predicted:,}", f"{regs['cycles'] * board.clock_ns / 1e6:.3f} ms",
                      f"{rom['inputs']:,} + {rom['expected']:,}", str(est["BRAM_18K"]),
                      str(est["BRAM_18K"] - vec_bram), f"{est['LUT']} / {est['FF']}",
                      f"{t1 - t0:.1f}", f"{t2 - t1:.2f}")
    console.print(t)
    console.print("sim s: instance start-up, the power-on self-test and the register reads "
                  "over AXI-lite; compile s: Verilator on an empty cache (BIST top with the "
                  "stitched design). BRAM_18K: estimate (18K aspect ratios; ROMs of at most "
                  "1 kbit in LUTs); 'beyond vectors' excludes the input ROM.")


if __name__ == "__main__":
    main()
