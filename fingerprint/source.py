"""Models as the fingerprint code sees them: anything that maps float inputs to logits.

A model is given as a path (.pt checkpoint, QONNX or golden .onnx), as `zoo:NAME` (trained
with its default seed) or as a torch module. Torch models keep their module so generators can
take gradients; golden graphs run through `compiler.golden`, QONNX graphs through the
compiler's stage execution (`compiler.equivalence.run_onnx`, batched where it can).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fpgaprint.core.errors import InputError

ZOO_PREFIX = "zoo:"
DEFAULT_SEED = 0


def state_dict_sha256(module: nn.Module) -> str:
    """SHA-256 of the state dict contents (stable across re-saves), as the compiler hashes it."""
    from fpgaprint.compiler.modelio import state_sha256

    return state_sha256(module)


@dataclass
class Model:
    """A model with its input shape, class count, kind and content hash."""

    input_shape: tuple[int, ...]
    num_classes: int
    kind: str  # "float", "brevitas", "qonnx" or "golden"
    sha256: str
    name: str
    module: nn.Module | None = None
    runner: Any = None
    zoo: str | None = None
    meta: dict = field(default_factory=dict)
    grid: Any = None  # core.grid.InputGrid, found on first use (see `input_grid`)

    def input_grid(self, bits: int = 8):
        """The accelerator's input grid for this model: its input quantizer's datatype and
        scale, else the default UINT<bits> grid (x = q / (2^bits - 1))."""
        from fpgaprint.core.grid import InputGrid

        if self.grid is None:
            if self.module is not None:
                from fpgaprint.compiler.frontend import module_grid

                self.grid = module_grid(self.module, self.input_shape, bits)
            else:
                self.grid = InputGrid(bits)
        return self.grid

    @property
    def differentiable(self) -> bool:
        return self.module is not None

    def logits(self, x: np.ndarray, batch: int = 512) -> np.ndarray:
        """Logits for float inputs (on the input grid's range) of shape (N, *input_shape)."""
        x = np.asarray(x, dtype=np.float32).reshape((-1, *self.input_shape))
        if self.module is None:
            return np.asarray(self.runner.logits(x), dtype=np.float32)
        self.module.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                out.append(self.module(torch.from_numpy(x[i : i + batch])).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1).astype(np.int64)


def from_module(module: nn.Module, input_shape: tuple[int, ...], num_classes: int = 10,
                name: str = "module", kind: str | None = None, zoo: str | None = None) -> Model:
    """Wrap a torch module (float or Brevitas) as a fingerprint `Model`."""
    if kind is None:
        brevitas = any(type(m).__module__.startswith("brevitas.nn") for m in module.modules())
        kind = "brevitas" if brevitas else "float"
    module.eval()
    return Model(tuple(input_shape), num_classes, kind, state_dict_sha256(module), name,
                 module=module, zoo=zoo)


def train_zoo(name: str, seed: int = DEFAULT_SEED) -> Model:
    """Train a zoo model exactly as the compiler does for `zoo:NAME` and wrap it."""
    from fpgaprint.compiler import zoo

    ckpt = zoo.make(name, seed=seed)
    m = from_module(ckpt.model, ckpt.input_shape, ckpt.num_classes, f"zoo:{ckpt.zoo}",
                    ckpt.kind, ckpt.zoo)
    m.meta = dict(ckpt.meta)
    return m


def load_model(spec: str | Path | nn.Module | Model, input_shape: tuple[int, ...] | None = None
               ) -> Model:
    """Resolve a model given as `zoo:NAME`, a .pt/.onnx path, a torch module or a Model."""
    if isinstance(spec, Model):
        return spec
    if isinstance(spec, nn.Module):
        shape = input_shape or getattr(spec, "input_shape", None)
        if shape is None:
            raise InputError("a torch module needs its input shape (without batch)")
        return from_module(spec, tuple(shape))
    text = str(spec)
    if text.startswith(ZOO_PREFIX):
        return train_zoo(text[len(ZOO_PREFIX):])
    path = Path(text)
    if not path.is_file():
        raise InputError(f"{path}: no such model file (give a .pt, .onnx or zoo:NAME)")
    if path.suffix == ".onnx":
        return _load_onnx(path)
    from fpgaprint.compiler import modelio

    ckpt = modelio.load(path)
    m = from_module(ckpt.model, ckpt.input_shape, ckpt.num_classes, str(path), ckpt.kind,
                    ckpt.zoo)
    m.meta = dict(ckpt.meta)
    return m


class GoldenRunner:
    """A golden HW graph as a runner: float inputs are projected onto the input grid."""

    kind = "golden"

    def __init__(self, golden, grid=8):
        from fpgaprint.core.grid import InputGrid

        self.golden = golden
        self.grid = grid if isinstance(grid, InputGrid) else InputGrid(int(grid))
        self.input_shape = tuple(golden.input_shape)

    def raw(self, x: np.ndarray) -> np.ndarray:
        return self.golden.run(self.grid.to_int(x).reshape(len(x), -1))[0]

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.golden.run(self.grid.to_int(x).reshape(len(x), -1))[1]


class QonnxRunner:
    """A QONNX model executed as the compiler executes its stages."""

    kind = "qonnx"

    def __init__(self, model):
        self.model = model
        g = model.graph
        self.input_name = g.input[0].name
        self.output_name = g.output[0].name
        self.input_shape = tuple(model.get_tensor_shape(self.input_name))

    def logits(self, x: np.ndarray) -> np.ndarray:
        from fpgaprint.compiler.equivalence import run_onnx

        rows = np.asarray(x, np.float32).reshape((-1, *self.input_shape[1:]))
        return run_onnx(self.model, rows)


def _onnx_runner(path: Path):
    """A golden graph (FINN HW layers) or a QONNX graph."""
    from fpgaprint.core.finn_env import ensure_finn
    from fpgaprint.core.golden import HW_DOMAIN, GoldenModel

    ensure_finn()
    from qonnx.core.modelwrapper import ModelWrapper

    try:
        model = ModelWrapper(str(path))
    except Exception as e:  # onnx raises several types for a bad file
        raise InputError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from e
    g = model.graph
    if not g.node or not g.input or not g.output:  # an empty file parses as an empty model
        raise InputError(f"{path}: not an ONNX model (a graph with {len(g.node)} nodes, "
                         f"{len(g.input)} inputs and {len(g.output)} outputs)")
    if any(n.domain.startswith(HW_DOMAIN) for n in model.graph.node):
        return GoldenRunner(GoldenModel(model))
    return QonnxRunner(model)


def _load_onnx(path: Path) -> Model:
    from fpgaprint.compiler.modelio import file_sha256

    runner = _onnx_runner(path)
    shape = tuple(int(s) for s in runner.input_shape)
    if len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    ncls = int(getattr(runner, "num_classes", 10))
    sha = str(getattr(runner, "sha256", "") or file_sha256(path))
    return Model(shape, ncls, str(runner.kind), sha, str(path), runner=runner)
