"""Monotonic function → quantizer as thresholds: `Linear → Sigmoid → 4-bit quantizer →
Linear` and a Tanh variant build bit-exact on Pynq-Z1 with their stitched RTL simulated; the
thresholds give the source graph's levels on every point of the input's integer grid; a
decreasing function is refused naming the node. Expectations come from the build under test
and from the source graph."""

from __future__ import annotations

import copy
import re
import types

import models
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from torch import nn

from fpgaprint.core.golden import GoldenModel

ACTS = {"Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh, "HardSigmoid": nn.Hardsigmoid,
        "Clip": nn.Hardtanh}  # ONNX op: the torch module that exports as it


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh"])
def test_activation_between_layers_builds_exact(tmp_path, op):
    module, shape = models.activation_mlp(ACTS[op]())
    res, stages = models.build_exported(module, shape, tmp_path)
    name = next(n.name for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == op)
    for s in ("convert_to_hw", "minimize_bit_width", "dataflow_parent", "rtlsim_stitched"):
        assert stages[s]["exact"] and stages[s]["max_abs_diff"] == 0.0, s
    assert res.report["thresholds"] == [f"{op} {name}"]
    ops = [n.op_type for n in GoldenModel(res.golden_path).model.graph.node]
    assert ops.count("Thresholding") == 1 and op not in ops and "PWPolyF" not in ops
    assert res.report["rtl"]["stitched"]["built"]
    assert all(r["simulated"] for r in res.report["rtl"]["layers"])


def _run_nodes(model, nodes, x_name, out_name, x):
    """`nodes` of `model` (with its constants) executed on X = `x` (K, C)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    used = {t for n in nodes for t in n.input}
    g = helper.make_graph(
        [copy.deepcopy(n) for n in nodes], "g",
        [helper.make_tensor_value_info(x_name, TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        [copy.deepcopy(t) for t in model.graph.initializer if t.name in used])
    m = ModelWrapper(helper.make_model(g, opset_imports=model.model.opset_import))
    return execute_onnx(m.transform(InferShapes()), {x_name: x})[out_name]


@pytest.mark.parametrize("op", sorted(ACTS))
def test_thresholds_equal_the_source_on_every_grid_point(op):
    """Every accumulator value the first layer can produce, through the source's own
    function and quantizer and through the computed MultiThreshold: the same levels."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.general.quant import quant
    from qonnx.util.cleanup import cleanup_model

    from fpgaprint.compiler.monotonic import step_thresholds

    module, shape = models.activation_mlp(ACTS[op]())
    src = cleanup_model(ModelWrapper(models.export(module, shape, _tmp() / "m.onnx").as_posix()))
    conv, frag = step_thresholds(copy.deepcopy(src), types.SimpleNamespace(log=lambda m: None))
    assert frag["thresholds"] and op not in {n.op_type for n in conv.graph.node}
    fn = next(n for n in src.graph.node if n.op_type == op)
    q = src.find_consumers(fn.output[0])[0]
    gemm = src.find_producer(fn.input[0])
    # the grid, from the source: input quantizer × weight quantizer, bias per channel
    in_q, w_q = (src.find_producer(t) for t in gemm.input[:2])
    s_a = float(src.get_initializer(in_q.input[1]))
    s_w = float(src.get_initializer(w_q.input[1]))
    narrow = next(a.i for a in w_q.attribute if a.name == "narrow")
    w = quant(src.get_initializer(w_q.input[0]), np.float32(s_w), np.float32(0),
              np.float32(3), True, bool(narrow), "ROUND")
    w_int = np.rint(w / s_w)  # (out, in)
    lo = np.minimum(w_int * -8, w_int * 7).sum(axis=1)  # inputs in [-8, 7]
    hi = np.maximum(w_int * -8, w_int * 7).sum(axis=1)
    k = np.arange(lo.min(), hi.max() + 1)[:, None]
    x = (k * s_a * s_w + src.get_initializer(gemm.input[2])[None, :]).astype(np.float32)
    want = _run_nodes(src, [fn, q], fn.input[0], q.output[0], x)
    mt = conv.find_consumers(fn.input[0])[0]
    mul = conv.find_consumers(mt.output[0])[0]
    got = _run_nodes(conv, [mt, mul], fn.input[0], q.output[0], x)
    s_o = float(src.get_initializer(q.input[1]))
    on_grid = (lo[None, :] <= k) & (k <= hi[None, :])  # each channel's reachable values
    assert len(np.unique(want[on_grid])) > 2  # the grid spans several output levels
    np.testing.assert_array_equal(np.rint(got / s_o)[on_grid], np.rint(want / s_o)[on_grid])


def _tmp():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="fpgaprint-test-"))


def test_decreasing_function_is_refused_naming_the_node(tmp_path, run_cli):
    module, shape = models.activation_mlp(nn.Hardsigmoid())
    path = models.export(module, shape, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    node = next(n for n in proto.graph.node if n.op_type == "HardSigmoid")
    del node.attribute[:]
    node.attribute.extend([helper.make_attribute("alpha", -0.2),
                           helper.make_attribute("beta", 0.5)])
    onnx.save(proto, str(path))
    code, _, err = run_cli("build", path, "--out", tmp_path / "o", "--allow-unsigned")
    assert code == 2, err
    assert f"HardSigmoid {node.name}" in err and "decreasing" in err, err
    lines = [line for line in err.strip().splitlines()  # progress lines (not a terminal)
             if line.strip() and not re.match(r"\s*(\d\d:\d\d:\d\d |warning:)", line)]
    assert err.count("error:") == 1 and len(lines) == 1, err
