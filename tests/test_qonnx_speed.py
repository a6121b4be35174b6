"""qonnx's per-node datatype check with numpy's maximum (`core/qonnx_speed.py`): the same
rounding, the same values, the same error as qonnx's own."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from fpgaprint.core import qonnx_speed
from fpgaprint.core.finn_env import ensure_finn


def _model():
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    m = ModelWrapper(qonnx_make_model(graph))
    m.set_tensor_datatype("y", DataType["INT4"])
    return m


def test_installed_with_finn_settings():
    from qonnx.util import basic

    ensure_finn()
    assert basic.max is qonnx_speed.array_max


@pytest.mark.parametrize("values", [
    np.array([0.5, -3.0, 2.25]), np.array([np.nan, 1.0]), np.array([1.0, np.nan]),
    np.arange(12.0)[::-1], np.array([7])])
def test_array_max_is_the_builtin_max(values):
    np.testing.assert_equal(qonnx_speed.array_max(values), builtins.max(values))
    assert qonnx_speed.array_max(3, 5) == 5 and qonnx_speed.array_max([2, 9, 4]) == 9
    with pytest.raises(ValueError):
        qonnx_speed.array_max(np.array([]))


def test_execution_rounds_and_refuses_as_qonnx_does():
    from qonnx.core.onnx_exec import execute_onnx

    ensure_finn()
    m = _model()
    x = np.random.default_rng(0).integers(-8, 8, (1, 64)).astype(np.float32)
    near = x + np.float32(1e-6)
    assert np.array_equal(execute_onnx(m, {"x": near})["y"], x)  # rounded to INT4
    far = x.copy()
    far[0, 5] = 2.5
    with pytest.raises(Exception, match="Rounding error is too high"):
        execute_onnx(m, {"x": far})
