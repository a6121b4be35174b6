"""Bit-exact equivalence across build stages: the same inputs through every executable graph.

Integer-domain stages (from streamlining on) must agree exactly; float stages (Brevitas,
QONNX, FINN-ONNX) to float32 round-off; labels exactly, except near-ties.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fpgaprint.core.errors import EquivalenceError
from fpgaprint.core.threads import one_blas_thread

# ops whose execution treats batch rows independently: graphs made of these run the whole
# batch in one execute_onnx call (qonnx's ChangeBatchSize rewrites the shapes)
BATCH_SAFE_OPS = {"MatMul", "Gemm", "Mul", "Add", "Sub", "Div", "Quant", "BipolarQuant",
                  "Trunc", "MultiThreshold", "Relu", "BatchNormalization", "Reshape",
                  "Flatten", "Identity", "Conv", "MaxPool", "AveragePool", "Transpose", "Pad"}
HW_DOMAIN = "finn.custom_op.fpgadataflow"


def run_onnx(model, x: np.ndarray) -> np.ndarray:
    """Outputs (N, C) of a QONNX/FINN graph: batched where the graph allows, else per vector."""
    ops = {n.op_type for n in model.graph.node}
    if any(n.domain.startswith(HW_DOMAIN) for n in model.graph.node):
        from fpgaprint.core.golden import GoldenModel

        return GoldenModel(model).run(x)[1]
    with one_blas_thread():
        if ops <= BATCH_SAFE_OPS and len(x) > 1:
            try:
                return _run_batched(model, x)
            except Exception:  # a graph the rewrite cannot handle runs per vector below
                pass
        return _run_per_vector(model, x)


def _run_per_vector(model, x: np.ndarray) -> np.ndarray:
    from finn.core.onnx_exec import execute_onnx

    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    shape = model.get_tensor_shape(iname)
    outs = []
    for row in np.asarray(x, dtype=np.float32).reshape((-1, *shape[1:])):
        outs.append(np.asarray(execute_onnx(model, {iname: row[None]})[oname]).reshape(-1))
    return np.stack(outs).astype(np.float32)


def _run_batched(model, x: np.ndarray) -> np.ndarray:
    import copy

    from finn.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes

    iname, oname = model.graph.input[0].name, model.graph.output[0].name
    shape = model.get_tensor_shape(iname)
    xb = np.asarray(x, dtype=np.float32).reshape((-1, *shape[1:]))
    batched = copy.deepcopy(model).transform(ChangeBatchSize(len(xb))).transform(InferShapes())
    out = np.asarray(execute_onnx(batched, {iname: xb})[oname])
    return out.reshape(len(xb), -1).astype(np.float32)


def run_torch(module, x: np.ndarray, input_shape) -> np.ndarray:
    import torch

    with torch.no_grad():
        t = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape((-1, *input_shape)))
        return module.eval()(t).detach().numpy().reshape(len(t), -1).astype(np.float32)


@dataclass
class StageResult:
    stage: str
    exact: bool  # integer-domain stage: compared bit for bit
    max_abs_diff: float
    label_mismatches: int
    ties: int
    ok: bool
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class EquivalenceChecker:
    """Feeds the same vectors to each stage and compares with the previous one."""

    x_int: np.ndarray
    grid: object  # core.grid.InputGrid
    tie_tol: float = 1e-4
    results: list[StageResult] = field(default_factory=list)
    _prev: tuple[str, np.ndarray, bool] | None = None

    @property
    def x_float(self) -> np.ndarray:
        return self.grid.to_float(self.x_int)

    def add(self, stage: str, out: np.ndarray, exact: bool, seconds: float = 0.0,
            rows: int | None = None) -> StageResult:
        """Compare `out` with the previous stage (its first `rows` vectors when given); raise
        EquivalenceError on a mismatch."""
        out = np.asarray(out, dtype=np.float32)
        prev_name = self._prev[0] if self._prev else None
        if self._prev is None:
            res = StageResult(stage, exact, 0.0, 0, 0, True, seconds)
        else:
            pname, prev, pexact = self._prev
            prev = prev if rows is None else prev[:rows]
            if prev.shape != out.shape:
                raise EquivalenceError(
                    f"stage {stage!r} outputs shape {out.shape}, {pname!r} gave {prev.shape}"
                )
            diff = float(np.max(np.abs(out - prev))) if out.size else 0.0
            scale = float(np.max(np.abs(prev))) or 1.0
            top2 = np.sort(prev, axis=1)[:, -2:] if prev.shape[1] > 1 else None
            near_tie = (
                (top2[:, 1] - top2[:, 0]) <= self.tie_tol * scale
                if top2 is not None else np.zeros(len(prev), bool)
            )
            mism = prev.argmax(1) != out.argmax(1)
            bad_labels = int(np.sum(mism & ~near_tie))
            both_exact = exact and pexact
            value_ok = diff == 0.0 if both_exact else diff <= 1e-4 * scale + 1e-6
            res = StageResult(stage, both_exact, diff, bad_labels, int(np.sum(mism & near_tie)),
                              value_ok and bad_labels == 0, seconds)
        self.results.append(res)
        if rows is None:
            self._prev = (stage, out, exact)
        if not res.ok:
            kind = "bit-exact" if res.exact else "float32 round-off"
            raise EquivalenceError(
                f"equivalence broken at stage {stage!r}: differs from {prev_name!r} "
                f"(max |diff| {res.max_abs_diff:.3g}, expected {kind}; "
                f"{res.label_mismatches} label mismatches)"
            )
        return res


def sample_inputs(shape, grid, n: int, seed: int, data: np.ndarray | None = None):
    """n vectors on the input grid: uniform random, plus data samples when given."""
    rng = np.random.default_rng(seed)
    parts = [grid.random(rng, (n, *shape))]
    if data is not None and len(data):
        parts.append(grid.to_int(data[: n].reshape((-1, *shape))))
    return np.concatenate(parts).astype(np.int64)
