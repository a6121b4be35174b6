"""The golden model: the unspecialized FINN HW graph, executed bit-exactly in python mode.

Weights and thresholds of the HW layers are the accelerator's memories; `memories()` exposes
them as integer images in their FINN datatypes and `flipped()` returns a copy with bits
flipped in those datatypes, as an upset or a tampered bitstream would.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.errors import InputError
from compiler.finn_env import ensure_finn

HW_DOMAIN = "finn.custom_op.fpgadataflow"
# HW op -> indices of its inputs that are memories (weights, thresholds)
MEMORY_INPUTS = {"MVAU": (1, 2), "VVAU": (1, 2), "Thresholding": (1,)}


@dataclass
class MemoryImage:
    """One memory of the accelerator: integer values in a FINN datatype."""

    layer: str
    tensor: str
    kind: str  # "weights" or "thresholds"
    values: np.ndarray  # int64
    datatype: str
    bits: int
    signed: bool


def flip_bit(value: int, bit: int, bits: int, signed: bool) -> int:
    """Flip `bit` of `value` in a `bits`-wide two's-complement (or unsigned) word."""
    if not 0 <= bit < bits:
        raise InputError(f"bit {bit} out of range for a {bits}-bit word")
    word = (int(value) & ((1 << bits) - 1)) ^ (1 << bit)
    if signed and word >= 1 << (bits - 1):
        word -= 1 << bits
    return word


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
        self.input_shape = tuple(self.model.get_tensor_shape(self.input_name))
        self.raw_shape = tuple(self.model.get_tensor_shape(self.raw_output))
        self.input_datatype = self.model.get_tensor_datatype(self.input_name).name
        self.raw_datatype = self.model.get_tensor_datatype(self.raw_output).name

    # -- execution -------------------------------------------------------------------------
    def run(self, x_int: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(raw int64 (N, R), logits float32 (N, C), labels int64 (N,)) for N input vectors."""
        from finn.core.onnx_exec import execute_onnx

        x = np.asarray(x_int)
        per = int(np.prod(self.input_shape[1:]))
        if x.size % per:
            raise InputError(
                f"input of {x.size} values does not fit the model input {self.input_shape}"
            )
        x = x.reshape((-1, *self.input_shape[1:]))
        raws, outs = [], []
        for row in x:
            ctx = execute_onnx(
                self.model, {self.input_name: row[None].astype(np.float32)},
                return_full_exec_context=True,
            )
            raws.append(np.asarray(ctx[self.raw_output]).reshape(-1))
            outs.append(np.asarray(ctx[self.output_name], dtype=np.float32).reshape(-1))
        raw = np.rint(np.stack(raws)).astype(np.int64)
        logits = np.stack(outs)
        return raw, logits, logits.argmax(axis=1).astype(np.int64)

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
            flat[index] = flip_bit(flat[index], bit, img.bits, img.signed)
        return self.with_memories(changed)


def resolve_memory(mems: dict[str, MemoryImage], layer: str) -> str:
    """Accept `MVAU_0/weights` or a bare layer name (its weights, else its thresholds)."""
    if layer in mems:
        return layer
    for kind in ("weights", "thresholds"):
        if f"{layer}/{kind}" in mems:
            return f"{layer}/{kind}"
    raise InputError(f"no memory {layer!r}; memories: {', '.join(mems)}")
