"""The golden model, the build's graph executions and the fast executor run numpy's BLAS on one
thread, and give the caller back its own setting."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits


def _blas_threads() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_golden_model_executes_on_one_blas_thread(digits_build, monkeypatch):
    import finn.core.onnx_exec as onnx_exec

    from fpgaprint.compiler.equivalence import run_onnx
    from fpgaprint.core.golden import GoldenModel

    seen = []
    real = onnx_exec.execute_onnx

    def recording(*args, **kwargs):
        seen.append(_blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_exec, "execute_onnx", recording)
    golden = GoldenModel(digits_build.golden)
    x = np.random.default_rng(0).integers(0, 256, size=(5, 64))
    with threadpool_limits(2, user_api="blas"):
        assert _blas_threads() == {2}
        raw, _, _ = golden.run(x)
        logits = run_onnx(golden.model, x)
        assert _blas_threads() == {2}  # the caller's setting, restored
    assert seen and all(s == {1} for s in seen), seen
    assert raw.shape[0] == logits.shape[0] == 5


def test_fast_executor_runs_on_one_blas_thread(digits_build, monkeypatch):
    from fpgaprint.core.golden import GoldenModel
    from fpgaprint.fingerprint.intexec import IntExec, executor

    seen = []
    real = IntExec._layer

    def recording(self, *args, **kwargs):
        seen.append(_blas_threads())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(IntExec, "_layer", recording)
    golden = GoldenModel(digits_build.golden)
    ex = executor(golden)
    x = np.random.default_rng(0).integers(0, 256, size=(5, 64))
    key = next(k for k in golden.memories() if k.endswith("/weights"))
    with threadpool_limits(2, user_api="blas"):
        raw, _, labels = ex.run(x)
        flipped = ex.flip_labels(x, [(key, 0, 0)])
        assert _blas_threads() == {2}
    assert seen and all(s == {1} for s in seen), seen
    np.testing.assert_array_equal(raw, golden.run(x)[0])
    assert flipped.shape == (1, 5)
