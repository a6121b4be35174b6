"""Vivado-only steps (IP generation, stitched IP, bitfile, PYNQ driver) through FINN+,
gated on the vendor tools: without them the build stops after codegen and says so."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

SUPPORTED = "AMD Vivado + Vitis HLS 2022.2 or 2024.2 and later (vitis-run)"
TOOLS = ("vivado", "vitis_hls")
RTL_DIR = Path("hw/rtl")
# where a shell build places a node (FINN+'s Floorplan and partitioning), not what it computes
PLACEMENT_ATTRS = ("partition_id", "slr", "mem_port", "device_id")


def missing_tools() -> list[str]:
    """The vendor tools FINN+ needs that are absent (PATH and XILINX_VIVADO)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if "vitis_hls" in missing and shutil.which("vitis-run"):
        missing.remove("vitis_hls")
    if not os.environ.get("XILINX_VIVADO"):
        missing.append("XILINX_VIVADO")
    return missing


def run_or_explain(out: Path, board, config, log) -> dict:
    """Run FINN+'s hardware steps when the tools exist; otherwise one line on what is missing."""
    missing = missing_tools()
    produced = ["model/golden.onnx", "model/steps/*.onnx", "finn/ (RTL/HLS sources)",
                "reports/build.json"]
    if missing:
        msg = (f"Vivado not available ({', '.join(missing)} missing): stopped after codegen. "
               f"FINN+ needs {SUPPORTED} for IP generation, stitched IP and the bitfile. "
               f"Produced: {', '.join(produced)}.")
        log(f"[yellow]{msg}[/]", show=True)
        return {"ran": False, "missing": missing, "message": msg}
    return _run_hardware_steps(out, board, config, log)


def _run_hardware_steps(out: Path, board, config, log) -> dict:
    """ipgen → FIFOs → stitched IP → bitfile + hwh + driver, via FINN+'s own build steps.

    A design that was stitched and simulated (`hw/rtl/design.json`) is what Vivado gets:
    FINN+'s step_set_fifo_depths runs with `auto_fifo_depths: false` and the simulated
    depths, and the graph it returns must be the simulated one (`check_simulated`) before
    FINN+'s stitched-IP step sees it. A generated on-chip self-test (`hw/rtl/bist/`) goes
    around the accelerator in a Zynq bitstream (`compiler/bist/shell.py`), its AXI-lite
    slave at the address the hardware handoff records."""
    from finn.builder import build_dataflow_config as bc
    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaprint.compiler.bist import shell
    from fpgaprint.compiler.config import finn_config
    from fpgaprint.compiler.rtlsim.design import DESIGN_JSON
    from fpgaprint.compiler.rtlsim.fifosizing import finn_config_file
    from fpgaprint.compiler.steps import finn_steps
    from fpgaprint.core import bist as B
    from fpgaprint.core.atomic import write_json

    bs = finn_steps()
    work = out / "finn" / "vivado"
    work.mkdir(parents=True, exist_ok=True)
    steps = sorted((out / "model" / "steps").glob("*_codegen.onnx"))
    model = ModelWrapper(str(steps[-1]))
    rtl = out / RTL_DIR
    fifo = {}
    if (rtl / DESIGN_JSON).is_file():
        fifo_file = work / "fifo_config.json"
        design = json.loads((rtl / DESIGN_JSON).read_text())
        write_json(fifo_file, finn_config_file(design["fifos"]))
        fifo = {"auto_fifo_depths": False, "fifo_config_file": fifo_file}
    cfg = finn_config(config, board, work,
                      generate_outputs=[bc.DataflowOutputType.STITCHED_IP,
                                        bc.DataflowOutputType.BITFILE,
                                        bc.DataflowOutputType.PYNQ_DRIVER], **fifo)
    bist = shell.BistFiles.read(rtl)
    if bist is not None and cfg.shell_flow_type != bc.ShellFlowType.VIVADO_ZYNQ:
        log("[yellow]vivado: the on-chip self-test is put into Zynq bitstreams only; this "
            f"{board.platform} build has none[/]", show=True)
        bist = None
    placed = None
    for step in (bs.step_hw_ipgen, bs.step_set_fifo_depths, bs.step_create_stitched_ip,
                 bs.step_synthesize_bitfile, bs.step_make_driver):
        if step.__name__ == "step_create_stitched_ip" and fifo:
            check_simulated(model, rtl)
            log("vivado: the graph for the stitched IP is the simulated design "
                f"({RTL_DIR.as_posix()}/{DESIGN_JSON})", show=True)
        log(f"vivado step {step.__name__}", show=True)
        bitfile = step.__name__ == "step_synthesize_bitfile"
        with shell.zynq_shell(bist) if bitfile and bist else contextlib.nullcontext():
            model = step(model, cfg)
        if bitfile and fifo:
            name = check_bitfile_kernel(model, rtl)
            log(f"vivado: the bitfile's accelerator partition {name} is the simulated design",
                show=True)
        if bitfile and bist:
            name, kernel = accelerator_partition(model)
            placed = shell.check_partition(kernel, name, bist)
            placed["address"] = _bist_address(model, placed["instance"])
            placed["simulated"] = bist.spec.stitched  # the build simulates stitched designs
            how = "as simulated" if bist.spec.stitched else "not simulated here: HLS layers"
            log(f"vivado: the on-chip self-test ({B.BIST_DIR}, {how}) is in the bitstream "
                f"around {placed['instance']}, its AXI-lite slave {placed['interface']} at "
                f"{placed['address']['base']}", show=True)
    hw = out / "hw"
    hw.mkdir(exist_ok=True)
    for pattern in ("bitfile/*.bit", "bitfile/*.hwh", "bitfile/*.xclbin", "driver/*"):
        for f in work.glob(pattern):
            if f.is_file():
                shutil.copy2(f, hw / f.name)
    res = {"ran": True, "simulated_design": bool(fifo),
           "files": sorted(p.name for p in hw.iterdir() if p.is_file())}
    if placed:
        hwh = sorted(hw.glob("*.hwh"))
        placed["address"]["hwh"] = f"hw/{hwh[0].name}" if hwh else None
        res["bist"] = placed
    return res


def _bist_address(model, instance: str) -> dict:
    """Where MakeZYNQProject put the BIST slave, from the step's hardware handoff."""
    from fpgaprint.compiler.bist import shell
    from fpgaprint.compiler.rtlsim.errors import RtlMismatchError

    hwh = model.get_metadata_prop("hw_handoff")
    found = shell.bist_address(Path(hwh), instance) if hwh and Path(hwh).is_file() else None
    if found is None:
        raise RtlMismatchError(f"the bitstream's hardware handoff ({hwh}) gives "
                               f"{instance}/{shell.AXIL} no address: the on-chip "
                               "self-test would be unreachable")
    return found


def accelerator_partition(parent) -> tuple[str, object]:
    """The one partition of a shell build's graph `parent` without an IO DMA: (its name, its
    graph); else RtlMismatchError."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fpgaprint.compiler.bist import shell
    from fpgaprint.compiler.rtlsim.errors import RtlMismatchError

    kernels = []
    for sdp in parent.get_nodes_by_op_type("StreamingDataflowPartition"):
        path = getCustomOp(sdp).get_nodeattr("model")
        kernel = ModelWrapper(path) if path and Path(path).is_file() else None
        if kernel is None or not shell.moves_io(kernel):
            kernels.append((sdp.name, kernel))
    if len(kernels) != 1 or kernels[0][1] is None:
        raise RtlMismatchError(
            "the bitfile's graph is not the simulated design "
            f"({RTL_DIR.as_posix()}): expected one accelerator partition besides the IO DMAs, "
            f"found {len(kernels)}" + ("" if len(kernels) != 1 else " without its graph"))
    return kernels[0]


def check_bitfile_kernel(parent, rtl_dir: Path) -> str:
    """The accelerator that FINN+'s bitfile step built is the simulated design in `rtl_dir`.

    FINN+'s shell builds (ZynqBuild, VitisBuild) do not take the stitched IP: they insert the
    IO DMAs, partition the graph and stitch each partition again, the accelerator's nodes
    renamed with the partition's prefix. `parent` is the graph the step returns: its one
    partition without an IO DMA must be the simulated design (`check_simulated`, the prefix
    set aside). Returns that partition's name; else RtlMismatchError."""
    name, kernel = accelerator_partition(parent)
    check_simulated(kernel, rtl_dir, prefix=name + "_", what="the bitfile's accelerator "
                    f"partition {name}")
    return name


def check_simulated(model, rtl_dir: Path, prefix: str = "",
                    what: str = "the graph for Vivado") -> None:
    """`model` (the graph for FINN+'s stitched-IP step) is the simulated design in `rtl_dir`:
    the same nodes in the same order (names after `prefix`, which a shell build's partition
    puts before them), attributes (folding, widths, datatypes, FIFO depths and memory styles;
    build paths aside), initializers, stream widths, and the memory images its layers'
    sources read equal to the simulated ones. Else RtlMismatchError naming the first
    difference and `what` differs."""
    import numpy as np
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fpgaprint.compiler.rtlsim.design import StitchedDesign
    from fpgaprint.compiler.rtlsim.errors import RtlMismatchError
    from fpgaprint.compiler.rtlsim.stitch import PATH_ATTRS

    design = StitchedDesign(rtl_dir)
    sim = ModelWrapper(str(design.graph))

    def differs(detail: str) -> RtlMismatchError:
        return RtlMismatchError(f"{what} is not the simulated design "
                                f"({RTL_DIR.as_posix()}): {detail}")

    got = [(n.name.removeprefix(prefix), n.op_type) for n in model.graph.node]
    want = [(n.name, n.op_type) for n in sim.graph.node]
    if got != want:
        i = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got),
                                                                             len(want)))
        raise differs(f"node {i} is {got[i] if i < len(got) else 'missing'}, simulated "
                      f"{want[i] if i < len(want) else 'none'}")
    for a, b in zip(model.graph.node, sim.graph.node):
        oa, ob = getCustomOp(a), getCustomOp(b)
        attrs = sorted({x.name for x in a.attribute} | {x.name for x in b.attribute})
        for name in attrs:
            if name in PATH_ATTRS or name in PLACEMENT_ATTRS:
                continue
            va, vb = _attr(oa, name), _attr(ob, name)
            if va != vb:
                raise differs(f"{a.name}.{name} is {va!r}, simulated {vb!r}")
        for i in range(len(a.input)):
            ia, ib = model.get_initializer(a.input[i]), sim.get_initializer(b.input[i])
            if (ia is None) != (ib is None) or \
                    (ia is not None and not np.array_equal(ia, ib)):
                raise differs(f"{a.name} input {i} ({a.input[i]}) differs")
        for i in range(len(a.output)):
            if oa.get_outstream_width_padded(i) != ob.get_outstream_width_padded(i):
                raise differs(f"{a.name} output stream {i} is "
                              f"{oa.get_outstream_width_padded(i)} bits, simulated "
                              f"{ob.get_outstream_width_padded(i)}")
    for m in design.memories:
        code_gen = Path(getCustomOp(model.get_node_from_name(prefix + m["layer"]))
                        .get_nodeattr("code_gen_dir_ipgen"))
        for name, rel in m["files"].items():
            src = code_gen / name
            if not src.is_file() or src.read_text().split() != \
                    (design.dir / rel).read_text().split():
                raise differs(f"memory image {name} of {m['layer']} is not the simulated "
                              f"{rel}")


def _attr(op, name: str):
    try:
        v = op.get_nodeattr(name)
    except (AttributeError, KeyError):
        return None
    return v.tolist() if hasattr(v, "tolist") else v
