"""The golden model and the build's graph executions run numpy's BLAS on one thread, and give
the caller back its own setting."""

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
