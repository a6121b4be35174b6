"""RTL co-simulation as a build stage (entry point `run`, called once the layers' code is
generated) and its part of the terminal summary (`summary`).

* Every layer is listed with its implementation (`impl_style`); HLS layers are named "not
  simulated here: needs Vitis HLS".
* Layers of a design HLS layers split: each run of RTL layers is stitched as a segment, fed
  and checked with the golden model's tensors, the rest run FINN+'s node-level rtlsim on
  Verilator (`segments.check`, `layers.check_layers`): here when the golden model runs
  batched (MLPs: a second or two), else on the stage runner's worker while the build goes
  on; `drain` reports it in order. The layers of a stitched design are covered by its
  simulation; they run one by one only when it differs from the golden model, to name the
  layer (config `rtlsim_node_by_node: all` runs every layer one by one, no segments).
* Stitched: an all-RTL design gets FINN+'s FIFOs and width converters and one Verilog top
  (`stitch`), written to `OUT/hw/rtl/` (a package folder), built with Verilator and run on the
  same vectors; its raw outputs must equal the golden model's, and its measured cycles per
  frame (latency, initiation interval) are reported next to FINN+'s estimates.

A difference is an RtlMismatchError (exit 1) naming the layer or memory image, the vector and
the first differing element; a design that does not build or stalls is a SimulationError
(exit 2) naming it, its full log appended to build.log.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np

from fpgaprint.compiler.rtlsim.errors import RtlMismatchError, SimulationError
from fpgaprint.compiler.rtlsim.impl import layer_table, require_rtl
from fpgaprint.compiler.rtlsim.sim import Stalls
from fpgaprint.compiler.rtlsim.stitch import estimates

RTL_DIR = Path("hw/rtl")
FIFO_JSON = Path("reports/fifo_depths.json")  # FINN+'s fifo_config_file format
STALLS = Stalls(seed=1, input=0.25, output=0.25)  # the backpressure run of every build


def run(out: Path, board, config, log, report: dict, eq, stages, model_path: Path,
        golden_path: Path, x_int: np.ndarray) -> None:
    """Queue the node-level runs on `stages`, build and check the stitched design here."""
    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaprint.compiler.equivalence import StageResult
    from fpgaprint.compiler.rtlsim import segments
    from fpgaprint.compiler.rtlsim.layers import check_layers
    from fpgaprint.compiler.rtlsim.xsi import ensure_available

    style = getattr(config, "impl_style", "auto")
    rtl_dir = out / RTL_DIR
    if rtl_dir.exists():
        shutil.rmtree(rtl_dir)  # never ship the RTL of an earlier build
    model = ModelWrapper(str(model_path))
    golden_of = _golden_layers(golden_path)
    rows = layer_table(model)
    for r in rows:
        node = model.get_node_from_name(r["layer"])
        r["golden_layer"] = golden_of.get(node.output[0], "")
    section = {"impl_style": style, "layers": rows, "node_by_node": None, "segments": None,
               "stitched": None}
    report["rtl"] = section
    require_rtl(rows, style, board.part)
    if not any(r["impl"] == "rtl" for r in rows):
        return
    first = next(r["layer"] for r in rows if r["impl"] == "rtl")
    try:
        ensure_available()
    except SimulationError as e:
        raise SimulationError(f"{first}: {e}") from None
    results: list = []

    def layers_done(result, error) -> None:
        if error is not None:
            section["node_by_node"] = _failed("rtlsim_layers", error)
            if getattr(error, "segments", None) is not None:
                section["segments"] = error.segments
                _log_segment_failure(log, error.segments)
            _log_failure(log, error)
            raise error
        by_name = {r["layer"]: r for r in result["layers"]}
        for r in rows:
            if r["layer"] in by_name:
                sim = by_name[r["layer"]]
                r.update(simulated=True, cycles_rtlsim=sim["cycles"],
                         reference=sim["reference"], seconds=sim["seconds"],
                         compile_seconds=sim["compile_seconds"])
        stitched = [s for s in result.get("segments") or [] if s.get("ok")]
        segment_of = {layer: s["name"] for s in stitched for layer in s["layers"]}
        reordered = {s["layers"][-1] for s in stitched if s.get("reference") == "reordered"}
        for r in rows:
            if r["layer"] in segment_of:
                r.update(simulated=True, covered_by=segment_of[r["layer"]])
            if r["layer"] in reordered:
                r["reference"] = "reordered"
        if "segments" in result:
            section["segments"] = result["segments"]
        section["node_by_node"] = {"ok": True, "vectors": result["vectors"],
                                   "layers": len(result["layers"]),
                                   "seconds": result["seconds"],
                                   "compile_seconds": result["compile_seconds"]}
        how = f" ({len(segment_of)} in {len(stitched)} stitched segments)" if stitched else ""
        log(f"rtlsim: {len(result['layers']) + len(segment_of)} RTL layers{how} bit-exact with "
            f"the golden model on {result['vectors']} vectors ({result['seconds']:.1f} s)")
        eq.results.append(StageResult("rtlsim_layers", True, 0.0, 0, 0, True,
                                      result["seconds"]))
        eq.results.extend(results)

    # like the other stages: graphs the golden model runs batched are quick enough to run
    # here; the others (convolutions, one vector at a time) go to the worker
    from fpgaprint.core.golden import GoldenModel

    def queue_layers(fn, fn_args: tuple) -> None:
        stages.task("rtlsim_layers", fn, fn_args, layers_done,
                    inline=GoldenModel(golden_path).batchable)

    args = (str(model_path), str(golden_path), x_int, str(out / "finn"))
    every = getattr(config, "rtlsim_node_by_node", "uncovered") == "all"
    covered = not every and all(r["impl"] == "rtl" for r in rows)
    if not covered:  # a mixed design: stitched segments of RTL layers, unless `all`
        if every:
            queue_layers(check_layers, args)
        else:
            queue_layers(segments.check, (*args, board.part, config.clock_ns or board.clock_ns))
    t0 = time.perf_counter()
    try:
        section["stitched"] = _stitched(out, board, config, log, model, golden_path, x_int)
    except (SimulationError, RtlMismatchError) as e:
        section["stitched"] = _failed("rtlsim_stitched", e)
        _log_failure(log, e)
        if covered and type(e) is RtlMismatchError:
            _localize(check_layers, args, layers_done, log)
        raise
    add_plumbing_resources(report)
    st = section["stitched"]
    if covered and not st.get("built"):  # all RTL but not stitchable: every layer alone
        covered = False
        queue_layers(check_layers, args)
    if st.get("built"):
        from fpgaprint.compiler.rtlsim.fifosizing import finn_config_file
        from fpgaprint.core.atomic import write_json

        write_json(out / FIFO_JSON, finn_config_file(st["fifos"]["fifos"]))
        results.append(StageResult("rtlsim_stitched", True, 0.0, 0, 0, True,
                                   round(time.perf_counter() - t0, 3)))
    if covered:
        for r in rows:
            r.update(simulated=True, covered_by=st["top"])
        section["node_by_node"] = {"ok": True, "covered_by": st["top"], "vectors": 0,
                                   "layers": 0, "seconds": 0.0, "compile_seconds": 0.0}
        eq.results.extend(results)


def _localize(check_layers, args: tuple, layers_done, log) -> None:
    """After the stitched design differed: simulate its layers one by one, so that the first
    layer that differs is named (its error raised); returns when every layer is exact."""
    log("rtlsim: the stitched design differs from the golden model; simulating its layers "
        "one by one to find the layer", show=True)
    try:
        result = check_layers(*args)
    except (SimulationError, RtlMismatchError) as e:
        layers_done(None, e)
    layers_done(result, None)


def _log_segment_failure(log, segs: list[dict]) -> None:
    for s in segs:
        if s.get("ok") is False:
            log(f"rtlsim: {s['error']}; its layers simulated one by one to find the layer",
                show=True)


def _golden_layers(golden_path: Path) -> dict[str, str]:
    """Output tensor -> golden HW layer name."""
    from fpgaprint.core.golden import GoldenModel

    g = GoldenModel(golden_path)
    return {n.output[0]: n.name for n in g.model.graph.node}


def _failed(stage: str, error: Exception) -> dict:
    """The report entry of a failed RTL stage (build.failed.json)."""
    return {"ok": False, "stage": stage, "error": str(error),
            "exit_code": getattr(error, "exit_code", None)}


def _log_failure(log, error: Exception) -> None:
    path = getattr(error, "log", None)
    if path and Path(path).is_file():
        log(f"{error}\n--- full log ({path}) ---\n{Path(path).read_text(errors='replace')}")


def _stitched(out: Path, board, config, log, model, golden_path: Path, x_int) -> dict:
    """Size the FIFOs, build, check (at full rate and with random stalls) and measure the
    stitched design; {"built": False, "reason"} when the design cannot be stitched.

    `x_int` are the golden model's inputs; the design streams them as its first layer reads
    them, after the host-side head of the golden graph (a convolution's NCHW -> NHWC
    Transpose)."""
    from fpgaprint.compiler.rtlsim import fifosizing, stitch
    from fpgaprint.compiler.rtlsim.design import StitchedDesign
    from fpgaprint.core.golden import GoldenModel

    clock_ns = config.clock_ns or board.clock_ns
    golden = GoldenModel(golden_path)
    want = golden.run(x_int)[0]
    x_acc = golden.accelerator_inputs(x_int)
    t0 = time.perf_counter()
    hook, source = fifosizing.hook(config, board)
    sizing = None
    try:
        if hook is None:  # sizing by simulation
            work = out / "finn" / "fifosizing" / "rtl"
            sizing = fifosizing.measure(model, board.part, clock_ns, golden, x_acc, work, log)
            sizing["seconds"] = round(time.perf_counter() - t0, 3)
            depths = fifosizing.sized_depths(sizing["graph"], sizing["peaks"])
            hook = fifosizing.setter(depths, fifosizing.large_fifo_style(config, board))
        with log.capture():
            plumbed = stitch.plumb(model, board.part, clock_ns, hook)
            est = estimates(plumbed)
            stitch.export(plumbed, out / RTL_DIR, golden, est)
    except stitch.NotStitchable as e:
        log(f"rtlsim: no stitched design: {e}")
        shutil.rmtree(out / RTL_DIR, ignore_errors=True)
        return {"built": False, "reason": str(e)}
    fifos = _fifo_report(plumbed, board, config, source, sizing)
    design = StitchedDesign(out / RTL_DIR)
    t1 = time.perf_counter()
    try:
        build = design.build(log_dir=out / "finn")
    except SimulationError as e:
        raise SimulationError(f"{_culprit(str(e), design)}{e}", e.log) from None
    compile_s = time.perf_counter() - t1
    with design.simulator(build=build) as sim:
        t2 = time.perf_counter()
        raw, cycles = sim.run(x_acc)
        sim_s = time.perf_counter() - t2
        check_stitched(design.top, raw, want)
        perf = sim.measure(x_acc)
        sim.reset()
        stalled, stalled_cycles = sim.run(x_acc, STALLS)
        check_stitched(design.top, stalled, want, f" with random stalls (seed {STALLS.seed})")
    clock_mhz = 1000.0 / clock_ns
    res = {
        "built": True, "ok": True, "top": design.top, "path": RTL_DIR.as_posix(),
        "layers": len(design.raw["layers"]), "vectors": int(len(x_int)),
        "latency_cycles": perf["latency_cycles"], "ii_cycles": perf["ii_cycles"],
        "estimate": est, "compile_seconds": round(compile_s, 3), "cached": build.cached,
        "sim_seconds": round(sim_s, 4), "cycles_per_second": round(cycles / sim_s) if sim_s
        else None,
        "measured_fps": round(clock_mhz * 1e6 / perf["ii_cycles"]) if perf["ii_cycles"]
        else None,
        "export_seconds": round(t1 - t0 - (sizing["seconds"] if sizing else 0.0), 3),
        "fifo_sizing_seconds": sizing["seconds"] if sizing else None,
        "backpressure": {"ok": True, "seed": STALLS.seed, "input_stall": STALLS.input,
                         "output_stall": STALLS.output, "vectors": int(len(x_int)),
                         "cycles": int(stalled_cycles)},
        "fifos": fifos,
    }
    if sizing is not None:
        fifos["deep_ii_cycles"] = sizing["ii_cycles"]
        first = fifosizing.input_fifo(plumbed)
        fifos["filled"] = sorted(n for n, peak in sizing["peaks"].items()
                                 if n != first and peak >= sizing["sizing_depth"])
        if fifos["filled"]:
            log(f"[yellow]rtlsim: FIFO sizing: {', '.join(fifos['filled'])} filled its "
                f"sizing depth of {sizing['sizing_depth']}; its depth is a lower bound[/]",
                show=True)
        if perf["ii_cycles"] > sizing["ii_cycles"] * 1.01 + 1:
            log(f"[yellow]rtlsim: the sized FIFOs run at an interval of {perf['ii_cycles']} "
                f"cycles, the deep ones at {sizing['ii_cycles']}[/]", show=True)
    log(f"rtlsim: stitched design {design.top} bit-exact on {len(x_int)} vectors; latency "
        f"{res['latency_cycles']} cycles (FINN+ estimate {est['latency_cycles']}), initiation "
        f"interval {res['ii_cycles']} (estimate {est['ii_cycles']})")
    return res


def _fifo_report(plumbed, board, config, source: str, sizing: dict | None) -> dict:
    """The FIFOs as built: how their depths were set, each one's depth, width, memory,
    peak (when sized) and FINN+'s resource estimate; the plumbing's resources by node."""
    from functools import partial

    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    from fpgaprint.compiler.rtlsim.stitch import fifo_table

    res = plumbed.analysis(partial(res_estimation, fpgapart=board.part))
    table = fifo_table(plumbed)
    for f in table:
        f["resources"] = _resources(res.get(f["name"], {}))
        if sizing is not None:
            f["peak"] = int(sizing["peaks"].get(f["name"], 0))
    inserted = {n.name for n in plumbed.graph.node
                if n.op_type.startswith(("StreamingFIFO", "StreamingDataWidthConverter"))}
    from fpgaprint.compiler.rtlsim.fifosizing import large_fifo_style

    return {"depths_from": source, "large_fifo_mem_style": large_fifo_style(config, board),
            "sizing_depth": sizing["sizing_depth"] if sizing else None, "fifos": table,
            "plumbing_resources": {k: _resources(v) for k, v in res.items() if k in inserted}}


def _resources(res: dict) -> dict[str, float]:
    """FINN+'s resource counts of a node (its efficiency ratios left out)."""
    return {k: float(v) for k, v in res.items()
            if isinstance(v, (int, float)) and not k.endswith("_efficiency")}


def add_plumbing_resources(report: dict) -> None:
    """FINN+'s estimates of the inserted FIFOs and width converters join the build's
    estimate (`estimates.resources_per_layer` and `resources_total`, the board fit check's
    input)."""
    fifos = ((report.get("rtl") or {}).get("stitched") or {}).get("fifos")
    est = report.get("estimates")
    if not fifos or not isinstance(est, dict):
        return
    per = est.setdefault("resources_per_layer", {})
    total = est.setdefault("resources_total", {})
    for name, res in fifos["plumbing_resources"].items():
        if name in per:
            continue
        per[name] = res
        for k, v in res.items():
            total[k] = total.get(k, 0.0) + v


def _culprit(message: str, design) -> str:
    """"LAYER: " for the layer whose source the first compiler error names, else ""."""
    for layer in design.raw["layers"]:
        if re.search(rf"layers/{re.escape(layer['name'])}(_\w+)?\.s?v\b", message):
            return f"{layer['name']}: "
    return ""


def check_stitched(top: str, raw: np.ndarray, want: np.ndarray, how: str = "") -> None:
    """The stitched design's raw outputs equal the golden model's, or name the first
    difference."""
    from fpgaprint.compiler.rtlsim.layers import first_difference

    diff = first_difference(raw.reshape(want.shape), want)
    if diff is not None:
        v, idx = diff
        got = raw.reshape(want.shape)[(v, *idx)]
        raise RtlMismatchError(
            f"stitched RTL design {top}{how} differs from the golden model on equivalence "
            f"vector {v}: raw output [{', '.join(map(str, idx))}] is {got}, the golden model "
            f"gives {want[(v, *idx)]}")


def summary(report: dict, console) -> None:
    """Layers, their implementation and simulation; the stitched design's cycles per frame."""
    from rich.table import Table

    rtl = report.get("rtl")
    if not rtl or not rtl.get("layers"):
        return
    t = Table(title=f"layers (impl_style {rtl['impl_style']})", box=None)
    for c in ("layer", "golden", "implementation", "simulated"):
        t.add_column(c)
    for r in rtl["layers"]:
        sim = (r.get("note") or "not simulated") if not r.get("simulated") else \
            f"rtlsim bit-exact in {r['covered_by']}" if r.get("covered_by") else \
            "rtlsim bit-exact" if r.get("reference") != "reordered" else \
            "rtlsim bit-exact (output order by design)"
        t.add_row(r["layer"], r.get("golden_layer", ""), r["impl"].upper(), sim)
    console.print(t)
    segs = [s for s in rtl.get("segments") or [] if s.get("ok")]
    if segs:
        console.print("stitched RTL segments (RTL layers between HLS layers), bit-exact: " +
                      ", ".join(f"{s['name']} ({len(s['layers'])} layers, {s['cycles']} cycles "
                                f"for {s['vectors']} vectors)" for s in segs))
    st = rtl.get("stitched") or {}
    if st.get("built"):
        e = st["estimate"]
        console.print(f"stitched RTL ({st['path']}, {st['layers']} layers incl. FIFOs and width "
                      f"converters): bit-exact on {st['vectors']} vectors; cycles per frame "
                      f"measured latency {st['latency_cycles']} / interval {st['ii_cycles']}, "
                      f"FINN+ estimate {e['latency_cycles']} / {e['ii_cycles']}; same outputs "
                      f"with random stalls")
        f = st.get("fifos") or {}
        if f.get("fifos"):
            how = "sized by simulation" if f["depths_from"] == "distributed_sim" else \
                f["depths_from"]
            console.print(f"FIFO depths ({how}): " + ", ".join(
                f"{x['name'].removeprefix('StreamingFIFO_rtl_')}:{x['depth']}"
                for x in f["fifos"]))
    elif st.get("reason"):
        console.print(f"stitched RTL: not built ({st['reason']})")
