"""The golden model: the unspecialized FINN HW graph, executed bit-exactly in python mode.

Weights and thresholds of the HW layers are the accelerator's memories; `memories()` exposes
them as integer images in their FINN datatypes and `flipped()` returns a copy with bits
flipped in those datatypes, as an upset or a tampered bitstream would.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.finn_env import ensure_finn
from fpgaprint.core.threads import one_blas_thread
from fpgaprint.core.words import MemoryImage, flip

HW_DOMAIN = "finn.custom_op.fpgadataflow"
# HW op -> indices of its inputs that are memories (weights, thresholds)
MEMORY_INPUTS = {"MVAU": (1, 2), "VVAU": (1, 2), "Thresholding": (1,)}
# ops whose python execution treats the rows of a batch independently once the batch
# dimension is set; graphs made only of these run a whole batch per FINN execution
ROWWISE_OPS = {"MVAU", "Thresholding", "Reshape", "Flatten", "Mul", "Add", "Sub", "Div",
               "Relu", "Identity"}
MAX_BATCH = 64
KEEP_ORDER = ("Reshape", "Flatten")  # host-side head ops that keep the row-major order
INPUT_OPS = (*KEEP_ORDER, "Transpose")  # host-side ops a board applies before its accelerator
EXACT_FLOAT32_BITS = 24  # integers up to 2^24 are exact in float32, in any summation order
# output heads the host applies after the accelerator; the label is the argmax of what the
# first of them reads (they keep its order per row)
HEAD_OPS = {"Softmax", "LogSoftmax", "Sigmoid", "ArgMax", "TopK"}
# every op the host may apply after the accelerator, with the attributes `io.host_ops`
# records for it (a package's list is checked against this closed table and the graph)
HOST_TAIL_OPS = {"Mul": (), "Add": (), "Sub": (), "Div": (), "Max": (), "Reshape": (),
                 "Flatten": (), "Transpose": (), "Identity": (), "Sigmoid": (),
                 "Softmax": ("axis",), "LogSoftmax": ("axis",),
                 "ArgMax": ("axis", "keepdims", "select_last_index"),
                 "TopK": ("axis", "k", "largest", "sorted")}
MAX_HOST_OPS = 16
HEAD_AXIS_DEFAULT = {"Softmax": -1, "LogSoftmax": -1, "Sigmoid": None, "ArgMax": 0, "TopK": -1}


class GoldenModel:
    """Executes a golden HW graph; input: integers on the input grid, one row per vector."""

    def __init__(self, path_or_model, raw_output: str | None = None):
        ensure_finn()
        from qonnx.core.modelwrapper import ModelWrapper

        if isinstance(path_or_model, ModelWrapper):
            self.model = path_or_model
        else:
            path = Path(path_or_model)
            if not path.is_file():
                raise InputError(f"{path}: no such golden model")
            try:
                self.model = ModelWrapper(str(path))
            except Exception as e:
                raise InputError(f"{path}: not an ONNX model ({e})") from e
        g = self.model.graph
        hw = [n for n in g.node if n.domain.startswith(HW_DOMAIN)]
        if not hw:
            raise InputError("not a golden model: the graph has no FINN HW layers")
        self.input_name = g.input[0].name
        self.output_name = g.output[0].name
        self.raw_output = raw_output or hw[-1].output[0]
        self.host_ops = host_ops_of(self.model, self.raw_output)
        self.scores = scores_tensor(self.model, self.raw_output)
        self.input_shape = tuple(self.model.get_tensor_shape(self.input_name))
        self.raw_shape = tuple(self.model.get_tensor_shape(self.raw_output))
        self.input_datatype = self.model.get_tensor_datatype(self.input_name).name
        self.raw_datatype = self.model.get_tensor_datatype(self.raw_output).name
        self._batchable: bool | None = None
        self._batch_models: dict = {}  # batch size -> batched copy of self.model

    # -- execution -------------------------------------------------------------------------
    def accelerator_inputs(self, x: np.ndarray) -> np.ndarray:
        """`x` as the accelerator's first HW layer receives it (`accelerator_inputs`)."""
        return accelerator_inputs(self.model, x)

    def run(
        self, x_int: np.ndarray, batch: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(raw int64 (N, R), logits float32 (N, C), labels int64 (N,)) for N input vectors.

        With `batch`, graphs that allow it (see `batchable`) run up to MAX_BATCH vectors per
        FINN execution; results are identical to one execution per vector.
        """
        x = np.asarray(x_int)
        per = int(np.prod(self.input_shape[1:]))
        if x.size % per:
            raise InputError(
                f"input of {x.size} values does not fit the model input {self.input_shape}"
            )
        x = x.reshape((-1, *self.input_shape[1:]))
        n = x.shape[0]
        if n == 0:
            out_shape = self.model.get_tensor_shape(self.output_name)
            return (np.zeros((0, int(np.prod(self.raw_shape[1:]))), np.int64),
                    np.zeros((0, int(np.prod(out_shape[1:]))), np.float32),
                    np.zeros((0,), np.int64))
        out = self.tensors(x, dict.fromkeys((self.raw_output, self.output_name, self.scores)),
                           batch)
        raw = np.rint(out[self.raw_output].reshape(n, -1)).astype(np.int64)
        logits = out[self.output_name].reshape(n, -1).astype(np.float32)
        scores = out[self.scores].reshape(n, -1)
        return raw, logits, scores.argmax(axis=1).astype(np.int64)

    def deployed_scores(self, raw: np.ndarray) -> np.ndarray:
        """Raw accelerator outputs (N, R) through the host-side tail up to the tensor the
        label is the argmax of (`scores`): float64 (N, C), the deployed model's class scores
        (a per-class scale or bias on the host changes margins, so they are computed, not
        assumed). One row at a time, as a board's host side does."""

        raw = np.asarray(raw, dtype=np.float64)
        n = len(raw)
        tail = _tail(self.model, self.raw_output)
        last = self.model.find_producer(self.scores)
        if not tail or self.scores == self.raw_output or last is None:
            return raw.reshape(n, -1)
        tail = tail[:tail.index(last) + 1]
        if all(t.op_type in KEEP_ORDER or t.op_type == "Identity" for t in tail):
            return raw.reshape(n, -1)
        return run_tail(self.model, self.raw_output, raw, self.scores).astype(np.float64)

    def tensors(self, x_int: np.ndarray, names, batch: bool = True) -> dict[str, np.ndarray]:
        """Values of the named tensors for N >= 1 input vectors, each (N, *shape[1:]) where
        shape is the tensor's shape for one vector (batched as `run` is)."""
        from finn.core.onnx_exec import execute_onnx

        names = list(names)
        x = np.asarray(x_int)
        per = int(np.prod(self.input_shape[1:]))
        if x.size % per or x.size == 0:
            raise InputError(
                f"input of {x.size} values does not fit the model input {self.input_shape}"
            )
        shapes = {}
        for name in names:
            shapes[name] = self.model.get_tensor_shape(name)
            if shapes[name] is None:
                raise InputError(f"the golden model has no tensor {name!r}")
        x = x.reshape((-1, *self.input_shape[1:]))
        n = x.shape[0]
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        step = MAX_BATCH if batch and self.batchable else 1
        with one_blas_thread():
            for start in range(0, n, step):
                rows = x[start:start + step]
                size = 1 << (len(rows) - 1).bit_length()  # a few cached batch sizes
                if size > len(rows):
                    rows = np.concatenate([rows, np.repeat(rows[:1], size - len(rows), axis=0)])
                model = self.model if size == 1 else self._batched(size)
                ctx = execute_onnx(model, {self.input_name: rows.astype(np.float32)},
                                   return_full_exec_context=True)
                keep = min(step, n - start)
                for name in names:
                    value = np.asarray(ctx[name]).reshape(size, *shapes[name][1:])
                    parts[name].append(value[:keep])
        return {name: np.concatenate(v) for name, v in parts.items()}

    @property
    def batchable(self) -> bool:
        """Whether a batch can run in one execution: only row-wise ops, batch dimension 1
        everywhere, and dot products whose datatypes keep float32 sums exact."""
        if self._batchable is None:
            self._batchable = self._batch_plan() is not None
        return self._batchable

    def _batch_plan(self) -> dict | None:
        """Tensor shapes, node attributes and reshape targets to rewrite for a batch, or None."""
        from qonnx.core.datatype import DataType
        from qonnx.custom_op.registry import getCustomOp

        m, g = self.model, self.model.graph
        inits = {t.name for t in g.initializer}
        plan: dict = {"tensors": [], "vectors": [], "reshapes": []}
        for node in g.node:
            if node.op_type in HEAD_OPS:
                if _attr(node, "axis", HEAD_AXIS_DEFAULT[node.op_type]) == 0:
                    return None  # a head across the batch dimension
                continue
            if node.op_type not in ROWWISE_OPS:
                return None
            if node.domain.startswith(HW_DOMAIN):
                inst = getCustomOp(node)
                try:
                    if list(inst.get_nodeattr("numInputVectors")) != [1]:
                        return None
                except AttributeError:  # a HW layer without a vector count (e.g. Reshape)
                    return None
                if node.op_type == "MVAU":
                    # bound sums by the datatypes, not the minimized accumulator: a
                    # flipped weight may exceed what the accumulator was sized for
                    w = DataType[inst.get_nodeattr("weightDataType")]
                    x = DataType[inst.get_nodeattr("inputDataType")]
                    bound = (inst.get_nodeattr("MW") * max(abs(w.min()), abs(w.max()))
                             * max(abs(x.min()), abs(x.max())))
                    if bound >= 2 ** EXACT_FLOAT32_BITS:
                        return None
                plan["vectors"].append(node.name)
            if node.op_type == "Reshape":
                target = m.get_initializer(node.input[1])
                if target is None or target.size == 0 or int(target[0]) not in (1, -1):
                    return None
                if int(target[0]) == 1:
                    plan["reshapes"].append(node.input[1])
        for vi in (*g.input, *g.output, *g.value_info):
            if vi.name in inits:
                continue
            shape = m.get_tensor_shape(vi.name)
            if not shape or shape[0] != 1:
                return None
            plan["tensors"].append(vi.name)
        return plan

    def _batched(self, size: int):
        """A copy of the model with batch dimension `size` (cached per size)."""
        from qonnx.custom_op.registry import getCustomOp

        cache = self._batch_models
        if size not in cache:
            plan = self._batch_plan()
            model = copy.deepcopy(self.model)
            for name in plan["tensors"]:
                shape = model.get_tensor_shape(name)
                model.set_tensor_shape(name, [size, *shape[1:]])
            for node in model.graph.node:
                if node.name in plan["vectors"]:
                    getCustomOp(node).set_nodeattr("numInputVectors", [size])
            for name in plan["reshapes"]:
                target = model.get_initializer(name).copy()
                target[0] = size
                model.set_initializer(name, target)
            cache[size] = model
        return cache[size]

    # -- memories --------------------------------------------------------------------------
    def memories(self) -> dict[str, MemoryImage]:
        """The HW layers' weight and threshold memories, keyed `layer/kind`."""
        out = {}
        for node in self.model.graph.node:
            for idx in MEMORY_INPUTS.get(node.op_type, ()):
                if idx >= len(node.input):
                    continue
                name = node.input[idx]
                init = self.model.get_initializer(name)
                if init is None:
                    continue
                dt = self.model.get_tensor_datatype(name)
                kind = "thresholds" if (node.op_type == "Thresholding" or idx == 2) else "weights"
                out[f"{node.name}/{kind}"] = MemoryImage(
                    node.name, name, kind, np.rint(init).astype(np.int64), dt.name,
                    dt.bitwidth(), dt.signed(),
                )
        return out

    def with_memories(self, images: dict[str, np.ndarray]) -> "GoldenModel":
        """A copy whose memories (keyed like `memories()`) hold the given values."""
        mems = self.memories()
        model = copy.deepcopy(self.model)
        for key, values in images.items():
            if key not in mems:
                raise InputError(f"no memory {key!r}; memories: {', '.join(mems)}")
            model.set_initializer(mems[key].tensor, np.asarray(values).astype(np.float32))
        return GoldenModel(model, raw_output=self.raw_output)

    def check_host_ops(self, declared) -> None:
        """A package's `io.host_ops` (validated) must be exactly the graph's host tail."""
        if check_host_ops(declared) != self.host_ops:
            raise InputError(f"package io.host_ops {declared!r} is not the golden model's host "
                             f"tail {self.host_ops!r}")

    def flipped(self, flips: list[tuple[str, int, int]]) -> "GoldenModel":
        """A copy with bits flipped: (memory key or layer name, flat index, bit)."""
        mems = self.memories()
        changed: dict[str, np.ndarray] = {}
        for layer, index, bit in flips:
            key = resolve_memory(mems, layer)
            img = mems[key]
            arr = changed.setdefault(key, img.values.copy())
            flat = arr.reshape(-1)
            if not 0 <= index < flat.size:
                raise InputError(f"index {index} out of range for {key} ({flat.size} words)")
            flat[index] = flip(int(flat[index]), bit, img.datatype)
        return self.with_memories(changed)


def resolve_memory(mems: dict[str, MemoryImage], layer: str) -> str:
    """Accept `MVAU_0/weights` or a bare layer name (its weights, else its thresholds)."""
    if layer in mems:
        return layer
    for kind in ("weights", "thresholds"):
        if f"{layer}/{kind}" in mems:
            return f"{layer}/{kind}"
    raise InputError(f"no memory {layer!r}; memories: {', '.join(mems)}")


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _tail(model, raw_output: str) -> list:
    nodes = list(model.graph.node)
    producer = model.find_producer(raw_output)
    return nodes[nodes.index(producer) + 1:] if producer is not None else []


def run_tail(model, raw_output: str, raw: np.ndarray, name: str) -> np.ndarray:
    """Raw accelerator outputs (N, R) through the golden graph's host-side tail, one row at a
    time as a board's host does: tensor `name` per row, float32 (N, values); `raw` itself
    when `name` is the raw output or there is no tail."""
    from qonnx.core.onnx_exec import execute_onnx

    raw = np.asarray(raw)
    n = len(raw)
    tail = _tail(model, raw_output)
    last = model.find_producer(name)
    if not tail or name == raw_output or last is None or last not in tail:
        return raw.reshape(n, -1).astype(np.float32)
    tail = tail[:tail.index(last) + 1]
    shape = model.get_tensor_shape(raw_output)
    with one_blas_thread():
        out = [np.asarray(execute_onnx(
            model, {raw_output: row.reshape(shape).astype(np.float32)},
            return_full_exec_context=True, start_node=tail[0], end_node=tail[-1])[name],
            dtype=np.float32).reshape(-1) for row in raw.reshape(n, -1)]
    return np.stack(out) if out else np.zeros((0, int(np.prod(model.get_tensor_shape(name)
                                                               [1:]))), np.float32)


def host_ops_of(model, raw_output: str) -> list[dict]:
    """The host ops after the accelerator, in order: op type and the attributes HOST_TAIL_OPS
    names (TopK's `k` from its constant input). Refuses an op outside that table."""
    from onnx import helper

    out = []
    for node in _tail(model, raw_output):
        if node.op_type not in HOST_TAIL_OPS or node.domain not in ("", "ai.onnx"):
            raise InputError(f"golden model: host-side {node.op_type} node {node.name!r} after "
                             f"the accelerator; allowed there: {', '.join(sorted(HOST_TAIL_OPS))}")
        spec: dict = {"op": node.op_type}
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        for key in HOST_TAIL_OPS[node.op_type]:
            if key == "k":
                k = model.get_initializer(node.input[1]) if len(node.input) > 1 else None
                if k is None or np.asarray(k).size != 1:
                    raise InputError(f"golden model: TopK node {node.name!r} needs a constant k")
                spec["k"] = int(np.asarray(k).reshape(-1)[0])
            elif key in attrs:
                spec[key] = int(attrs[key])
        out.append(spec)
    return out


def scores_tensor(model, raw_output: str) -> str:
    """The tensor whose argmax is the label: what the first output head reads, else the
    graph's output."""
    for node in _tail(model, raw_output):
        if node.op_type in HEAD_OPS:
            return node.input[0]
    return model.graph.output[0].name


# bounds of the recorded attributes: (min, max)
_ATTR_RANGE = {"axis": (-8, 7), "keepdims": (0, 1), "select_last_index": (0, 0),
               "k": (1, 1 << 20), "largest": (1, 1), "sorted": (0, 1)}


def check_host_ops(spec) -> list[dict]:
    """Validate `io.host_ops` as read from a package (untrusted): a list of at most
    MAX_HOST_OPS entries, each an op of HOST_TAIL_OPS with only its own integer attributes,
    each within bounds (heads that keep the argmax: largest values, first index on ties)."""
    if not isinstance(spec, list) or len(spec) > MAX_HOST_OPS:
        raise InputError(f"package metadata io.host_ops: expected a list of at most "
                         f"{MAX_HOST_OPS} ops")
    for i, op in enumerate(spec):
        where = f"package metadata io.host_ops[{i}]"
        if not isinstance(op, dict) or op.get("op") not in HOST_TAIL_OPS:
            raise InputError(f"{where}: expected {{'op': one of "
                             f"{', '.join(sorted(HOST_TAIL_OPS))}}}")
        allowed = HOST_TAIL_OPS[op["op"]]
        for key, value in op.items():
            if key == "op":
                continue
            lo, hi = _ATTR_RANGE.get(key, (0, -1))
            if key not in allowed or isinstance(value, bool) or not isinstance(value, int) \
                    or not lo <= value <= hi:
                raise InputError(f"{where}: {op['op']} attribute {key}={value!r} not allowed")
    return spec


def accelerator_inputs(model, x: np.ndarray) -> np.ndarray:
    """The vectors `x` (B, ...) of the golden graph `model` (a qonnx ModelWrapper) as the
    accelerator's first HW layer receives them, (B, values): the graph's host-side head (e.g. a
    convolution's NCHW -> NHWC Transpose) applied, one vector at a time. Integers stay exact
    (a head only moves values)."""
    from qonnx.core.onnx_exec import execute_onnx

    nodes = list(model.graph.node)
    first = next(i for i, n in enumerate(nodes) if n.domain.startswith(HW_DOMAIN))
    head = nodes[:first]
    x = np.asarray(x)
    if all(n.op_type in KEEP_ORDER for n in head):
        return x.reshape(len(x), -1)
    bad = next((n for n in head if n.op_type not in INPUT_OPS), None)
    if bad is not None:
        raise InputError(f"host-side {bad.op_type} node {bad.name!r} before the accelerator; "
                         f"a board applies only {', '.join(INPUT_OPS)} there")
    name, inp = nodes[first].input[0], model.graph.input[0].name
    shape = tuple(model.get_tensor_shape(inp))[1:]
    x = x.reshape((-1, *shape))
    with one_blas_thread():
        return np.stack([np.asarray(execute_onnx(
            model, {inp: row[None].astype(np.float32)}, return_full_exec_context=True,
            start_node=head[0], end_node=head[-1])[name]) for row in x]).reshape(len(x), -1) \
            .astype(x.dtype)
