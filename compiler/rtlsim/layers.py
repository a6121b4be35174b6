"""Node-by-node RTL simulation of the accelerator's RTL layers against the golden model.

Each `_rtl` layer runs FINN+'s own node-level rtlsim (`prepare_rtlsim`, `execute_node` in
`exec_mode="rtlsim"`) on Verilator, fed with the golden model's tensor at its input for every
equivalence vector; its output must equal the golden model's tensor bit for bit. The one
exception is a layer whose output order differs by design (a depthwise sliding window
interleaves channels for the layer after it): its output must then equal FINN+'s python model
of that `_rtl` layer, which must hold the golden values reordered ("reference": "reordered").
The golden model supplies the input of every layer, so HLS layers in between need not run.
Layers whose batch is their `numInputVectors` (MVAU, Thresholding on vectors) run all vectors
in one simulation; the others one vector per simulation. The layers compile in order on a
thread while those already built simulate, so compiler and simulator use both cores.
"""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fpgaprint.compiler.rtlsim.errors import RtlMismatchError, SimulationError
from fpgaprint.compiler.rtlsim.impl import impl_of


def first_difference(got: np.ndarray, want: np.ndarray) -> tuple[int, tuple[int, ...]] | None:
    """(vector, element index within the vector) of the first difference of (N, ...) arrays."""
    bad = np.argwhere(np.asarray(got) != np.asarray(want))
    if not len(bad):
        return None
    return int(bad[0][0]), tuple(int(i) for i in bad[0][1:])


def _data_inputs(model, node) -> list[str]:
    return [t for t in node.input if t and model.get_initializer(t) is None]


def _batchable(op, model, node) -> bool:
    """Whether the layer takes a batch as its numInputVectors (vectors of shape (1, C))."""
    try:
        vecs = list(op.get_nodeattr("numInputVectors"))
    except (AttributeError, Exception):
        return False
    shapes = [model.get_tensor_shape(t) for t in (*_data_inputs(model, node), node.output[0])]
    return vecs == [1] and all(s is not None and len(s) == 2 and s[0] == 1 for s in shapes)


def _execute(model, node, feeds: dict[str, np.ndarray],
             batch: int | None) -> tuple[np.ndarray, int]:
    """Output of one `_rtl` node in rtlsim mode for the given data inputs."""
    from qonnx.custom_op.registry import getCustomOp

    if batch is not None:
        node = copy.deepcopy(node)
        getCustomOp(node).set_nodeattr("numInputVectors", [batch])
    ctx = {t: model.get_initializer(t).astype(np.float32) for t in node.input
           if t and model.get_initializer(t) is not None}
    ctx.update({t: np.ascontiguousarray(v, dtype=np.float32) for t, v in feeds.items()})
    shape = model.get_tensor_shape(node.output[0])
    ctx[node.output[0]] = np.zeros((batch or 1, *shape[1:]), dtype=np.float32)
    op = getCustomOp(node)
    op.execute_node(ctx, model.graph)
    return np.asarray(ctx[node.output[0]]), int(op.get_nodeattr("cycles_rtlsim") or 0)


def check_layers(model_path: str | Path, golden_path: str | Path, x_int: np.ndarray,
                 log_dir: str | Path | None = None, only: list[str] | None = None,
                 tensors: dict[str, np.ndarray] | None = None) -> dict:
    """Run every RTL layer of the accelerator graph at `model_path` (or the layers named in
    `only`) on the vectors `x_int`.

    Simulation files go to a temporary directory (the generated code is copied there); the
    full log of a layer that does not build is kept in `log_dir`. `tensors`: golden tensors
    already computed for `x_int` (name -> (N, ...)); the missing ones are computed.

    Returns {"layers": [per layer: layer, op_type, vectors, cycles, seconds,
    compile_seconds], "vectors", "seconds", "compile_seconds"}. Raises RtlMismatchError at the
    first layer whose output differs (naming it, the vector and the element) and
    SimulationError when a layer does not build or stalls.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fpgaprint.compiler.rtlsim.xsi import use_verilator
    from fpgaprint.core.golden import GoldenModel

    t_all = time.perf_counter()
    model = ModelWrapper(str(model_path))
    golden = GoldenModel(golden_path)
    nodes = [n for n in model.graph.node if impl_of(n) == "rtl"
             and (only is None or n.name in only)]
    names = []
    for node in nodes:
        for t in (*_data_inputs(model, node), node.output[0]):
            if t not in names:
                names.append(t)
    if not nodes:
        return {"layers": [], "vectors": int(len(x_int)), "seconds": 0.0, "compile_seconds": 0.0}
    known = {t for n in golden.model.graph.node for t in (*n.input, *n.output)}
    missing = [t for t in names if t not in known]
    if missing:
        user = next(n for n in nodes if missing[0] in (*n.input, *n.output))
        raise SimulationError(f"{user.name}: the golden model has no tensor {missing[0]!r} to "
                              "compare this RTL layer with")
    have = dict(tensors or {})
    todo = [t for t in names if t not in have]
    if todo:
        have.update(golden.tensors(x_int, todo))
    tensors = have
    n = len(x_int)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fpgaprint-rtlsim-") as tmp, _build_dir(tmp), \
            use_verilator(), _quiet(), ThreadPoolExecutor(1) as compiler:
        ops = [getCustomOp(node) for node in nodes]
        # the layers compile one after the other on a thread (C++ compilers in subprocesses)
        # while the ones already built simulate here: both cores busy
        builds = [compiler.submit(_prepare, op, node, Path(tmp)) for op, node in zip(ops, nodes)]
        try:
            _check_each(model, nodes, ops, builds, tensors, n, log_dir, rows)
        finally:
            for b in builds:  # after a failure, build no further layers
                b.cancel()
    return {"layers": rows, "vectors": n, "seconds": round(time.perf_counter() - t_all, 3),
            "compile_seconds": round(sum(r["compile_seconds"] for r in rows), 3)}


def _check_each(model, nodes, ops, builds, tensors, n: int, log_dir, rows: list) -> None:
    """Simulate each layer once its build is done; its row in `rows`, or the first error."""
    for node, op, build in zip(nodes, ops, builds):
        try:
            compiled = build.result()
        except SimulationError as e:
            raise _kept_log(e, log_dir) from None
        t0 = time.perf_counter()
        for t in (*_data_inputs(model, node), node.output[0]):
            want = tuple(model.get_tensor_shape(t)[1:])
            if tuple(tensors[t].shape[1:]) != want:
                raise SimulationError(
                    f"{node.name}: tensor {t} has shape {want} per vector in the "
                    f"accelerator, {tuple(tensors[t].shape[1:])} in the golden model")
        out, cycles = _run_layer(model, node, op, tensors, n, "rtlsim")
        want = tensors[node.output[0]]
        out = out.reshape(want.shape)
        diff = first_difference(out, want)
        reference = "golden"
        if diff is not None and _reorders(model, node, op, tensors, n, out, want):
            diff, reference = None, "reordered"
        if diff is not None:
            v, idx = diff
            got_v = out[(v, *idx)]
            raise RtlMismatchError(
                f"RTL layer {node.name} ({node.op_type}) differs from the golden model on "
                f"equivalence vector {v}: {node.output[0]}[{', '.join(map(str, idx))}] is "
                f"{got_v:g} in RTL simulation, {want[(v, *idx)]:g} in the golden model")
        rows.append({"layer": node.name, "op_type": node.op_type, "vectors": n,
                     "cycles": cycles, "reference": reference,
                     "seconds": round(time.perf_counter() - t0, 3),
                     "compile_seconds": round(compiled, 3)})


def _prepare(op, node, tmp: Path) -> float:
    """Build one layer's simulation (FINN+'s prepare_rtlsim) on a copy of its generated code,
    where FINN+ writes its simulation files; the seconds it took."""
    code = tmp / f"code_gen_{node.name}"
    shutil.copytree(op.get_nodeattr("code_gen_dir_ipgen"), code)
    op.set_nodeattr("code_gen_dir_ipgen", str(code))
    t0 = time.perf_counter()
    op.prepare_rtlsim(behav=False)
    return time.perf_counter() - t0


def _run_layer(model, node, op, tensors, n: int, mode: str) -> tuple[np.ndarray, int]:
    """(outputs (n, ...), simulated cycles) of one layer over all vectors in `mode`
    (rtlsim, or cppsim: the `_rtl` layer's own python model)."""
    inputs = _data_inputs(model, node)
    op.set_nodeattr("exec_mode", mode)
    with _quiet():
        if _batchable(op, model, node):
            return _execute(model, node, {t: tensors[t] for t in inputs}, n)
        outs, cycles = [], 0
        for v in range(n):
            feeds = {t: tensors[t][v:v + 1].reshape(model.get_tensor_shape(t)) for t in inputs}
            out, c = _execute(model, node, feeds, None)
            outs.append(out.reshape(1, *out.shape[1:]))
            cycles += c
        return np.concatenate(outs), cycles


def _reorders(model, node, op, tensors, n: int, out: np.ndarray, want: np.ndarray) -> bool:
    """Whether the RTL output differs from the golden tensor only by an order the layer has by
    design: it equals `reordered_reference` and that is not the golden tensor itself."""
    ref = reordered_reference(model, node, op, tensors, n, want)
    return bool(ref is not None and np.array_equal(out, ref) and not np.array_equal(ref, want))


def reordered_reference(model, node, op, tensors, n: int, want: np.ndarray) -> np.ndarray | None:
    """FINN+'s own python model of the `_rtl` layer on the golden tensors, shaped as `want`,
    when it holds per vector the golden values `want` reordered (a depthwise sliding window
    interleaves channels for the layer after it); else None."""
    try:
        ref, _ = _run_layer(model, node, op, tensors, n, "cppsim")
    except Exception:  # noqa: BLE001 - no python model: no order by design
        return None
    finally:
        op.set_nodeattr("exec_mode", "rtlsim")
    ref = ref.reshape(want.shape)
    flat = (n, -1)
    if np.array_equal(np.sort(ref.reshape(flat), axis=1), np.sort(want.reshape(flat), axis=1)):
        return ref
    return None


def _kept_log(e: SimulationError, log_dir) -> SimulationError:
    """The error with its build log moved out of the temporary directory."""
    if log_dir is None or not e.log or not Path(e.log).is_file():
        return e
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    kept = Path(log_dir) / Path(e.log).name
    shutil.copyfile(e.log, kept)
    return SimulationError(str(e).replace(str(e.log), str(kept)), str(kept))


@contextlib.contextmanager
def _build_dir(path):
    """FINN+'s build directory (where prepare_rtlsim puts its simulations) set to `path`."""
    from finn.util.settings import get_settings

    settings = get_settings()
    old = settings.finn_build_dir
    settings.finn_build_dir = path
    try:
        yield
    finally:
        settings.finn_build_dir = old


@contextlib.contextmanager
def _quiet():
    """FINN+ and Verilator print progress; the build keeps it in build.log via its capture."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
