"""A monotonic elementwise function followed by a quantizer, as a FINN+ `MultiThreshold`.

`Quant(f(X))` with f one of Sigmoid, Tanh, HardSigmoid, HardTanh (Clip) is a step function
of X. When X is on a known integer grid (X = affine(acc), acc the integer accumulator of a
MatMul/Gemm/Conv whose inputs are quantized), the steps are found by evaluating the source
graph's own nodes (f and the Quant, executed as every float stage executes them) on every
grid point, and the thresholds are put half-way between the grid points where the output
level changes. The result equals the source graph on every grid point (docs/thresholds.md).
FINN+ 1.6 would map Sigmoid and Tanh to polynomial approximations, which are not exact.
"""

from __future__ import annotations

import copy

import numpy as np
from onnx import TensorProto, helper

from fpgaprint.compiler.usernodes import USER_NODE, user_node
from fpgaprint.core.errors import UnsupportedModelError

MONOTONIC_OPS = {"Sigmoid", "Tanh", "HardSigmoid", "Clip"}
AFFINE_OPS = {"Add", "Sub", "Mul", "Div", "BatchNormalization"}  # with constant operands
PASS_THROUGH = {"Reshape", "Flatten", "Transpose", "Identity", "Squeeze", "Unsqueeze"}
MAX_GRID = 1 << 22  # grid points evaluated per function (channels × accumulator values)


def check_monotonic(model, node) -> bool:
    """Whether `node` is a function this pass turns into thresholds: one of MONOTONIC_OPS
    whose one consumer is a Quant."""
    if node.op_type not in MONOTONIC_OPS:
        return False
    consumers = model.find_consumers(node.output[0]) or []
    return len(consumers) == 1 and consumers[0].op_type == "Quant"


def step_thresholds(model, ctx):
    """fpgaprint's own step: every monotonic function → quantizer becomes a MultiThreshold
    with computed thresholds, then a Mul by the quantizer's scale."""
    done = []
    for node in list(model.graph.node):
        if check_monotonic(model, node):
            done.append(_convert(model, node))
        elif rounded_trunc(model, node):
            done.append(_convert_trunc(model, node))
    if done:
        from qonnx.transformation.general import RemoveUnusedTensors
        from qonnx.transformation.infer_shapes import InferShapes

        # the replaced nodes' constants go too: a leftover keeps its name while qonnx
        # renames the others, and may later collide with one of them
        model = model.transform(RemoveUnusedTensors()).transform(InferShapes())
        ctx.log(f"thresholds computed for {', '.join(done)}")
    return model, ({"thresholds": done} if done else {})


def _const(model, name):
    v = model.get_initializer(name)
    return None if v is None else np.asarray(v, dtype=np.float64)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Refused(Exception):
    pass


def _convert(model, fnode) -> str:
    who = user_node(model, fnode)
    try:
        return _convert_checked(model, fnode, who)
    except _Refused as e:
        raise UnsupportedModelError(f"{who}: {e}") from None


def _quant_params(model, quant):
    from qonnx.custom_op.general.quant import max_int, min_int

    scale, zero, bits = (_const(model, t) for t in quant.input[1:4])
    if scale is None or zero is None or bits is None:
        raise _Refused(f"its quantizer {quant.name} needs constant scale, zero point and bit "
                       "width")
    if np.any(zero != 0):
        raise _Refused(f"its quantizer {quant.name} has a zero point; thresholds need 0")
    b = float(bits.reshape(-1)[0])
    if b != int(b) or not 1 <= b <= 16:
        raise _Refused(f"its quantizer {quant.name} has {b:g} bits (1 to 16 supported)")
    signed, narrow = bool(_attr(quant, "signed", 1)), bool(_attr(quant, "narrow", 0))
    return scale, int(b), signed, narrow, min_int(signed, narrow, int(b)), \
        max_int(signed, narrow, int(b))


def _convert_checked(model, fnode, who) -> str:
    from qonnx.core.datatype import DataType

    quant = model.find_consumers(fnode.output[0])[0]
    s_o, bits, signed, _, qmin, qmax = _quant_params(model, quant)
    chain, producer = _affine_chain(model, fnode.input[0])
    acc_lo, acc_hi, to_p = _accumulator(model, producer)
    x_name = fnode.input[0]
    shape = model.get_tensor_shape(x_name)
    if shape is None or len(shape) < 2 or shape[1] != len(acc_lo):
        raise _Refused(f"its input {x_name} has shape {shape}, not (N, {len(acc_lo)}, ...)")
    span = int(np.max(acc_hi - acc_lo)) + 1
    if span * len(acc_lo) > MAX_GRID:
        raise _Refused(f"its input grid has {span} accumulator values × {len(acc_lo)} "
                       f"channels; at most {MAX_GRID} points are evaluated")
    k = acc_lo[None, :] + np.minimum(np.arange(span)[:, None], (acc_hi - acc_lo)[None, :])
    x, y = _evaluate(model, chain, fnode, quant, producer, to_p(k), len(shape))
    levels = np.rint(y / np.broadcast_to(s_o, y.shape) if s_o.size > 1 else y / float(s_o))
    thresholds = _thresholds(x, levels.astype(np.int64) - qmin, qmax - qmin, who)
    g = model.graph
    base = f"{fnode.name}_thresholds"
    dt = f"{'INT' if signed else 'UINT'}{bits}" if bits > 1 or signed else "BINARY"
    mt_out = f"{base}_out"
    add_constant(model, base, thresholds)
    mark = f"{USER_NODE}{who}"
    mt = helper.make_node("MultiThreshold", [x_name, base], [mt_out], name=base,
                          domain="qonnx.custom_op.general", out_dtype=dt,
                          out_bias=float(qmin), doc_string=mark,
                          data_layout="NCHW" if len(shape) == 4 else "NC")
    scale_name = quant.input[1]
    mul = helper.make_node("Mul", [mt_out, scale_name], [quant.output[0]],
                           name=f"{fnode.name}_scale", doc_string=mark)
    at = list(g.node).index(fnode)
    g.node.remove(fnode)
    g.node.remove(quant)
    g.node.insert(at, mul)
    g.node.insert(at, mt)
    model.set_tensor_datatype(mt_out, DataType[dt])
    return who


def add_constant(model, name, value) -> None:
    """A float32 constant with its value_info: qonnx renames only tensors it lists there
    (`get_all_tensor_names`), and a constant left out keeps its name while readable names
    are handed out, which may then collide with it."""
    value = np.asarray(value, dtype=np.float32)
    model.set_initializer(name, value)
    model.set_tensor_shape(name, list(value.shape))


def _affine_chain(model, name):
    """The constant-operand affine nodes between a MatMul/Gemm/Conv and `name`, in order."""
    chain = []
    for _ in range(16):
        node = model.find_producer(name)
        if node is None:
            break
        if node.op_type in ("MatMul", "Gemm", "Conv"):
            return chain[::-1], node
        if node.op_type not in AFFINE_OPS or len(model.find_consumers(node.output[0])) != 1:
            break
        others = node.input[1:]
        if not others or any(model.get_initializer(t) is None for t in others):
            break
        chain.append(node)
        name = node.input[0]
    raise _Refused("its input is not on a known integer grid (expected a MatMul, Gemm or "
                   "Conv of quantized tensors, then constant scales and biases, before it)")


def _grid_source(model, name):
    """(scale, min, max) of the integer grid a tensor is on: a Quant's output, or an integer
    tensor times a constant scalar (the input grid, an earlier MultiThreshold)."""
    from qonnx.core.datatype import DataType

    for _ in range(16):
        node = model.find_producer(name)
        if node is None:
            break
        if node.op_type in PASS_THROUGH:
            name = node.input[0]
            continue
        if node.op_type == "Quant":
            s, _, _, _, lo, hi = _quant_params(model, node)
            if s.size != 1:
                break
            return float(s.reshape(-1)[0]), lo, hi
        if node.op_type == "Mul":
            c = _const(model, node.input[1])
            dt = model.get_tensor_datatype(node.input[0])
            if c is not None and c.size == 1 and dt is not None and dt.is_integer() \
                    and dt != DataType["BIPOLAR"]:
                return float(c.reshape(-1)[0]), int(dt.min()), int(dt.max())
        break
    dt = model.get_tensor_datatype(name)
    if dt is not None and dt.is_integer() and dt != DataType["BIPOLAR"]:
        return 1.0, int(dt.min()), int(dt.max())
    raise _Refused(f"the layer before it reads {name}, which is not on a known integer grid "
                   "(a Quant with one scale and zero point 0)")


def _weights(model, producer):
    """Integer weights (out channels, fan-in) and their scale per out channel."""
    from qonnx.custom_op.general.quant import quant as qfun

    wq = model.find_producer(producer.input[1])
    if wq is None or wq.op_type != "Quant" or _const(model, wq.input[0]) is None:
        raise _Refused(f"{producer.op_type} {producer.name} has no quantized constant weights")
    s_w, bits, signed, narrow, _, _ = _quant_params(model, wq)
    w = _const(model, wq.input[0])
    mode = _attr(wq, "rounding_mode", b"ROUND")
    wf = qfun(w, s_w, np.zeros(1), np.array(float(bits)), signed, narrow,
              mode.decode() if isinstance(mode, bytes) else mode)
    s_full = np.broadcast_to(s_w, w.shape)
    w_int = np.rint(wf / s_full)
    if producer.op_type == "MatMul" or (producer.op_type == "Gemm"
                                        and not _attr(producer, "transB", 0)):
        w_int, s_full = w_int.T, s_full.T
    w_int = w_int.reshape(w_int.shape[0], -1)
    s_full = s_full.reshape(s_full.shape[0], -1)
    if np.any(s_full != s_full[:, :1]):
        raise _Refused(f"{producer.op_type} {producer.name}: weight scales vary within an "
                       "output channel")
    return w_int, s_full[:, 0]


def _accumulator(model, producer):
    """Per output channel: the accumulator's range and the map acc → producer output."""
    if producer.op_type == "Gemm" and (_attr(producer, "transA", 0)
                                       or _attr(producer, "alpha", 1.0) != 1.0
                                       or _attr(producer, "beta", 1.0) != 1.0):
        raise _Refused(f"Gemm {producer.name}: transA, alpha or beta not supported")
    s_a, a_lo, a_hi = _grid_source(model, producer.input[0])
    w_int, s_w = _weights(model, producer)
    lo = np.minimum(w_int * a_lo, w_int * a_hi).sum(axis=1).astype(np.int64)
    hi = np.maximum(w_int * a_lo, w_int * a_hi).sum(axis=1).astype(np.int64)
    bias = np.zeros(len(s_w))
    if len(producer.input) > 2 and producer.input[2]:
        b = _const(model, producer.input[2])
        if b is None:
            raise _Refused(f"{producer.op_type} {producer.name}: its bias is not a constant")
        bias = np.broadcast_to(b.reshape(-1), bias.shape).astype(np.float64)
    step = s_a * s_w

    def to_p(k):  # the producer's output for accumulator values k (float64 → float32)
        return (k * step[None, :] + bias[None, :]).astype(np.float32)

    return lo, hi, to_p


def _evaluate(model, chain, fnode, quant, producer, p, rank):
    """X (the function's input) and Y (the quantizer's output), (K, C) each, computed by the
    source graph's own nodes on producer outputs `p` (K, C)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    shape = [p.shape[0], p.shape[1]] + [1] * (rank - 2)
    nodes = [copy.deepcopy(n) for n in (*chain, fnode, quant)]
    inits = {t for n in nodes for t in n.input[1:] if t}
    inits |= {t for t in fnode.input[1:] if t}
    graph = helper.make_graph(
        nodes, "thresholds",
        [helper.make_tensor_value_info(producer.output[0], TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(quant.output[0], TensorProto.FLOAT, None)],
        [copy.deepcopy(t) for t in model.graph.initializer if t.name in inits])
    mini = ModelWrapper(helper.make_model(graph, opset_imports=model.model.opset_import))
    mini = mini.transform(InferShapes())
    ctx = execute_onnx(mini, {producer.output[0]: p.reshape(shape)},
                       return_full_exec_context=True)
    x = np.asarray(ctx[fnode.input[0]], dtype=np.float32).reshape(p.shape)
    y = np.asarray(ctx[quant.output[0]], dtype=np.float64).reshape(p.shape)
    return x, y


def _thresholds(x, count, n, who) -> np.ndarray:
    """(C, n) thresholds: for each channel and output level j = 1..n, a value between the
    largest grid input below level j and the smallest at or above it."""
    out = np.empty((x.shape[1], n), np.float32)
    for c in range(x.shape[1]):
        order = np.argsort(x[:, c], kind="stable")
        xs, ls = x[order, c], count[order, c]
        d = np.diff(ls)
        if np.any(d < 0):
            kind = "decreasing" if np.all(d <= 0) else "not monotonic"
            raise _Refused(f"the quantized function is {kind} in its input on the grid "
                           f"(channel {c}); only increasing functions become thresholds")
        gap = float(np.min(np.diff(np.unique(xs)))) if len(np.unique(xs)) > 1 else 1.0
        for j in range(1, n + 1):
            idx = int(np.searchsorted(ls, j, side="left"))
            if idx == 0:
                t = np.float32(float(xs[0]) - gap / 2)
            elif idx == len(xs):  # never reached: above every grid point
                t = max(np.float32(float(xs[-1]) + gap / 2), np.nextafter(xs[-1], np.inf))
            else:
                t = np.float32((float(xs[idx - 1]) + float(xs[idx])) / 2)
                if not xs[idx - 1] < t <= xs[idx]:
                    t = xs[idx]
            out[c, j - 1] = t
    return out


# ---------------------------------------------------------------- rounded truncation


def rounded_trunc(model, node) -> bool:
    """A Trunc that rounds other than FLOOR (Brevitas' TruncAvgPool2d default is ROUND), with
    constant scalar parameters: a monotonic step function of its integer input."""
    if node.op_type != "Trunc":
        return False
    mode = _attr(node, "rounding_mode", b"FLOOR")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    params = [_const(model, t) for t in node.input[1:]]
    return (mode.upper() != "FLOOR" and len(node.input) >= 6  # Trunc v2: with output scale
            and all(p is not None and p.size == 1 for p in params))


def _convert_trunc(model, node) -> str:
    """Trunc(ROUND) → Trunc(FLOOR) keeping every input bit (the exact integer sum, which
    FINN+ maps to its average pool) → MultiThreshold on that sum → Mul(output scale)."""
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.general.quant import max_int, min_int

    who = user_node(model, node)
    producer = model.find_producer(node.input[0])
    if producer is not None and producer.op_type in ("AveragePool", "GlobalAveragePool"):
        who = f"average pool {user_node(model, producer).split(' ', 1)[-1]}"
    scale = float(_const(model, node.input[1]).reshape(-1)[0])
    if float(_const(model, node.input[2]).reshape(-1)[0]) != 0:
        raise UnsupportedModelError(f"{who}: its truncation has a zero point; thresholds "
                                    "need 0")
    in_bits = int(_const(model, node.input[3]).reshape(-1)[0])
    out_bits = int(_const(model, node.input[5]).reshape(-1)[0])
    signed, narrow = bool(_attr(node, "signed", 0)), bool(_attr(node, "narrow", 0))
    q = np.arange(min_int(signed, False, in_bits), max_int(signed, False, in_bits) + 1)
    x = (q * scale).astype(np.float32)[:, None]
    y = _run_single(model, node, x)
    out_scale = float(_const(model, node.input[4]).reshape(-1)[0])
    qmin, qmax = min_int(signed, narrow, out_bits), max_int(signed, narrow, out_bits)
    try:
        thr = _thresholds(x, np.rint(y / out_scale).astype(np.int64) - qmin, qmax - qmin, who)
    except _Refused as e:
        raise UnsupportedModelError(f"{who}: {e}") from None
    shape = model.get_tensor_shape(node.input[0])
    thr = np.repeat(thr, shape[1], axis=0)
    g = model.graph
    exact, base, mt_out = f"{node.name}_sum", f"{node.name}_thresholds", f"{node.name}_levels"
    # the FLOOR Trunc keeps the exact sum: output bits and scale those of its input
    floor = copy.deepcopy(node)
    del floor.attribute[:]
    floor.attribute.extend([helper.make_attribute("rounding_mode", "FLOOR"),
                            helper.make_attribute("signed", int(signed)),
                            helper.make_attribute("narrow", 0)])
    floor.output[0] = exact
    floor.input[4], floor.input[5] = node.input[1], node.input[3]
    mark = f"{USER_NODE}{who}"
    add_constant(model, base, thr)
    scale_name = f"{node.name}_out_scale"
    add_constant(model, scale_name, np.asarray(out_scale, dtype=np.float32))
    dt = f"{'INT' if signed else 'UINT'}{out_bits}"
    mt = helper.make_node("MultiThreshold", [exact, base], [mt_out], name=base,
                          domain="qonnx.custom_op.general", out_dtype=dt,
                          out_bias=float(qmin), doc_string=mark,
                          data_layout="NCHW" if len(shape) == 4 else "NC")
    mul = helper.make_node("Mul", [mt_out, scale_name], [node.output[0]],
                           name=f"{node.name}_scale", doc_string=mark)
    at = list(g.node).index(node)
    g.node.remove(node)
    for n in (mul, mt, floor):
        g.node.insert(at, n)
    model.set_tensor_datatype(mt_out, DataType[dt])
    return who


def _run_single(model, node, x):
    """`node` of `model` (its constants) executed on `x` as its first input."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    n = copy.deepcopy(node)
    graph = helper.make_graph(
        [n], "single", [helper.make_tensor_value_info(n.input[0], TensorProto.FLOAT,
                                                      list(x.shape))],
        [helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, None)],
        [copy.deepcopy(t) for t in model.graph.initializer if t.name in n.input[1:]])
    mini = ModelWrapper(helper.make_model(graph, opset_imports=model.model.opset_import))
    ctx = execute_onnx(mini.transform(InferShapes()), {n.input[0]: x})
    return np.asarray(ctx[n.output[0]], dtype=np.float64)
