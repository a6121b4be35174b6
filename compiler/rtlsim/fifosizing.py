"""FIFO depths by simulation: FINN+'s method, on Verilator instead of xsim.

The accelerator is stitched with every FIFO deep (`sizing_depth`) and each FIFO's
maximum-occupancy counter (`maxcount` of FINN+'s FIFO wrapper) as an output of the top; the
build's vectors stream through it at full rate (input always valid, output always ready);
each FIFO then gets the depth FINN+'s simulation-based sizing gives that peak (`depth_for`:
FINN+'s `_safe_bram_starting_depth`, and above `MAX_QSRL_DEPTH` the depth rounded up to fill
the BRAM blocks it occupies, FINN+'s `calculate_bram_blocks`/`calculate_bram_depth_range`).
A FIFO that never fills runs as the deep one did, so the sized design is re-simulated and its
interval compared (`rtlsim.stage`).

The FIFO on the accelerator's input is the exception: at full rate the source runs ahead of
the first layer and fills any depth, which says nothing about what the design needs; it gets
the depth of an empty FIFO.

Other modes (config, FINN+'s keys): `auto_fifo_strategy: force_minimal_fifos` keeps the
depths FINN+'s InsertFIFO gives (2 unless a layer's inFIFODepths/outFIFODepths say more);
`auto_fifo_depths: false` takes the depths of `fifo_config_file` (FINN+'s format, applied by
FINN+'s `ApplyFIFODepthsFromFile`) or, without one, the layers' in/outFIFODepths.
`large_fifo_mem_style` pins the memory of FIFOs fifo.sv would put in BRAM/URAM, as FINN+'s
`step_set_fifo_depths` does.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from fpgaprint.core.errors import InputError

MAX_QSRL_DEPTH = 256  # FINN+'s default: deeper FIFOs are rounded up to whole BRAM blocks
MIN_SIZING_DEPTH = 64
MAX_SIZING_DEPTH = 1 << 15
MAX_CONFIG_BYTES = 1 << 20
FIFO_OP = "StreamingFIFO_rtl"


def fifo_nodes(model) -> list:
    return [n for n in model.graph.node if n.op_type == FIFO_OP]


def sizing_depth(model) -> int:
    """The depth of every FIFO while occupancy is measured: a power of two holding two frames
    of the largest stream (at least MIN_SIZING_DEPTH)."""
    from qonnx.custom_op.registry import getCustomOp

    words = [int(math.prod(getCustomOp(n).get_folded_input_shape()[:-1]))
             for n in fifo_nodes(model)]
    need = max([MIN_SIZING_DEPTH, *(2 * w for w in words)])
    return min(MAX_SIZING_DEPTH, 1 << math.ceil(math.log2(need)))


def depth_for(peak: int, width: int) -> int:
    """FINN+'s FIFO depth for an observed occupancy peak of a stream `width` bits wide."""
    from finn.transformation.fpgadataflow.simulation_connected import (
        _safe_bram_starting_depth,
        calculate_bram_blocks,
        calculate_bram_depth_range,
    )

    depth = _safe_bram_starting_depth(int(peak), MAX_QSRL_DEPTH)
    if depth > MAX_QSRL_DEPTH:
        depth = calculate_bram_depth_range(calculate_bram_blocks(depth, width), width)[1]
    return int(depth)


def input_fifo(model) -> str | None:
    """The FIFO fed by the accelerator's input, if any."""
    name = model.graph.input[0].name
    return next((n.name for n in fifo_nodes(model) if n.input[0] == name), None)


def setter(depths: dict[str, int] | int | None, mem_style: str = "auto"):
    """A `stitch.plumb` hook: FIFOs at `depths` (by name, through FINN+'s
    ApplyFIFODepthsFromFile as its step_set_fifo_depths applies them; or one depth for all,
    for sizing; None keeps InsertFIFO's), then FINN+'s `large_fifo_mem_style` rule."""
    from finn.util.basic import getHWCustomOp

    def apply(model):
        if isinstance(depths, dict):
            info = {"fifo_depths": dict(depths),
                    "impl_style": {n: "rtl" for n in depths},
                    "ram_style": {n.name: getHWCustomOp(n).get_nodeattr("ram_style")
                                  for n in fifo_nodes(model)}}
            model = _apply_finn_config(model, info, "FIFO depths")
        for n in fifo_nodes(model):
            op = getHWCustomOp(n)
            if isinstance(depths, int):
                op.set_nodeattr("depth", int(depths))
            if mem_style != "auto" and op.get_nodeattr("ram_style") == "auto" and \
                    op.resolve_ram_style() in ("block", "ultra"):
                op.set_nodeattr("ram_style", mem_style)
        return model

    return apply


def _apply_finn_config(model, info: dict, where) -> object:
    """FINN+'s ApplyFIFODepthsFromFile with `info` (its file format); every FIFO of the
    graph must be named, no other node."""
    from finn.transformation.fpgadataflow.set_fifo_depths import ApplyFIFODepthsFromFile
    from finn.util.exception import FINNUserError

    names = {n.name for n in fifo_nodes(model)}
    unknown = sorted(set(info["fifo_depths"]) - names)
    if unknown:
        raise InputError(f"{where}: fifo_depths names {unknown[0]!r}, which is no FIFO of "
                         f"the design (FIFOs: {', '.join(sorted(names))})")
    missing = sorted(names - set(info["fifo_depths"]))
    if missing:
        raise InputError(f"{where}: fifo_depths has no depth for {missing[0]}")
    with tempfile.TemporaryDirectory(prefix="fpgaprint-fifo-") as tmp:
        f = Path(tmp) / "fifo_config.json"
        f.write_text(json.dumps(info))
        try:
            return model.transform(ApplyFIFODepthsFromFile(f))
        except FINNUserError as e:
            raise InputError(f"{where}: {e}") from None


def from_file(path: str | Path, mem_style: str = "auto"):
    """A `stitch.plumb` hook applying a FINN+ FIFO config file (`fifo_depths` per FIFO,
    optional `impl_style`/`ram_style`) with FINN+'s ApplyFIFODepthsFromFile."""
    info = read_config(path)

    def apply(model):
        return setter(None, mem_style)(_apply_finn_config(model, info, path))

    return apply


def read_config(path: str | Path) -> dict:
    """A FINN+ FIFO config file, checked: depths >= 2, styles FINN+ knows."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such FIFO config file")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise InputError(f"{p}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        info = json.loads(p.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not a JSON FIFO config ({e})") from None
    depths = info.get("fifo_depths") if isinstance(info, dict) else None
    if not isinstance(depths, dict):
        raise InputError(f"{p}: expected an object with \"fifo_depths\": {{FIFO: depth}}")
    out = {"fifo_depths": {}, "impl_style": {}, "ram_style": {}}
    for name, d in depths.items():
        if not isinstance(d, int) or isinstance(d, bool) or not 2 <= d <= MAX_SIZING_DEPTH * 8:
            raise InputError(f"{p}: fifo_depths.{name}={d!r}: expected an integer from 2 to "
                             f"{MAX_SIZING_DEPTH * 8}")
        impl = (info.get("impl_style") or {}).get(name, "rtl")
        ram = (info.get("ram_style") or {}).get(name, "auto")
        if impl != "rtl":
            raise InputError(f"{p}: impl_style.{name}={impl!r}: only 'rtl' FIFOs are built here")
        if ram not in ("auto", "srl", "distributed", "block", "ultra"):
            raise InputError(f"{p}: ram_style.{name}={ram!r}: expected auto, srl, distributed, "
                             "block or ultra")
        out["fifo_depths"][name], out["impl_style"][name], out["ram_style"][name] = d, impl, ram
    return out


def finn_config_file(fifos: list[dict]) -> dict:
    """The FIFO table of a design (stitch.fifo_table) in FINN+'s fifo_config_file format."""
    return {"fifo_depths": {f["name"]: f["depth"] for f in fifos},
            "impl_style": {f["name"]: "rtl" for f in fifos},
            "ram_style": {f["name"]: f["ram_style"] for f in fifos},
            "fifo_sizes": {f["name"]: f["depth"] * f["width"] for f in fifos}}


def large_fifo_style(config, board) -> str:
    """FINN+'s `large_fifo_mem_style` on `board`: `auto` lets fifo.sv ask for URAM for the
    deepest FIFOs, which a part without URAM backs with BRAM (Vivado drops the attribute), so
    there it is `block`, and the estimate and the fit check count what the board delivers."""
    style = config.large_fifo_mem_style
    if not board.resources.get("URAM", 0):
        if style == "ultra":
            raise InputError(f"large_fifo_mem_style 'ultra': the {board.name} has no URAM; "
                             "use auto or block")
        if style == "auto":
            return "block"
    return style


def hook(config, board):
    """The plumb hook of the build's FIFO configuration, and its name in the report."""
    style = large_fifo_style(config, board)
    if not config.auto_fifo_depths:
        if config.fifo_config_file:
            return from_file(config.fifo_config_file, style), "fifo_config_file"
        return setter(None, style), "layer attributes (inFIFODepths/outFIFODepths)"
    if config.auto_fifo_strategy == "force_minimal_fifos":
        return setter(None, style), "force_minimal_fifos"
    return None, "distributed_sim"


def measure(model, part: str, clock_ns: float, golden, x_acc, work: Path, log) -> dict:
    """Stitch `model` with deep, monitored FIFOs in `work`, stream `x_acc` (the vectors as the
    accelerator's first layer reads them) through it at full rate; returns the sizing depth,
    each FIFO's peak, and the deep design's cycles."""
    from fpgaprint.compiler.rtlsim import stitch
    from fpgaprint.compiler.rtlsim.design import StitchedDesign
    from fpgaprint.compiler.rtlsim.errors import SimulationError

    with log.capture():
        plumbed = stitch.plumb(model, part, clock_ns, lambda m: setter(sizing_depth(m))(m))
        stitch.export(plumbed, work, golden, monitor=True)
    design = StitchedDesign(work)
    try:
        build = design.build(log_dir=work.parent)
    except SimulationError as e:
        raise SimulationError(f"FIFO sizing design: {e}", e.log) from None
    try:
        with design.simulator(build=build) as sim:
            perf = sim.measure(x_acc)
            peaks = sim.peaks()
    except SimulationError as e:
        raise SimulationError(f"FIFO sizing design (every FIFO {sizing_depth(plumbed)} deep): "
                              f"{e}", e.log) from None
    deep = max(f["depth"] for f in stitch.fifo_table(plumbed))
    return {"sizing_depth": deep, "peaks": peaks, "graph": plumbed,
            "ii_cycles": perf["ii_cycles"], "latency_cycles": perf["latency_cycles"],
            "compile_cached": build.cached}


def sized_depths(plumbed, peaks: dict[str, int]) -> dict[str, int]:
    """Each FIFO's depth from its peak (`depth_for`); the input FIFO's peak does not count."""
    from qonnx.custom_op.registry import getCustomOp

    first = input_fifo(plumbed)
    out = {}
    for n in fifo_nodes(plumbed):
        peak = 0 if n.name == first else peaks[n.name]
        out[n.name] = depth_for(peak, int(getCustomOp(n).get_instream_width()))
    return out
