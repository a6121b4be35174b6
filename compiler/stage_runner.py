"""Stage executions for the equivalence check, overlapped with the build.

Graphs that run a whole batch in one execution are executed inline (milliseconds). The rest
(convolutional graphs after streamlining, the partitioned parent graph) run one vector per
execution, which can take longer than FINN's passes: they go to a worker process on the other
core while the build goes on. `drain` hands the outputs to the checker in stage order, so the
first stage that differs is still the one named.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fpgaprint.compiler.equivalence import BATCH_SAFE_OPS, HW_DOMAIN, EquivalenceChecker, run_onnx


def batchable(model) -> bool:
    """Whether `run_onnx` executes this graph's batch in one go."""
    if any(n.domain.startswith(HW_DOMAIN) for n in model.graph.node):
        from fpgaprint.core.golden import GoldenModel

        return GoldenModel(model).batchable
    return {n.op_type for n in model.graph.node} <= BATCH_SAFE_OPS


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


# imported once by the forkserver the worker is forked from (a new interpreter importing them
# costs about 2.5 s of CPU per build)
WORKER_PRELOAD = ("fpgaprint.compiler.stage_runner", "fpgaprint.compiler.rtlsim.layers",
                  "fpgaprint.compiler.rtlsim.segments",
                  "fpgaprint.core.golden", "finn.core.onnx_exec",
                  "finn.custom_op.fpgadataflow.rtl", "finn.custom_op.fpgadataflow.hls")


def _init_worker(finn_dir: str, env: dict[str, str], cwd: str) -> None:
    """In the worker: this build's environment and directory (not the forkserver's), and
    the library warnings routed to the build log."""
    import logging

    from fpgaprint.core.finn_env import ensure_finn
    from fpgaprint.core.forkserver import adopt
    from fpgaprint.core.liblog import route

    adopt(cwd, env)
    if not os.environ.get("FPGAPRINT_DEBUG"):  # the worker's library warnings: the build log
        handler = logging.FileHandler(Path(finn_dir).parent / "build.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        route(handler)
    ensure_finn(finn_dir)


def _stage_outputs(path: str, x: np.ndarray) -> tuple[np.ndarray, float]:
    from qonnx.core.modelwrapper import ModelWrapper

    t0 = time.perf_counter()
    out = _quiet(run_onnx, ModelWrapper(path), x)
    return out, time.perf_counter() - t0


def partition_outputs(parent_path: str, golden_path: str, x: np.ndarray):
    """Final outputs and accelerator (partition) outputs of the parent graph, and the golden
    model's raw outputs, for the vectors x."""
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaprint.core.golden import GoldenModel

    t0 = time.perf_counter()
    parent = ModelWrapper(parent_path)
    sdp = parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]
    iname, oname = parent.graph.input[0].name, parent.graph.output[0].name
    shape = parent.get_tensor_shape(iname)
    outs, raws = [], []
    for row in x.reshape((-1, *shape[1:])):
        ctx = _quiet(execute_onnx, parent, {iname: row[None].astype(np.float32)}, True)
        outs.append(np.asarray(ctx[oname]).reshape(-1))
        raws.append(np.asarray(ctx[sdp.output[0]]).reshape(-1))
    golden_raw = _quiet(GoldenModel(golden_path).run, x)[0]
    return (np.stack(outs), np.rint(np.stack(raws)).astype(np.int64), golden_raw,
            time.perf_counter() - t0)


def _guarded(fn, *args) -> tuple:
    """(result, None) or (None, the exception): the caller decides when to raise it."""
    import pickle

    try:
        return fn(*args), None
    except Exception as e:  # handed to the task's callback
        try:
            pickle.dumps(e)
        except Exception:
            e = RuntimeError(f"{type(e).__name__}: {e}")
        return None, e


CHUNK = 8  # vectors per worker task: small tasks let the main process share the tail


@dataclass
class _Task:
    """One worker task; `steal` runs it here instead if the worker has not started it."""

    future: object  # concurrent.futures.Future
    fn: object
    args: tuple
    value: tuple | None = None

    def steal(self) -> None:
        if self.future.cancel():
            self.value = self.fn(*self.args)

    def result(self) -> tuple:
        return self.value if self.value is not None else self.future.result()


@dataclass
class _Pending:
    stage: str
    exact: bool
    result: tuple | None = None  # (outputs, seconds) once known
    chunks: list[_Task] | None = None  # while on the worker
    rows: int | None = None
    partition: bool = False
    on_result: object = None  # a `task`: called with its result (or exception) by drain


class StageRunner:
    """Queue of stage executions; use as a context manager (the worker is shut down)."""

    def __init__(self, finn_dir: Path):
        self.finn_dir = str(finn_dir)
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[_Pending] = []

    def __enter__(self) -> "StageRunner":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _worker(self) -> ProcessPoolExecutor:
        if self._pool is None:
            from fpgaprint.core.forkserver import forkserver

            self._pool = ProcessPoolExecutor(1, mp_context=forkserver(WORKER_PRELOAD),
                                             initializer=_init_worker,
                                             initargs=(self.finn_dir, dict(os.environ),
                                                       os.getcwd()))
        return self._pool

    def stage(self, name: str, model, path: Path, x: np.ndarray, exact: bool) -> None:
        """Execute the stage saved at `path` (in memory as `model`) on x."""
        if batchable(model):
            t0 = time.perf_counter()
            out = _quiet(run_onnx, model, x)
            self._pending.append(_Pending(name, exact, (out, time.perf_counter() - t0)))
        else:
            chunks = [_Task(self._worker().submit(_stage_outputs, str(path), x[i:i + CHUNK]),
                            _stage_outputs, (str(path), x[i:i + CHUNK]))
                      for i in range(0, len(x), CHUNK)]
            self._pending.append(_Pending(name, exact, chunks=chunks))

    def partition(self, parent_path: Path, golden, golden_path: Path, x: np.ndarray) -> None:
        """Check the partitioned parent graph: inline when the golden model (`golden`, in
        memory) is a cheap batchable graph, else on the worker."""
        args = (str(parent_path), str(golden_path), x)
        if batchable(golden):
            self._pending.append(_Pending("dataflow_parent", True, partition_outputs(*args),
                                          rows=len(x), partition=True))
        else:
            task = _Task(self._worker().submit(partition_outputs, *args), partition_outputs, args)
            self._pending.append(_Pending("dataflow_parent", True, chunks=[task],
                                          rows=len(x), partition=True))

    def task(self, name: str, fn, args: tuple, on_result, inline: bool = False) -> None:
        """Run fn(*args) on the worker, or here and now when `inline` (cheap work is done
        before a worker would have started); `drain` calls on_result(result, error) in queue
        order (fn must be importable and its result picklable)."""
        if inline:
            self._pending.append(_Pending(name, True, _guarded(fn, *args), on_result=on_result))
            return
        t = _Task(self._worker().submit(_guarded, fn, *args), _guarded, (fn, *args))
        self._pending.append(_Pending(name, True, chunks=[t], on_result=on_result))

    @staticmethod
    def _collect(p: _Pending) -> tuple:
        """The result of a queued item, from the worker or from this process."""
        if p.result is not None:
            return p.result
        results = [t.result() for t in p.chunks]
        if p.partition or p.on_result is not None:
            return results[0]
        return np.concatenate([r[0] for r in results]), sum(r[1] for r in results)

    def drain(self, eq: EquivalenceChecker) -> None:
        """Compare every queued stage, in order (raises EquivalenceError at the first)."""
        from fpgaprint.core.errors import EquivalenceError

        # the main process is free now: it takes the tasks the worker has not started, last
        # first, while the worker works through the earlier ones
        for p in reversed(self._pending):
            for task in reversed(p.chunks or []):
                task.steal()
        for p in self._pending:
            res = self._collect(p)
            if p.on_result is not None:
                p.on_result(*res)
                continue
            if not p.partition:
                out, secs = res
                eq.add(p.stage, out, p.exact, secs)
                continue
            outs, raws, golden_raw, secs = res
            eq.add(p.stage, outs, exact=True, seconds=secs, rows=p.rows)
            if not np.array_equal(raws, golden_raw):
                raise EquivalenceError("equivalence broken at stage 'dataflow_partition': the "
                                       "accelerator's raw output differs from the golden model's")
        self._pending.clear()
