"""The on-chip self-test in the build (called while the package is written, once its vectors
and golden outputs are known).

* Generates `hw/rtl/bist/` (`generate`) in `bist.mode` (exact | signature).
* Adds the ROMs' and controller's estimate to the build's resource estimate and checks the
  board fit again with it.
* With a stitched RTL accelerator: builds the BIST top with it in Verilator, runs the
  power-on self-test and requires PASS, the package's expected signature and the predicted
  cycle count (latency + (N - 1) x measured initiation interval of the stitched design); any
  difference is a BistError (exit 1). `reports/build.json` `bist` records both.
* Without one (HLS layers): the RTL is generated all the same but not simulated here; the
  controller itself is tested against a stand-in accelerator (tests), never a hardware result.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fpgaprint.compiler.rtlsim.errors import BistError
from fpgaprint.core import bist as B
from fpgaprint.core.errors import InputError
from fpgaprint.core.golden import GoldenModel

RTL_DIR = Path("hw/rtl")


def predicted_cycles(stitched: dict, n: int) -> int:
    """The self-test's cycles for `n` vectors through the stitched design (its build report
    section `rtl.stitched`): latency + (n - 1) x the measured initiation interval."""
    return round(stitched["latency_cycles"] + (n - 1) * stitched["ii_cycles"])


def cycle_tolerance(predicted: int) -> int:
    """Allowed |measured - predicted| cycles."""
    return max(16, predicted // 100)


def check_fit(brd, config, report: dict, log, what: str) -> None:
    """The board fit of the report's estimate `estimates.resources_total`, for the build (the
    accelerator) and for this step (with the BIST's ROMs and controller): findings in
    `report["resource_check"]` and the log; InputError ("`what` does not fit") on a fail."""
    from fpgaprint.core.boards import check_resources

    findings = check_resources(brd, report.get("estimates", {}).get("resources_total", {}),
                               config.resource_warn)
    report["resource_check"] = [{"level": lv, "message": m} for lv, m in findings]
    for lv, m in findings:
        log(f"[{'red' if lv == 'fail' else 'yellow'}]{lv}: {m}[/]", show=True)
    if any(lv == "fail" for lv, _ in findings):
        raise InputError(f"{what} does not fit {brd.name}: " +
                         "; ".join(m for lv, m in findings if lv == "fail"))


def run(out: Path, brd, config, report: dict, inputs: np.ndarray, raw: np.ndarray,
        log, golden: GoldenModel | Path) -> tuple[B.BistSpec, dict | None]:
    """Generate, estimate, fit-check and (stitched designs) simulate the BIST for the
    package's vectors `inputs` (the input of the golden model `golden`, loaded or its path)
    and their golden raw outputs; returns its description and the simulated registers (None
    when not simulated)."""
    from fpgaprint.compiler.bist.generate import generate
    from fpgaprint.compiler.rtlsim.design import DESIGN_JSON, StitchedDesign

    mode = config.bist.mode
    rtl = out / RTL_DIR
    n = len(inputs)
    stitched = (rtl / DESIGN_JSON).is_file()
    st = (report.get("rtl") or {}).get("stitched") or {}
    if stitched:
        design = StitchedDesign(rtl)
        io = design.io
        predicted = predicted_cycles(st, n) if st.get("built") else None
    else:
        from qonnx.core.modelwrapper import ModelWrapper

        from fpgaprint.core.streams import DriverIO, io_shape_dict

        try:
            io = DriverIO.from_io_shape_dict(
                io_shape_dict(ModelWrapper(str(out / report["steps"][-1]["model"]))))
        except InputError as e:  # no single-stream accelerator graph: nothing to wrap
            report["bist"] = {"mode": mode, "generated": False, "simulated": False,
                              "note": f"no on-chip self-test generated: {e}"}
            log(f"on-chip self-test: {report['bist']['note']}")
            return None, None
        predicted = None
    if not isinstance(golden, GoldenModel):
        golden = GoldenModel(golden)
    acc_in = golden.accelerator_inputs(inputs)
    spec = generate(rtl, io, acc_in, raw, mode, stitched=stitched, predicted_cycles=predicted,
                    latency_cycles=st.get("latency_cycles") if stitched else None)
    clock_ns = float(config.clock_ns or brd.clock_ns)
    from fpgaprint.compiler.bist.generate import estimate

    words_in, words_out = n * spec.in_words, n * spec.out_words
    modes = {m: estimate(spec.in_width, spec.out_width, words_in, words_out, m == "exact")
             for m in B.MODES}
    section = {"mode": mode, "generated": True, "vectors": n,
               "path": (RTL_DIR / "bist").as_posix(), "modes": modes,
               "rom_bits": spec.raw["rom_bits"], "resources": spec.raw["resources"],
               "signature": f"0x{spec.signature:08x}", "rom_crc": f"0x{spec.rom_crc:08x}",
               "predicted_cycles": predicted, "clock_ns": clock_ns, "simulated": False}
    report["bist"] = section
    est = report.setdefault("estimates", {})
    acc = dict(est.get("resources_total") or {})
    est.setdefault("resources_accelerator", acc)
    est["resources_total"] = {k: acc.get(k, 0) + spec.raw["resources"].get(k, 0)
                              for k in sorted(set(acc) | set(spec.raw["resources"]))}
    check_fit(brd, config, report, log, "the design with its on-chip self-test")
    if not stitched:
        section["note"] = ("not simulated here: the accelerator has HLS layers (needs Vitis "
                           "HLS); RTL generated, controller tested against a stand-in only")
        log(f"on-chip self-test ({mode}): {n} vectors, generated; {section['note']}")
        return spec, None
    from fpgaprint.compiler.bist.sim import BistSim, build_bist

    t0 = time.perf_counter()
    build = build_bist(design, log_dir=out / "finn")
    t1 = time.perf_counter()
    with BistSim(design, build=build) as sim:
        regs = sim.registers()
    status = B.decode_status(regs["status"])
    section.update(simulated=True, measured_cycles=regs["cycles"],
                   passed=status["pass"], signature_measured=f"0x{regs['signature']:08x}",
                   registers=regs, compile_seconds=round(t1 - t0, 3), cached=build.cached,
                   sim_seconds=round(time.perf_counter() - t1, 3),
                   time_us=round(regs["cycles"] * clock_ns / 1000, 2))
    want = B.expected_record(spec, regs["cycles"])
    if regs != want:
        bad = ", ".join(f"{k} 0x{regs[k]:x} (expected 0x{want[k]:x})" for k in want
                        if regs[k] != want[k])
        raise BistError(f"on-chip self-test of the healthy design does not PASS: {bad}")
    if predicted is not None and abs(regs["cycles"] - predicted) > cycle_tolerance(predicted):
        raise BistError(f"on-chip self-test took {regs['cycles']} cycles, predicted {predicted} "
                        f"(latency + {n - 1} x initiation interval of the stitched design)")
    log(f"on-chip self-test ({mode}): PASS in Verilator, {n} vectors, signature "
        f"0x{regs['signature']:08x}, {regs['cycles']} cycles (predicted {predicted}) = "
        f"{section['time_us']} us at {1000 / clock_ns:g} MHz")
    return spec, regs


def summary(report: dict, console) -> None:
    """exact vs signature: ROM bits against detection detail; the simulated result."""
    b = report.get("bist")
    if not b:
        return
    if not b.get("generated"):
        console.print(f"on-chip self-test: {b.get('note')}")
        return
    detail = {"exact": "every output word: failing vectors counted, the first one named",
              "signature": "one CRC-32 of all outputs: pass or fail only"}
    for m, e in b["modes"].items():
        rom, res = e["rom_bits"], e["resources"]
        console.print(f"on-chip self-test {m}{' (built)' if m == b['mode'] else ''}: ROM "
                      f"{rom['total']:,} bits (inputs {rom['inputs']:,}, expected outputs "
                      f"{rom['expected']:,}), BRAM_18K {res['BRAM_18K']}, LUT {res['LUT']}, "
                      f"FF {res['FF']}; {detail[m]}")
    if b.get("simulated"):
        console.print(f"on-chip self-test in Verilator: {'PASS' if b['passed'] else 'FAIL'}, "
                      f"signature {b['signature_measured']}, {b['measured_cycles']:,} cycles "
                      f"(predicted {b['predicted_cycles']:,}) = {b['time_us']} us at the "
                      f"board clock")
    elif b.get("note"):
        console.print(f"on-chip self-test: {b['note']}")
