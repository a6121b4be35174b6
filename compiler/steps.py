"""The compiler's named steps: FINN+'s own build steps (`finn.builder.build_dataflow_steps`),
called with a `DataflowBuildConfig` made from the fpgaprint config and board, and wrapped
where fpgaprint must differ (each wrapper says why in one comment).

A step is a function (model, StepContext) -> (model, report fragment). What a step reads from
the configs, the board and the input grid is recorded while it runs (`Recorder`), so the
build can tell from a step's actual inputs whether a saved result is still valid.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from onnx import TensorProto, helper

from fpgaprint.compiler.monotonic import (
    MONOTONIC_OPS,
    check_monotonic,
    rounded_trunc,
    step_thresholds,
)
from fpgaprint.compiler.rtlsim.foldrules import avoid_failing_foldings
from fpgaprint.compiler.usernodes import USER_NODE, mark_user_nodes, user_node
from fpgaprint.core.errors import InputError, UnsupportedModelError
from fpgaprint.core.golden import HEAD_OPS

# ONNX/QONNX ops the front end accepts (anything else is named in an error before FINN runs).
SUPPORTED_OPS = {
    "Quant", "BipolarQuant", "Trunc", "MatMul", "Gemm", "Conv", "Add", "Sub", "Mul", "Div",
    "Relu", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape",
    "Flatten", "Transpose", "Identity", "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze",
    "Concat", "Pad", "MultiThreshold", "TopK", "Sign", "Cast", "Clip",
}
HW_DOMAIN = "finn.custom_op.fpgadataflow"
# host-side ops the dataflow partition may leave outside the accelerator
HOST_OPS = {"Mul", "Add", "Sub", "Div", "Max", "Reshape", "Transpose", "Flatten", "TopK",
            "Identity", "Softmax", "LogSoftmax", "Sigmoid", "ArgMax"}
# FINN+ HW layers that stay on the host when they compute in float at the graph's end
FLOAT_TAIL_OPS = {"ElementwiseMul": "Mul", "ElementwiseAdd": "Add", "ElementwiseSub": "Sub",
                  "ElementwiseDiv": "Div", "ElementwiseMax": "Max"}


# ---------------------------------------------------------------- FINN+ steps


_finn_steps = None


def finn_steps():
    """`finn.builder.build_dataflow_steps`, importable without Vivado.

    The module imports `finn.xsi.SimEngine` (Vivado's simulator) for its rtlsim steps only;
    without Vivado that name is bound to a stand-in that says so when used."""
    global _finn_steps
    if _finn_steps is None:
        from fpgaprint.compiler import qonnx_fixes
        from fpgaprint.core.finn_env import ensure_finn

        ensure_finn()
        qonnx_fixes.install()
        import finn.xsi as xsi

        if "SimEngine" not in vars(xsi):
            try:
                xsi.ensure_available()
            except Exception:
                class SimEngine:  # noqa: D401 - a stand-in without Vivado
                    def __init__(self, *args, **kwargs):
                        raise RuntimeError("Vivado's XSI simulator is not available")

                xsi.SimEngine = SimEngine
        import finn.builder.build_dataflow_steps as bs

        _finn_steps = bs
    return _finn_steps


# ---------------------------------------------------------------- recorded inputs


# config values naming files whose contents are the step's input
FILE_KEYS = {"config.folding_config", "finn.folding_config_file",
             "finn.specialize_layers_config_file", "finn.layouts_config_file"}


def _plain(key: str, value: Any) -> Any:
    """A JSON-comparable form of a config value (a named file: its path and SHA-256)."""
    if key in FILE_KEYS and value is not None:
        import hashlib

        p = Path(value)
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        return {"path": str(value), "sha256": digest}
    return json.loads(json.dumps(value, default=str, sort_keys=True))


class Recorder:
    """Reads of config, board and grid attributes during a step, keyed `prefix.name`."""

    IGNORED = {"finn.output_dir"}  # where a step writes is not one of its inputs

    def __init__(self) -> None:
        self.reads: dict[str, Any] = {}

    def __copy__(self) -> "Recorder":
        return self  # a copy of a recorded object reports to the same recorder

    def __deepcopy__(self, memo) -> "Recorder":
        return self

    def note(self, key: str, value: Any) -> None:
        if key not in self.IGNORED and not callable(value):
            if key not in self.reads:
                self.reads[key] = _plain(key, value)

    def proxy(self, prefix: str, obj: Any) -> Any:
        """`obj` with attribute reads recorded (methods of the object included)."""
        if not dataclasses.is_dataclass(obj):
            return _Proxy(obj, prefix, self)
        clone = copy.copy(obj)
        object.__setattr__(clone, "__class__", _recorded_class(type(obj)))
        object.__setattr__(clone, _RECORDING, (self, prefix))
        return clone


_RECORDING = "_fpgaprint_recording"  # (recorder, prefix) on a recorded dataclass instance
_RECORDED: dict[type, type] = {}  # class -> its recorded subclass
_PLAIN: dict[type, type] = {}  # recorded subclass -> class


def _recorded_class(cls: type) -> type:
    """`cls` with attribute reads noted to the instance's recorder. Made once per class: a
    subclass of a mashumaro dataclass (FINN+'s config) compiles code (about 20 ms)."""
    if cls not in _RECORDED:
        def __getattribute__(self, name):
            value = object.__getattribute__(self, name)
            if not name.startswith("__") and name != _RECORDING:
                recording = object.__getattribute__(self, "__dict__").get(_RECORDING)
                if recording is not None:
                    recording[0].note(f"{recording[1]}.{name}", value)
            return value

        _RECORDED[cls] = type("Recorded", (cls,), {"__getattribute__": __getattribute__})
        _PLAIN[_RECORDED[cls]] = cls
    return _RECORDED[cls]


class _Proxy:
    """Attribute-recording wrapper for objects whose class cannot be swapped."""

    def __init__(self, obj, prefix, rec):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_rec", rec)

    def __getattr__(self, name):
        value = getattr(self._obj, name)
        self._rec.note(f"{self._prefix}.{name}", value)
        return value


def current_value(key: str, sources: dict[str, Any]) -> Any:
    """The present value of a recorded key (`finn.target_fps`) in `sources`."""
    prefix, name = key.split(".", 1)
    obj = sources.get(prefix)
    try:
        return _plain(key, getattr(obj, name))
    except AttributeError:
        return ("missing", key)


@dataclass
class StepContext:
    """What a step may read besides the model; `config`, `board`, `finn` and `grid` are
    recorded as they are read."""

    config: Any  # BuildConfig
    board: Any  # core.boards.Board
    finn: Any  # FINN+ DataflowBuildConfig
    grid: Any  # core.grid.InputGrid
    out: Path
    log: Callable[[str], None]
    recorder: Recorder = field(default_factory=Recorder)

    def recording(self) -> "StepContext":
        r = Recorder()
        return dataclasses.replace(
            self, recorder=r, config=r.proxy("config", self.config),
            board=r.proxy("board", self.board), finn=r.proxy("finn", self.finn),
            grid=r.proxy("grid", self.grid))

    def finn_with(self, **changes):
        """A FINN+ config with some values replaced (reads of those are not recorded)."""
        base = dataclasses.replace(_unwrap(self.finn), **changes)
        rec, orig = Recorder(), self.recorder
        rec.note = lambda key, value: (None if key.split(".", 1)[1] in changes
                                       else orig.note(key, value))
        return rec.proxy("finn", base)


def _unwrap(obj):
    """The plain object behind a recorded one."""
    if isinstance(obj, _Proxy):
        return object.__getattribute__(obj, "_obj")
    if type(obj) not in _PLAIN:
        return obj
    clone = copy.copy(obj)
    object.__setattr__(clone, "__class__", _PLAIN[type(obj)])
    clone.__dict__.pop(_RECORDING, None)
    return clone


# ---------------------------------------------------------------- checks


def check_supported_ops(model) -> None:
    """Name the first node whose op the compiler cannot map. A node computing on constants
    alone is folded away by FINN+'s tidy-up (the TorchScript exporter writes the TensorNorm of
    FINN's TFC and CNV with a Pow on constants), so its op needs no mapping."""
    from fpgaprint.compiler.heads import head_names

    const = {t.name for t in model.graph.initializer}
    heads = head_names(model)
    for node in model.graph.node:  # ONNX keeps nodes in topological order
        if node.op_type == "Constant" or (
                node.op_type not in ("Quant", "BipolarQuant")  # never folded
                and node.input and all(i in const for i in node.input)):
            const.update(node.output)
            continue
        if node.name in heads or check_monotonic(model, node):
            continue  # kept on the host / becomes thresholds (monotonic.py)
        if node.op_type not in SUPPORTED_OPS:
            where = f"{node.op_type} at node {node.name or '(unnamed)'}"
            if node.op_type in MONOTONIC_OPS | HEAD_OPS:
                raise UnsupportedModelError(
                    f"unsupported operator {where}: it is compiled only when a quantizer "
                    "follows it (thresholds) or as an output head (Softmax, LogSoftmax, "
                    "Sigmoid, ArgMax, TopK at the graph's output, on the host)")
            raise UnsupportedModelError(
                f"unsupported operator {where} (inputs {list(node.input)}); supported: "
                f"{', '.join(sorted(SUPPORTED_OPS))}")


def _unmapped(model, node, inside: bool) -> UnsupportedModelError:
    user = user_node(model, node)
    inserted = "" if node.doc_string.startswith(USER_NODE) else \
        f" (FINN+ left {node.op_type} {node.name} there)"
    return UnsupportedModelError(
        f"operator {user} could not be mapped onto a FINN+ HW layer"
        f"{' and sits between HW layers' if inside else ''}{inserted}")


def _check_mapped(model) -> None:
    """Every node is a HW layer, or a host-side op before/after the accelerator."""
    nodes = list(model.graph.node)
    hw_idx = [i for i, n in enumerate(nodes) if n.domain.startswith(HW_DOMAIN)]
    if not hw_idx:
        raise UnsupportedModelError("no layer could be mapped onto FINN+ HW layers")
    for i, n in enumerate(nodes):
        inside = hw_idx[0] < i < hw_idx[-1]
        if n.domain.startswith(HW_DOMAIN):
            continue
        if inside or n.op_type not in HOST_OPS:
            raise _unmapped(model, n, inside)


# ---------------------------------------------------------------- the steps


def step_qonnx_to_finn(model, ctx):
    """FINN+'s step_qonnx_to_finn (QONNX clean-up, Quant → MultiThreshold).

    fpgaprint first rewrites a Trunc that widens its input (`TruncTo8bit`), which FINN+
    converts wrongly, into the equal Trunc it converts exactly (compiler/avgpool.py)."""
    from fpgaprint.compiler.avgpool import widening_truncs

    widened = widening_truncs(model, ctx.log)
    model = finn_steps().step_qonnx_to_finn(model, ctx.finn)
    return model, ({"truncs_unshifted": widened} if widened else {})


def _check_trunc(model) -> None:
    from qonnx.custom_op.registry import getCustomOp

    for node in model.get_nodes_by_op_type("Trunc"):
        mode = getCustomOp(node).get_nodeattr("rounding_mode")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if str(mode).upper() != "FLOOR" and not rounded_trunc(model, node):
            producer = model.find_producer(node.input[0])
            what = (f"average pool {producer.name}" if producer is not None and
                    producer.op_type in ("AveragePool", "GlobalAveragePool")
                    else f"Trunc {node.name}")
            raise UnsupportedModelError(
                f"{what}: its output is truncated with rounding mode {mode} and per-channel "
                "or non-constant parameters; FINN+ maps only FLOOR truncation, and fpgaprint "
                "turns other rounding into thresholds only with one constant scale and bit "
                "width (Trunc with an output scale). Use TruncAvgPool2d(bit_width=N) or "
                "float_to_int_impl_type='FLOOR', or a max pool")


def step_tidy_up(model, ctx):
    """FINN+'s step_tidy_up: shapes, constant folding, readable names, datatypes."""
    return finn_steps().step_tidy_up(model, ctx.finn), {}


def step_input_grid(model, ctx):
    """Make the accelerator's input the integers of the input grid: Mul(scale) in front of
    the QONNX graph, the input annotated with the grid's datatype. A model's own input
    quantizer is the grid, and is exact on it: it is removed. (fpgaprint's own step: FINN+
    leaves the input to the user.) Nodes are first marked with the names the user gave them,
    and a Trunc that FINN+ cannot convert is refused naming its layer."""
    from qonnx.core.datatype import DataType
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    mark_user_nodes(model)
    _check_trunc(model)
    model = cleanup_model(model)
    grid = ctx.grid
    g = model.graph
    quant = _input_quant(model)
    if (quant is None) != (grid.source == "default"):
        raise InputError(f"input grid from {grid.source}, but the model's input quantizer is "
                         f"{quant.name if quant is not None else 'missing'}")
    if quant is not None:
        for c in model.find_consumers(quant.output[0]):
            for k, t in enumerate(c.input):
                if t == quant.output[0]:
                    c.input[k] = quant.input[0]
        g.node.remove(quant)
    old = g.input[0]
    shape = [d.dim_value for d in old.type.tensor_type.shape.dim]
    new = helper.make_tensor_value_info("grid_in", TensorProto.FLOAT, shape)
    g.initializer.append(helper.make_tensor("grid_scale", TensorProto.FLOAT, [],
                                            [float(grid.step)]))
    g.node.insert(0, helper.make_node("Mul", ["grid_in", "grid_scale"], [old.name],
                                      name="InputGrid"))
    g.input.remove(old)
    g.input.insert(0, new)
    g.value_info.append(old)
    model = model.transform(InferShapes())
    model.set_tensor_datatype(model.graph.input[0].name, DataType[grid.datatype])
    return model.transform(InferDataTypes()), {"input_grid": grid.to_dict()}


# value-preserving ops that may stand between the graph input and its input quantizer
PASS_THROUGH = {"Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze"}


def _input_quant(model):
    """The Quant/BipolarQuant node that quantizes the graph input, if there is one."""
    name = model.graph.input[0].name
    for _ in range(16):
        consumers = model.find_consumers(name)
        if len(consumers) != 1:
            return None
        n = consumers[0]
        if n.op_type in ("Quant", "BipolarQuant"):
            return n
        if n.op_type not in PASS_THROUGH:
            return None
        name = n.output[0]
    return None


def grid_of(model, input_bits: int):
    """The input grid a QONNX model asks for: its input quantizer's datatype and scale, or
    the default UINT<input_bits> grid for a float input. Refuses (exit 2, naming the
    quantizer) an input range the accelerator's integer input cannot represent."""
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.util.cleanup import cleanup_model

    from fpgaprint.core.grid import InputGrid

    model = copy.deepcopy(model)
    mark_user_nodes(model)
    model = cleanup_model(model)
    quant = _input_quant(model)
    if quant is None:
        return InputGrid(input_bits)
    name = user_node(model, quant).split(" ", 1)[1]
    where = f"input quantizer {name}"
    if quant.op_type == "BipolarQuant":
        raise UnsupportedModelError(f"{where}: a bipolar (±1) input cannot be the "
                                    "accelerator's integer input; use a 2-bit or wider Quant")
    scale, zero, bits = (model.get_initializer(t) for t in quant.input[1:4])
    if scale is None or zero is None or bits is None:
        raise UnsupportedModelError(f"{where}: scale, zero point and bit width must be "
                                    "constants")
    if np.asarray(scale).size != 1:
        raise UnsupportedModelError(f"{where}: a per-channel input scale "
                                    f"({np.asarray(scale).size} scales) is not one input grid")
    if np.any(np.asarray(zero) != 0):
        raise UnsupportedModelError(f"{where}: zero point {np.asarray(zero).reshape(-1)[0]:g}; "
                                    "an asymmetric input range cannot be the integer input")
    b = float(np.asarray(bits).reshape(-1)[0])
    inst = getCustomOp(quant)
    signed = bool(inst.get_nodeattr("signed"))
    narrow = bool(inst.get_nodeattr("narrow"))
    if b != int(b) or not 2 <= b <= 16:
        raise UnsupportedModelError(f"{where}: {b:g}-bit input; the accelerator input takes "
                                    "2 to 16 bits")
    s = float(np.asarray(scale).reshape(-1)[0])
    if not (np.isfinite(s) and s > 0):
        raise UnsupportedModelError(f"{where}: scale {s!r} is not a positive number")
    return InputGrid(int(b), signed, s, narrow and signed, name)


def step_streamline(model, ctx):
    """FINN+'s step_streamline (scales and biases moved into thresholds, arXiv:1709.04060)."""
    return finn_steps().step_streamline(model, ctx.finn), {}


def step_convert_to_hw(model, ctx):
    """FINN+'s step_convert_to_hw (MVAU, VVAU, Thresholding, Pool, ConvInpGen, elementwise…).

    fpgaprint: float elementwise layers at the end of the graph (the output scale and bias)
    and reshapes at either end go back to the host, so the accelerator's raw output is the
    integer the exact check compares and its input the grid's integers; a node left outside
    the HW layers is named as the user wrote it."""
    from fpgaprint.compiler import heads

    _check_integer_inputs(model)
    head = heads.detach(model)  # output heads stay on the host, as the user wrote them
    model = heads.attach(finn_steps().step_convert_to_hw(model, ctx.finn), head)
    model = _float_tail_to_host(model)
    model = _edge_reshapes_to_host(model)
    _check_mapped(model)
    first = next(n for n in model.graph.node if n.domain.startswith(HW_DOMAIN))
    dt = model.get_tensor_datatype(first.input[0]).name
    if first.input[0] == model.graph.input[0].name and dt != ctx.grid.datatype:
        raise UnsupportedModelError(f"the accelerator's first layer {first.name} takes {dt}, "
                                    f"not the input grid's {ctx.grid.datatype}")
    return model, {}


JOIN_OPS = ("Add", "Sub", "Concat", "Mul")  # where branches with different scales meet


def _check_integer_inputs(model) -> None:
    """A MatMul/Conv whose input streamlining left in float cannot become an integer HW
    layer: name the user's node that kept the scale from being absorbed (often a residual
    join), rather than a node FINN+ inserted later."""
    for n in model.graph.node:
        if n.op_type not in ("MatMul", "Conv") or model.get_initializer(n.input[1]) is None:
            continue
        if model.get_tensor_datatype(n.input[0]).is_integer():
            continue
        culprit = _nearest_user_node(model, n)
        raise UnsupportedModelError(
            f"operator {culprit} could not be mapped onto FINN+ HW layers: streamlining "
            f"cannot move the float scale past it, so {n.op_type} {n.name} "
            f"gets non-integer inputs")


def _nearest_user_node(model, node) -> str:
    """The closest marked node upstream of `node` or beside it, joins first."""
    seen, frontier, found = {node.name}, [node], []
    for _ in range(6):
        nxt = []
        for n in frontier:
            for t in n.input:
                p = model.find_producer(t)
                if p is None or p.name in seen:
                    continue
                seen.add(p.name)
                nxt.append(p)
                for c in model.find_consumers(p.output[0]):
                    if c.name not in seen:
                        seen.add(c.name)
                        nxt.append(c)
        found += [n for n in nxt if n.doc_string.startswith(USER_NODE)]
        frontier = nxt
    joins = [n for n in found if n.op_type in JOIN_OPS]
    pick = (joins or found or [node])[0]
    return user_node(model, pick)


def _edge_reshapes_to_host(model):
    """HW Reshape layers that read the graph input or write its output: host Reshapes."""
    from qonnx.custom_op.registry import getCustomOp

    ends = {model.graph.input[0].name} | {o.name for o in model.graph.output}
    for i, node in enumerate(list(model.graph.node)):
        if node.op_type != "Reshape" or not node.domain.startswith(HW_DOMAIN):
            continue
        if node.input[0] not in ends and node.output[0] not in ends:
            continue
        shape = np.asarray(getCustomOp(node).get_nodeattr("out_shape"), dtype=np.int64)
        init = f"{node.name}_shape"
        model.graph.initializer.append(helper.make_tensor(init, TensorProto.INT64,
                                                          [len(shape)], shape.tolist()))
        host = helper.make_node("Reshape", [node.input[0], init], list(node.output),
                                name=node.name, doc_string=node.doc_string)
        model.graph.node.remove(node)
        model.graph.node.insert(i, host)
    return model


def _float_tail_to_host(model):
    from qonnx.custom_op.registry import getCustomOp

    names = {o.name for o in model.graph.output}
    names |= {n.input[0] for n in model.graph.node if n.op_type in HEAD_OPS}  # host heads
    changed = True
    while changed:
        changed = False
        for i, node in enumerate(model.graph.node):
            if node.op_type not in FLOAT_TAIL_OPS or not node.domain.startswith(HW_DOMAIN):
                continue
            if not all(o in names for o in node.output):
                continue
            inst = getCustomOp(node)
            if "FLOAT" not in inst.get_nodeattr("out_dtype"):
                continue
            host = helper.make_node(FLOAT_TAIL_OPS[node.op_type], list(node.input),
                                    list(node.output), name=node.name,
                                    doc_string=node.doc_string)
            model.graph.node.remove(node)
            model.graph.node.insert(i, host)
            names |= {t for t in node.input if model.get_initializer(t) is None}
            changed = True
            break
    return model


ONE_BIT = ("BIPOLAR", "BINARY")


def _keep_one_bit_weights(model, minimize) -> Any:
    """Run `minimize`, keeping 1-bit weight datatypes: FINN+'s value-based minimization
    turns BIPOLAR {-1, 1} into INT2 (twice the weight memory)."""
    from qonnx.custom_op.registry import getCustomOp

    before = {}
    for node in model.graph.node:
        if node.domain.startswith(HW_DOMAIN):
            inst = getCustomOp(node)
            try:
                wdt = inst.get_nodeattr("weightDataType")
            except AttributeError:
                continue
            if wdt in ONE_BIT:
                before[node.name] = wdt
    model = minimize(model)
    from qonnx.core.datatype import DataType

    for node in model.graph.node:
        if node.name in before:
            inst = getCustomOp(node)
            w = model.get_initializer(node.input[1])
            dt = DataType[before[node.name]]
            if w is not None and all(dt.allowed(v) for v in np.unique(w)):
                inst.set_nodeattr("weightDataType", dt.name)
                model.set_tensor_datatype(node.input[1], dt)
    return model


def step_minimize_bit_width(model, ctx):
    """FINN+'s step_minimize_bit_width_initial: the smallest weight and accumulator
    datatypes that hold the values (1-bit weights kept at 1 bit, see above); the tensors
    get readable, deterministic names (this graph becomes the golden model)."""
    from qonnx.transformation.general import GiveReadableTensorNames

    bs = finn_steps()
    model = _keep_one_bit_weights(model, lambda m: bs.step_minimize_bit_width_initial(
        m, ctx.finn))
    return model.transform(GiveReadableTensorNames()), {}


def step_dataflow_partition(model, ctx):
    """FINN+'s step_create_dataflow_partition; returns the accelerator graph.

    fpgaprint: the parent graph (host-side ops around the partition) is kept beside the
    step's model for the partition check, and FINN+'s refusals become input errors naming
    the user's node."""
    bs = finn_steps()
    try:
        part = bs.step_create_dataflow_partition(model, ctx.finn)
    except AssertionError as e:
        raise UnsupportedModelError(f"expected one dataflow partition: host-side ops split the "
                                    f"HW layers ({e})") from None
    except Exception as e:
        if type(e).__name__ != "FINNUserError":
            raise
        for n in model.graph.node:
            if not n.domain.startswith(HW_DOMAIN) and n.name in str(e):
                raise _unmapped(model, n, True) from None
        raise UnsupportedModelError(str(e).splitlines()[0]) from None
    src = Path(ctx.finn.output_dir) / "intermediate_models" / "dataflow_parent.onnx"
    dst = ctx.out / PARENT
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return part, {}


PARENT = Path("model/steps/dataflow_parent.onnx")


def step_specialize_layers(model, ctx):
    """FINN+'s step_specialize_layers: RTL or HLS implementations for the board's part.

    fpgaprint first sets each layer's preferred variant from `impl_style`."""
    from fpgaprint.compiler.rtlsim.impl import prefer

    model = prefer(model, ctx.config.impl_style)
    return finn_steps().step_specialize_layers(model, ctx.finn), {}


FPS_LADDER = (100_000, 50_000, 20_000, 10_000, 5_000, 2_000, 1_000, 500, 200, 100)


def _total(per_layer: dict) -> dict[str, float]:
    total: dict[str, float] = {}
    for name, res in per_layer.items():
        if name == "total" or not isinstance(res, dict):
            continue
        for k, v in res.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                total[k] = total.get(k, 0.0) + float(v)
    return total


def _fits(model, ctx) -> bool:
    from functools import partial

    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    from fpgaprint.core.boards import check_resources

    total = _total(model.analysis(partial(res_estimation, fpgapart=ctx.board.part)))
    return not any(lv == "fail" for lv, _ in
                   check_resources(ctx.board, total, ctx.config.resource_warn))


def step_folding(model, ctx):
    """PE/SIMD: FINN+'s step_apply_folding_config for a folding JSON, its
    step_target_fps_parallelization for `target_fps`; without either, fpgaprint's ladder
    (100k FPS down to 100) takes the fastest whose estimate fits the board. Foldings FINN+'s
    RTL cannot run are changed to the nearest that it can (`rtlsim.foldrules`), before the
    fit check; each change is logged and listed in the fragment's `adjusted`."""
    bs = finn_steps()
    if ctx.config.folding_config:
        _check_folding_names(model, ctx.config.folding_config)
        model = bs.step_apply_folding_config(model, ctx.finn)
        return _safe(model, ctx, {"source": Path(ctx.config.folding_config).name})
    if ctx.config.target_fps:
        model = bs.step_target_fps_parallelization(model, ctx.finn)
        return _safe(model, ctx, {"target_fps": ctx.config.target_fps})
    for fps in FPS_LADDER:
        folded, adjusted = avoid_failing_foldings(bs.step_target_fps_parallelization(
            copy.deepcopy(model), ctx.finn_with(target_fps=fps)))
        if _fits(folded, ctx):
            return _safe(folded, ctx, {"target_fps": fps, "chosen": "fastest that fits"},
                         adjusted)
    return _safe(folded, ctx, {"target_fps": FPS_LADDER[-1], "chosen": "slowest tried"},
                 adjusted)


def _safe(model, ctx, folding: dict, adjusted: list[dict] | None = None):
    """(model, fragment) with foldings FINN+'s RTL cannot run changed, each change logged."""
    if adjusted is None:
        model, adjusted = avoid_failing_foldings(model)
    for a in adjusted:
        ctx.log(f"folding: {a['layer']} {a['attribute']} {a['from']} -> {a['to']}: "
                f"{a['reason']}")
    if adjusted:
        folding["adjusted"] = adjusted
    return model, {"folding": folding}


def _check_folding_names(model, path) -> None:
    """Every node a folding JSON names exists (FINN+ would ignore it silently)."""
    p = Path(path)
    try:
        cfg = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no such folding config") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not a JSON folding config ({e})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{p}: expected a JSON object of node names")
    names = {n.name for n in model.graph.node}
    for key, value in cfg.items():
        if key == "Defaults":
            continue
        if key not in names:
            raise InputError(f"{p}: folding entry {key!r} names no node of the accelerator; "
                             f"nodes: {', '.join(sorted(names))}")
        if not isinstance(value, dict):
            raise InputError(f"{p}: folding entry {key!r}: expected an object of attributes")


def step_minimize_hw_widths(model, ctx):
    """FINN+'s step_minimize_bit_width on the specialized, folded accelerator (1-bit
    weights kept), then its step_transpose_decomposition."""
    bs = finn_steps()
    model = _keep_one_bit_weights(model, lambda m: bs.step_minimize_bit_width(m, ctx.finn))
    return bs.step_transpose_decomposition(model, ctx.finn), {}


def step_estimates(model, ctx):
    """FINN+'s step_generate_estimate_reports; its JSON reports become the fragment."""
    model = finn_steps().step_generate_estimate_reports(model, ctx.finn)
    rdir = Path(ctx.finn.output_dir) / "report"
    per_layer = json.loads((rdir / "estimate_layer_resources.json").read_text())
    cycles = json.loads((rdir / "estimate_layer_cycles.json").read_text())
    perf = json.loads((rdir / "estimate_network_performance.json").read_text())
    clock_ns = ctx.finn.synth_clk_period_ns
    worst = int(perf.get("max_cycles") or 0)
    return model, {"estimates": {
        "resources_per_layer": {k: {kk: float(vv) for kk, vv in v.items()
                                    if isinstance(vv, (int, float))}
                                for k, v in per_layer.items() if k != "total"},
        "resources_total": _total(per_layer),
        "cycles_per_layer": {k: int(v) for k, v in cycles.items()},
        "max_cycles": worst,
        "clock_ns": clock_ns,
        "estimated_fps": (1e9 / (worst * clock_ns)) if worst else None,
    }}


IPGEN = Path("finn/ipgen")  # FINN+'s working copy of the generated sources (stable names)
HW_SRC = Path("hw/src")  # the package's copy: relative paths, part of the identity


def step_codegen(model, ctx):
    """FINN+'s step_hw_codegen (PrepareIP: each layer's RTL/HLS sources, no vendor tool), with
    FINN+'s data packing vectorized (`rtlsim.packing`).

    fpgaprint: each layer generates into finn/ipgen/LAYER (FINN+ would pick a random
    directory) and the sources are copied to hw/src/LAYER with the build directory's
    absolute path made relative to the package, so they belong to the package identity."""
    from finn.util.basic import getHWCustomOp
    from finn.util.fpgadataflow import is_hls_node, is_rtl_node
    from qonnx.transformation.general import GiveUniqueNodeNames

    from fpgaprint.compiler.rtlsim import packing

    model = model.transform(GiveUniqueNodeNames())
    ipgen = (ctx.out / IPGEN).resolve()
    part, clk = ctx.finn._resolve_fpga_part(), ctx.finn._resolve_hls_clk_period()
    with packing.installed():  # the same memory files, written without per-element packing
        for node in model.graph.node:
            if not (is_hls_node(node) or is_rtl_node(node)):
                continue
            d = ipgen / node.name
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
            inst = getHWCustomOp(node)
            inst.set_nodeattr("code_gen_dir_ipgen", str(d))
            inst.code_generation_ipgen(model, part, clk)  # what PrepareIP does, in a stable dir
        model = finn_steps().step_hw_codegen(model, ctx.finn)  # finds each layer's code
    files = export_sources(ctx.out, [n.name for n in model.graph.node])
    return model, {"sources": {"dir": HW_SRC.as_posix(), "files": files}}


def export_sources(out: Path, layers: list[str]) -> int:
    """Copy finn/ipgen/LAYER to hw/src/LAYER, the absolute ipgen path made package-relative
    in text files (memstream INIT_FILE paths, HLS scripts) and the FINN+ installation's path
    written `$::env(FINN_ROOT)`. Returns the number of files."""
    import finn

    root = out.resolve()
    finn_root = str(Path(finn.__file__).resolve().parent).encode()
    src_root, dst_root = root / IPGEN, root / HW_SRC
    if dst_root.exists():
        shutil.rmtree(dst_root)
    count = 0
    for layer in layers:
        src = src_root / layer
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = f.relative_to(src_root)
            dst = dst_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            data = f.read_bytes()
            if b"\0" not in data[:4096]:
                data = data.replace(str(src_root).encode() + b"/", HW_SRC.as_posix().encode()
                                    + b"/")
                data = data.replace(str(root).encode() + b"/", b"")
                data = data.replace(finn_root, b"$::env(FINN_ROOT)")
            dst.write_bytes(data)
            count += 1
    return count


@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable
    executable: bool = True  # python-exec works on the result (before partitioning)
    finn: tuple[str, ...] = ()  # the FINN+ step functions it calls (their code is a key)


STEPS: list[Step] = [
    Step("input_grid", step_input_grid),
    Step("thresholds", step_thresholds),  # compiler/monotonic.py
    Step("qonnx_to_finn", step_qonnx_to_finn, finn=("step_qonnx_to_finn",)),
    Step("tidy_up", step_tidy_up, finn=("step_tidy_up",)),
    Step("streamline", step_streamline, finn=("step_streamline",)),
    Step("convert_to_hw", step_convert_to_hw, finn=("step_convert_to_hw",)),
    Step("minimize_bit_width", step_minimize_bit_width,
         finn=("step_minimize_bit_width_initial",)),
    Step("dataflow_partition", step_dataflow_partition, False,
         ("step_create_dataflow_partition",)),  # checked via its parent graph
    Step("specialize_layers", step_specialize_layers, False, ("step_specialize_layers",)),
    Step("folding", step_folding, False, ("step_apply_folding_config",
                                          "step_target_fps_parallelization")),
    Step("minimize_hw_widths", step_minimize_hw_widths, False,
         ("step_minimize_bit_width", "step_transpose_decomposition")),
    Step("estimates", step_estimates, False, ("step_generate_estimate_reports",)),
    Step("codegen", step_codegen, False, ("step_hw_codegen",)),
]
GOLDEN_AFTER = "minimize_bit_width"
