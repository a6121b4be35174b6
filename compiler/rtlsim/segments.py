"""Stitched RTL segments: the RTL layers of a design that HLS layers split, checked a run at a
time instead of one layer at a time.

A segment is a maximal run of consecutive RTL layers of the accelerator graph with one input
and one output stream (`plan`). Each is plumbed and stitched as a whole design is
(`stitch.plumb`, `stitch.export`) into `finn/segments/<name>/` (scratch, never packaged),
built once with Verilator and run over all equivalence vectors in one simulation, fed with
the golden model's tensor at its input; its output must equal the golden tensor at its output
bit for bit. Its FIFOs are deep (`fifosizing.sizing_depth`: two frames of its largest
stream), not sized: a segment checks what its layers compute and is never flashed, and deep
FIFOs let it run at its slowest layer's rate (CNV's segments: 5, 38 and 37 % fewer cycles
than with FINN+'s minimal depths, so shorter simulations).

A depthwise sliding window interleaves channels for the VVAU or pool after it by design: a
segment ending on one is compared with the golden values in that order (`_reference`).
Left out of segments and run node by node (`layers.check_layers`):
* a VVAU at the start of a run (it reads its window's order, by design);
* runs of fewer than `MIN_LAYERS` layers, and runs that cannot be stitched (the reason is in
  the report; a memory image that differs from the golden model is an RtlMismatchError).

Segments build, then simulate, on two threads while the golden tensors are computed. When a
segment differs, its layers run node by node to name the layer that differs; if they
all agree, the segment's own difference is raised. Errors as in `layers`: RtlMismatchError
(exit 1) naming the segment, vector and element; SimulationError (exit 2).
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fpgaprint.compiler.rtlsim.errors import RtlMismatchError, SimulationError
from fpgaprint.compiler.rtlsim.impl import impl_of

MIN_LAYERS = 2
_START = threading.Lock()  # a simulation starts in its own working directory (`sim.py`)
SWG = ("ConvolutionInputGenerator_rtl",)
VVAU = ("VVAU_rtl",)


@dataclass
class Segment:
    """A run of RTL layers stitched as one design: its layers, input and output tensors."""

    name: str
    layers: list[str]
    input: str
    output: str
    reorders: bool = False  # its last layer is a depthwise window (see `_reference`)
    report: dict = field(default_factory=dict)


def _depthwise(node) -> bool:
    from qonnx.custom_op.registry import getCustomOp

    try:
        return int(getCustomOp(node).get_nodeattr("depthwise")) == 1
    except AttributeError:
        return False


def _runs(model) -> list[list]:
    """Maximal runs of consecutive RTL nodes (graph order)."""
    runs: list[list] = [[]]
    for node in model.graph.node:
        if impl_of(node) == "rtl":
            runs[-1].append(node)
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def _trimmed(run: list) -> list:
    """The run without a VVAU at its start (its input order is its window's, by design)."""
    if run and run[0].op_type in VVAU:
        run = run[1:]
    return run


def _ends(model, run: list) -> tuple[str, str] | None:
    """(input tensor, output tensor) of a run with one stream in and one out, else None."""
    made = {t for n in run for t in n.output}
    ins = {t for n in run for t in n.input
           if t and t not in made and model.get_initializer(t) is None}
    inside = {n.name for n in run}
    outs = set()
    for n in run:
        for t in n.output:
            users = [c for c in model.find_consumers(t) or [] if c.name not in inside]
            if users or t in {o.name for o in model.graph.output}:
                outs.add(t)
    if len(ins) != 1 or len(outs) != 1:
        return None
    return next(iter(ins)), next(iter(outs))


def plan(model) -> tuple[list[Segment], list[str]]:
    """(the segments to stitch, the RTL layers left to run node by node)."""
    segs: list[Segment] = []
    covered: set[str] = set()
    for run in _runs(model):
        run = _trimmed(run)
        ends = _ends(model, run) if len(run) >= MIN_LAYERS else None
        if ends is None:
            continue
        segs.append(Segment(f"segment_{len(segs)}", [n.name for n in run], *ends,
                            reorders=run[-1].op_type in SWG and _depthwise(run[-1])))
        covered.update(n.name for n in run)
    alone = [n.name for n in model.graph.node if impl_of(n) == "rtl" and n.name not in covered]
    return segs, alone


def sub_model(model, seg: Segment):
    """The accelerator graph cut down to the segment's layers, its input and output the
    segment's streams (datatype annotations kept)."""
    import copy

    from onnx import TensorProto, helper
    from qonnx.transformation.general import RemoveUnusedTensors

    m = copy.deepcopy(model)
    g = m.graph
    keep = set(seg.layers)
    for node in [n for n in g.node if n.name not in keep]:
        g.node.remove(node)

    def io(name: str):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, m.get_tensor_shape(name))

    new_in, new_out = io(seg.input), io(seg.output)
    for vi in [v for v in g.value_info if v.name in (seg.input, seg.output)]:
        g.value_info.remove(vi)
    del g.input[:]
    del g.output[:]
    g.input.append(new_in)
    g.output.append(new_out)
    return m.transform(RemoveUnusedTensors())


def check(model_path: str | Path, golden_path: str | Path, x_int: np.ndarray,
          log_dir: str | Path, part: str, clock_ns: float) -> dict:
    """Check every RTL layer of the accelerator graph at `model_path` on `x_int`: segments
    stitched, the rest node by node. Scratch designs go to `log_dir`/segments/.

    Returns {"segments": [per segment: name, layers, input, output, built, and when built:
    vectors, cycles, compile_seconds, sim_seconds, cached, path, or the reason], "layers":
    [node-by-node rows as `check_layers` gives them], "vectors", "seconds",
    "compile_seconds"}. Raises as `check_layers`; a mismatch error carries the segments'
    report entries as `segments`."""
    from concurrent.futures import ThreadPoolExecutor

    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaprint.compiler.rtlsim.layers import _data_inputs, _quiet, check_layers
    from fpgaprint.core.golden import GoldenModel

    t_all = time.perf_counter()
    model = ModelWrapper(str(model_path))
    golden = GoldenModel(golden_path)
    segs, alone = plan(model)
    work = Path(log_dir) / "segments"
    shutil.rmtree(work, ignore_errors=True)
    known = {t for n in golden.model.graph.node for t in (*n.input, *n.output)}
    if any(t not in known for s in segs for t in (s.input, s.output)):
        alone = [n.name for n in model.graph.node if impl_of(n) == "rtl"]  # they name it
        segs = []
    built = []
    for seg in segs:
        seg.report = {"name": seg.name, "layers": seg.layers, "input": seg.input,
                      "output": seg.output}
        try:
            with _quiet():
                design = _export(model, seg, work / seg.name, golden, part, clock_ns)
        except _NotStitchable as e:
            seg.report.update(built=False, reason=str(e))
            alone += seg.layers
            continue
        built.append((seg, design))
    order = [n.name for n in model.graph.node]
    alone.sort(key=order.index)
    names = [t for seg, _ in built for t in (seg.input, seg.output)]
    names += [_data_inputs(model, model.get_node_from_name(seg.layers[-1]))[0]
              for seg, _ in built if seg.reorders]
    for node in (model.get_node_from_name(a) for a in alone):
        names += [*_data_inputs(model, node), node.output[0]]
    names = [t for t in dict.fromkeys(names) if t in known]
    n = len(x_int)
    # each segment builds (C++ compilers in subprocesses) and then simulates on one of two
    # threads (the simulation runs in C++ without the GIL) while the golden tensors are
    # computed here; the threads start simulating once they are
    shared: dict = {}
    ready = threading.Event()

    def run(seg: Segment, design) -> None:
        built_ = _build(seg, design, log_dir)
        ready.wait()
        if "tensors" in shared:
            _simulate(seg, design, built_, shared["refs"][seg.name], shared["tensors"], n)

    failed = None
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(run, seg, design) for seg, design in built]
        try:
            tensors = golden.tensors(x_int, names) if names else {}
            lone = check_layers(model_path, golden_path, x_int, log_dir, only=alone,
                                tensors=tensors) \
                if alone else {"layers": [], "compile_seconds": 0.0}
            refs = {seg.name: _reference(model, seg, tensors, n) for seg, _ in built}
            shared.update(tensors=tensors, refs=refs)
        finally:
            ready.set()  # without tensors (an error here) the threads only finish their build
            for f in futures:
                if not shared:
                    f.cancel()
        for (seg, _), f in zip(built, futures):
            try:
                f.result()
            except RtlMismatchError as e:
                failed = (seg, e)
                for g in futures:
                    g.cancel()
                break
    if failed is not None:  # its layers one by one name the layer
        seg, e = failed
        try:
            check_layers(model_path, golden_path, x_int, log_dir, only=seg.layers,
                         tensors=shared.get("tensors"))
        except RtlMismatchError as layer_error:
            layer_error.segments = [s.report for s in segs]
            raise layer_error from None
        e.segments = [s.report for s in segs]
        raise e
    return {"segments": [s.report for s in segs], "layers": lone["layers"], "vectors": n,
            "seconds": round(time.perf_counter() - t_all, 3),
            "compile_seconds": round(lone["compile_seconds"] + sum(
                s.report.get("compile_seconds", 0.0) for s in segs), 3)}


class _NotStitchable(Exception):
    pass


def _export(model, seg: Segment, rtl_dir: Path, golden, part: str, clock_ns: float):
    """Plumb and stitch the segment into `rtl_dir`; its StitchedDesign."""
    from fpgaprint.compiler.rtlsim import fifosizing, packing, stitch
    from fpgaprint.compiler.rtlsim.design import StitchedDesign

    def deep(graph):
        return fifosizing.setter(fifosizing.sizing_depth(graph))(graph)

    try:
        with packing.installed():  # FINN+'s memory images, written without per-element packing
            plumbed = stitch.plumb(sub_model(model, seg), part, clock_ns, deep)
            stitch.export(plumbed, rtl_dir, golden, stitch.estimates(plumbed))
    except RtlMismatchError:  # a memory image that differs from the golden model
        raise
    except Exception as e:  # noqa: BLE001 - its layers are then checked node by node
        reason = str(e) if isinstance(e, stitch.NotStitchable) else \
            f"{type(e).__name__}: {e}".splitlines()[0][:300]
        raise _NotStitchable(reason) from None
    return StitchedDesign(rtl_dir)


def _build(seg: Segment, design, log_dir):
    """The segment's Verilator model (built or from the cache) and the seconds it took."""
    t0 = time.perf_counter()
    try:
        build = design.build(log_dir=log_dir)
    except SimulationError as e:
        raise SimulationError(f"stitched RTL segment {seg.name} ({_span(seg)}): {e}",
                              e.log) from None
    return build, time.perf_counter() - t0


def _span(seg: Segment) -> str:
    return seg.layers[0] if len(seg.layers) == 1 else f"{seg.layers[0]} to {seg.layers[-1]}"


def _reference(model, seg: Segment, tensors, n: int) -> tuple[np.ndarray, str]:
    """What the segment must output, and whether that is the golden tensor ("golden") or the
    golden values in its last layer's order ("reordered"): a depthwise window interleaves
    channels for the layer after it, so a segment ending on one is compared with FINN+'s
    python model of that `_rtl` window fed with the golden tensor at its input, when that
    holds, per vector, the golden values reordered (as `layers` checks the window alone)."""
    from qonnx.custom_op.registry import getCustomOp

    from fpgaprint.compiler.rtlsim.layers import reordered_reference

    want = tensors[seg.output]
    if not seg.reorders:
        return want, "golden"
    node = model.get_node_from_name(seg.layers[-1])
    ref = reordered_reference(model, node, getCustomOp(node), tensors, n, want)
    return (want, "golden") if ref is None else (ref, "reordered")


def _simulate(seg: Segment, design, built, reference: tuple[np.ndarray, str], tensors,
              n: int) -> None:
    """Run the segment over all vectors and compare with `reference` (`_reference`)."""
    from fpgaprint.compiler.rtlsim.layers import first_difference

    build, compile_s = built
    want, seg.report["reference"] = reference
    t0 = time.perf_counter()
    try:
        with _START:
            sim = design.simulator(build=build)
        with sim:
            raw, cycles = sim.run(tensors[seg.input].reshape(n, -1))
    except SimulationError as e:
        raise SimulationError(f"stitched RTL segment {seg.name} ({_span(seg)}): {e}",
                              e.log) from None
    except RtlMismatchError as e:  # an assertion of the design itself
        seg.report.update(built=True, ok=False, error=str(e))
        raise
    got = raw.reshape(want.shape)
    diff = first_difference(got, np.rint(want).astype(np.int64))
    seg.report.update(built=True, path=f"finn/segments/{seg.name}", vectors=n,
                      cycles=int(cycles), compile_seconds=round(compile_s, 3),
                      cached=bool(build.cached),
                      sim_seconds=round(time.perf_counter() - t0, 3), ok=diff is None)
    if diff is not None:
        v, idx = diff
        order = f" (in {seg.layers[-1]}'s output order)" \
            if seg.report["reference"] == "reordered" else ""
        seg.report["error"] = (
            f"stitched RTL segment {seg.name} ({_span(seg)}) differs from the golden model on "
            f"equivalence vector {v}: {seg.output}[{', '.join(map(str, idx))}] is "
            f"{got[(v, *idx)]} in RTL simulation, {want[(v, *idx)]:g} in the golden "
            f"model{order}")
        raise RtlMismatchError(seg.report["error"])
