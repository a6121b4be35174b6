"""On-chip self-test (BIST) benchmark. Prints figures only.

    .venv/bin/python bench/bist.py [--work DIR] [--models digits-mlp,tfc-w2a2] [--vectors 100]

For each zoo model (built with impl_style auto, all-RTL, stitched) and 100 vectors (the
model's test data on its input grid): the BIST's cycles as the simulated controller counts
them and the time at the board's clock, ROM bits and BRAM_18K for `exact` and `signature`
(the BRAM beyond the input vectors' own ROM), the resource estimate, and the Verilator
seconds (compile of the BIST top with the stitched design, empty cache; then the simulated
power-on self-test). Each mode runs the build's own BIST step (`compiler.bist.stage.run`); the
result is the package's onchip check of the simulated registers.

Goal: 100 vectors in under 1 ms at the board clock; `signature` mode at most 2 BRAM_18K beyond
the vectors.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
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

    from fpgaprint.compiler.bist import stage
    from fpgaprint.compiler.bist.generate import bram18
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BistOptions, BuildConfig
    from fpgaprint.compiler.rtlsim.errors import BistError
    from fpgaprint.core import bist as B
    from fpgaprint.core.boards import get_board
    from fpgaprint.core.golden import GoldenModel
    from fpgaprint.core.grid import InputGrid
    from fpgaprint.core.selftest import onchip_check

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
        golden = GoldenModel(res.golden_path)
        raw = golden.run(x)[0]
        for mode in B.MODES:
            # the build's own step, on a copy of its report (it adds the BIST's resources)
            report = copy.deepcopy(res.report)
            config = BuildConfig(equivalence_samples=16, bist=BistOptions(mode=mode))
            try:
                spec, regs = stage.run(out, board, config, report, x, raw,
                                       lambda *a, **k: None, golden)
            except BistError:  # the registers are in the report: the row shows the result
                spec, regs = B.load_spec(out / B.BIST_JSON), report["bist"]["registers"]
            b = report["bist"]
            if regs is None:
                console.print(f"{name} {mode}: {b.get('note')}")
                continue
            rom, est = spec.raw["rom_bits"], spec.raw["resources"]
            vec_bram = bram18(spec.in_width, spec.vectors * spec.in_words)
            predicted = b["predicted_cycles"]
            t.add_row(name, mode, onchip_check(regs, spec).status, f"{regs['cycles']:,}",
                      "-" if predicted is None else f"{predicted:,}",
                      f"{regs['cycles'] * board.clock_ns / 1e6:.3f} ms",
                      f"{rom['inputs']:,} + {rom['expected']:,}", str(est["BRAM_18K"]),
                      str(est["BRAM_18K"] - vec_bram), f"{est['LUT']} / {est['FF']}",
                      f"{b['compile_seconds']:.1f}", f"{b['sim_seconds']:.2f}")
    console.print(t)
    console.print("sim s: instance start-up, the power-on self-test and the register reads "
                  "over AXI-lite; compile s: Verilator on an empty cache (BIST top with the "
                  "stitched design). BRAM_18K: estimate (18K aspect ratios; ROMs of at most "
                  "1 kbit in LUTs); 'beyond vectors' excludes the input ROM.")


if __name__ == "__main__":
    main()
