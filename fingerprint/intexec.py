"""A fast, exact executor of simple golden graphs, for many weight variants at once.

Golden graphs made of Reshape/Flatten, Thresholding, MVAU (plain matrix product, optional
multi-thresholding), and Mul/Add by constants (FINN's TFC and MLP topologies) are executed
with numpy in float64: products and sums of the graph's integers are exact there, so raw
outputs and labels equal FINN's python execution (`GoldenModel.run`; tested). The final
Mul/Add run in float32 as FINN runs them.

Used to place boundary vectors and to measure thousands of weight faults (bit flips,
stuck-at-zero neurons) per second. Other graphs raise `Unsupported`; callers fall back to
`GoldenModel`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.threads import one_blas_thread
from fpgaprint.core.words import flip as flip_word

EXACT_FLOAT64_BITS = 53
_BATCH_VALUES = 1 << 22  # values of changed rows run through the later layers at once


class Unsupported(InputError):
    """The golden graph holds an op this executor does not run."""


@dataclass
class _Layer:
    op: str  # "reshape", "thr", "mvau", "mul", "add"
    name: str = ""
    weights: str | None = None  # memory key of an MVAU's weights
    thr_key: str | None = None  # memory key of the thresholds
    thresholds: np.ndarray | None = None  # (C, B) or (1, B)
    out_bias: float = 0.0
    bipolar: bool = False
    const: np.ndarray | None = None


class IntExec:
    """Exact numpy execution of a golden graph; weights can be overridden per call."""

    def __init__(self, golden):
        from qonnx.core.datatype import DataType
        from qonnx.custom_op.registry import getCustomOp

        self.golden = golden
        m = golden.model
        mems = golden.memories()
        self.weights = {k: v.values.astype(np.float64) for k, v in mems.items()
                        if k.endswith("/weights")}
        self.mems = mems
        self.layers: list[_Layer] = []
        self.raw_index = None
        for node in m.graph.node:
            op = node.op_type
            if op in ("Reshape", "Flatten"):
                self.layers.append(_Layer("reshape", node.name))
            elif op in ("Mul", "Add"):
                c = m.get_initializer(node.input[1])
                if c is None:
                    raise Unsupported(f"{node.name}: {op} of two tensors")
                self.layers.append(_Layer(op.lower(), node.name,
                                          const=np.asarray(c, np.float32).reshape(1, -1)))
            elif op in ("MVAU", "Thresholding"):
                inst = getCustomOp(node)
                odt = inst.get_nodeattr("outputDataType")
                bipolar = odt == "BIPOLAR"
                if op == "MVAU":
                    if inst.get_nodeattr("binaryXnorMode") or (
                            inst.get_nodeattr("inputDataType") == "BIPOLAR"
                            and inst.get_nodeattr("weightDataType") == "BIPOLAR"):
                        raise Unsupported(f"{node.name}: XNOR-popcount MVAU")
                    w = DataType[inst.get_nodeattr("weightDataType")]
                    x = DataType[inst.get_nodeattr("inputDataType")]
                    bound = (inst.get_nodeattr("MW") * max(abs(w.min()), abs(w.max()))
                             * max(abs(x.min()), abs(x.max())))
                    if bound >= 2 ** EXACT_FLOAT64_BITS:
                        raise Unsupported(f"{node.name}: sums exceed float64's exact range")
                    no_act = inst.get_nodeattr("noActivation") == 1
                    thr = None if no_act else np.asarray(m.get_initializer(node.input[2]),
                                                         np.float64)
                    self.layers.append(_Layer(
                        "mvau", node.name, weights=f"{node.name}/weights",
                        thr_key=None if no_act else f"{node.name}/thresholds", thresholds=thr,
                        out_bias=-1.0 if bipolar else float(inst.get_nodeattr("ActVal")),
                        bipolar=bipolar))
                else:
                    thr = np.asarray(m.get_initializer(node.input[1]), np.float64)
                    self.layers.append(_Layer("thr", node.name,
                                              thr_key=f"{node.name}/thresholds", thresholds=thr,
                                              out_bias=float(inst.get_nodeattr("ActVal")),
                                              bipolar=bipolar))
            else:
                raise Unsupported(f"{node.name}: op {op}")
            if node.output[0] == golden.raw_output:
                self.raw_index = len(self.layers) - 1
        if self.raw_index is None:
            raise Unsupported("raw output is not the output of a supported layer")

    @staticmethod
    def _threshold(acc: np.ndarray, layer: _Layer, t: np.ndarray | None = None) -> np.ndarray:
        """`layer`'s activation of `acc` (N, C) against thresholds `t` (C, B) (default: the
        layer's; one row for all channels), or of `acc` (N,) against one row per value."""
        t = layer.thresholds if t is None else np.asarray(t, np.float64)
        y = np.zeros(acc.shape, np.int64)
        for col in t.T:  # one threshold per channel (or one for all) at a time: no (N, C, B)
            y += acc >= col
        y = y.astype(np.float64)
        if layer.bipolar:
            return 2 * y - 1
        return y + layer.out_bias

    @staticmethod
    def _of_channels(layer: _Layer, j) -> np.ndarray:
        """The threshold rows of channels `j` (an index or an array of them): (len(j), B), or
        the layer's one row for all channels."""
        t = layer.thresholds
        return t[np.atleast_1d(j)] if t.shape[0] > 1 else t

    def _layer(self, layer: _Layer, h: np.ndarray, mems: dict) -> tuple[np.ndarray, ...]:
        """(output, pre-threshold accumulator or None); `mems` overrides memories by key."""
        if layer.op == "reshape":
            return h.reshape(len(h), -1), None
        if layer.op == "thr":
            return self._threshold(h, layer, mems.get(layer.thr_key)), None
        if layer.op == "mvau":
            w = mems.get(layer.weights)
            acc = h @ (self.weights[layer.weights] if w is None else np.asarray(w, np.float64))
            if layer.thresholds is None:
                return acc, acc
            return self._threshold(acc, layer, mems.get(layer.thr_key)), acc
        h32 = h.astype(np.float32)
        return (h32 * layer.const if layer.op == "mul" else h32 + layer.const), None

    def trace(self, x_int: np.ndarray, mems: dict | None = None,
              stuck: dict | None = None) -> list[np.ndarray]:
        """Every layer's input and the final output: `trace[i]` is the input of layer i.

        `mems` overrides memories (weights or thresholds, keyed like `memories()`); `stuck`
        forces outputs of layers (by name) to 0 on the given neurons (stuck-at-zero)."""
        weights = mems or {}
        h = np.asarray(x_int, np.float64).reshape(len(x_int), -1)
        out = [h]
        with one_blas_thread():  # as the golden model: idle BLAS threads spin on a busy core
            for layer in self.layers:
                h = self._layer(layer, h, weights)[0]
                if stuck and layer.name in stuck:
                    h = h.copy()
                    h[:, stuck[layer.name]] = 0
                out.append(h)
        return out

    def run(self, x_int: np.ndarray, mems: dict | None = None, stuck: dict | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(raw int64, logits float32, labels) as `GoldenModel.run`."""
        t = self.trace(x_int, mems, stuck)
        raw = np.rint(t[self.raw_index + 1]).astype(np.int64)
        logits = np.asarray(t[-1], np.float32)
        return raw, logits, logits.argmax(1).astype(np.int64)

    def flip_labels(self, x_int: np.ndarray, flips: list[tuple[str, int, int]],
                    trace: list[np.ndarray] | None = None, raw: bool = False):
        """Labels (len(flips), N) with each single weight-bit flip applied alone; with `raw`,
        also whether each vector's raw output changed (len(flips), N).

        Only the flipped neuron's column is recomputed in its layer, and only the vectors
        whose value there changed go on (`_propagate`), those of the flips of one layer
        together.
        """
        with one_blas_thread():
            return self._flip_labels(x_int, flips, trace, raw)

    def _flip_labels(self, x_int, flips, trace, raw):
        trace = trace if trace is not None else self.trace(x_int)
        base = np.asarray(trace[-1], np.float32).argmax(1)
        index = {layer.weights: i for i, layer in enumerate(self.layers) if layer.weights}
        out = np.repeat(base[None], len(flips), axis=0)
        changed = np.zeros(out.shape, bool)
        moves: dict[int, list[tuple[np.ndarray, ...]]] = {}  # per layer: (flip, rows, j, col)
        held, width = 0, max(h.shape[1] for h in trace)
        for k, (key, flat, bit) in enumerate(flips):
            if key not in index:
                raise InputError(f"{key}: not a weight memory of this golden model")
            li = index[key]
            layer = self.layers[li]
            w = self.weights[key]
            i, j = np.unravel_index(flat, w.shape)
            old = int(w[i, j])
            delta = float(flip_word(old, bit, self.mems[key].datatype) - old)
            h_in = trace[li]
            rows = np.flatnonzero(h_in[:, i] != 0)
            if delta == 0 or not len(rows):
                continue
            acc_j = h_in[rows] @ w[:, j] + delta * h_in[rows, i]
            col = acc_j if layer.thresholds is None else \
                self._threshold(acc_j, layer, self._of_channels(layer, j))
            moved = col != trace[li + 1][rows, j]
            if moved.any():
                rows = rows[moved]
                moves.setdefault(li, []).append((np.full(len(rows), k), rows,
                                                 np.full(len(rows), j), col[moved]))
                held += len(rows)
                if held * width >= _BATCH_VALUES:
                    self._propagate_all(moves, trace, out, changed)
                    moves, held = {}, 0
        self._propagate_all(moves, trace, out, changed)
        return (out, changed) if raw else out

    def _propagate_all(self, moves: dict, trace: list[np.ndarray], out: np.ndarray,
                       changed: np.ndarray) -> None:
        for li, parts in moves.items():
            ks, rows, jj, vals = (np.concatenate(a) for a in zip(*parts))
            self._propagate(li, ks, rows, jj, vals, trace, out, changed)

    def _propagate(self, li: int, ks: np.ndarray, rows: np.ndarray, jj: np.ndarray,
                   vals: np.ndarray, trace: list[np.ndarray], out: np.ndarray,
                   changed: np.ndarray) -> None:
        """Run layer `li`'s outputs, those of the traced `rows` with column `jj` set to `vals`
        (one flip `ks` each), through the later layers; write their labels and raw-output
        changes into `out` and `changed`.

        Through thresholding layers only the one changed column moves, and a row whose value
        there no longer differs from the trace is done: the rest of it is the trace's.
        """
        if li == self.raw_index:
            changed[ks, rows] = True
        lj = li + 1
        while lj < len(self.layers) and self.layers[lj].op == "thr":
            layer = self.layers[lj]
            vals = self._threshold(vals, layer, self._of_channels(layer, jj))
            keep = vals != trace[lj + 1][rows, jj]
            ks, rows, jj, vals = ks[keep], rows[keep], jj[keep], vals[keep]
            if lj == self.raw_index:
                changed[ks, rows] = True
            lj += 1
        h = trace[lj][rows].copy()
        h[np.arange(len(rows)), jj] = vals
        for lj in range(lj, len(self.layers)):
            h = self._layer(self.layers[lj], h, {})[0]
            if lj == self.raw_index:
                changed[ks, rows] = (h != trace[lj + 1][rows]).any(1)
        out[ks, rows] = np.asarray(h, np.float32).argmax(1)


def executor(golden) -> IntExec | None:
    """An IntExec of `golden`, or None when its graph is not supported."""
    try:
        return IntExec(golden)
    except Unsupported:
        return None


def flipped_memories(mems: dict, flips: list[tuple[str, int, int]]) -> dict[str, np.ndarray]:
    """Memory values (keyed like `memories()`) with the bits flipped, as overrides."""
    out: dict[str, np.ndarray] = {}
    for key, index, bit in flips:
        arr = out.setdefault(key, mems[key].values.copy())
        flat = arr.reshape(-1)
        flat[index] = flip_word(int(flat[index]), bit, mems[key].datatype)
    return out
