"""Output heads kept on the host: a Softmax-headed classifier builds bit-exact on Pynq-Z1
(its stitched RTL simulated), the package's io lists the host ops, the virtual board applies
them, and a package's host ops are checked against a closed table. Expectations come from
the build under test."""

from __future__ import annotations

import copy
import json

import models
import numpy as np
import pytest
from onnx import TensorProto, helper
from torch import nn

from fpgaprint.compiler.build import build_model
from fpgaprint.compiler.config import BuildConfig
from fpgaprint.core.errors import InputError
from fpgaprint.core.golden import GoldenModel, check_host_ops
from fpgaprint.core.package import check_io, verify_package


@pytest.fixture(scope="module")
def softmax(tmp_path_factory, keypair):
    from fpgaprint.fingerprint.generate import GenParams, generate
    from fpgaprint.fingerprint.source import from_module

    d = tmp_path_factory.mktemp("softmax")
    module, shape = models.softmax_mlp()
    onnx_path = models.export(module, shape, d / "softmax.onnx")
    generate(from_module(module, shape, 5), "vanilla", 24, seed=0,
             params=GenParams(steps=30, min_margin=0.02, target_margin=0.1)).save(d / "fp.npz")
    res = build_model(str(onnx_path), "Pynq-Z1", d / "pkg", BuildConfig(equivalence_samples=8),
                      fingerprint=d / "fp.npz", key=keypair[0])
    return {"res": res, "pkg": d / "pkg", "onnx": onnx_path}


def test_softmax_classifier_builds_exact_with_softmax_on_the_host(softmax):
    res = softmax["res"]
    stages = {r["stage"]: r for r in res.report["equivalence"]}
    assert all(r["ok"] for r in stages.values()), stages
    for name in ("convert_to_hw", "minimize_bit_width", "dataflow_parent", "rtlsim_stitched"):
        assert stages[name]["exact"] and stages[name]["max_abs_diff"] == 0.0, name
    assert res.report["rtl"]["stitched"]["built"]
    io = json.loads((softmax["pkg"] / "manifest.json").read_text())["io"]
    assert io["host_ops"][-1] == {"op": "Softmax", "axis": 1}
    golden = GoldenModel(res.golden_path)
    ops = [n.op_type for n in golden.model.graph.node]
    assert ops[-1] == "Softmax" and "HWSoftmax" not in ops  # not FINN+'s float layer
    x = np.random.default_rng(1).integers(-8, 8, (32, 16))
    raw, out, labels = golden.run(x)
    scores = golden.tensors(x, [golden.scores])[golden.scores].reshape(len(x), -1)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert (labels == scores.argmax(axis=1)).all()
    assert io["raw_output"]["name"] == golden.raw_output != golden.scores  # raw: integers
    assert np.array_equal(raw, np.rint(raw))
    assert golden.batchable  # the head works row by row: one execution per batch
    one = golden.run(x, batch=False)
    for a, b in zip(one, (raw, out, labels)):
        np.testing.assert_array_equal(a, b)


def test_virtual_board_answers_the_package(softmax, keypair):
    from fpgaprint.hw_targets.backends.virtual import VirtualBackend

    package = verify_package(softmax["pkg"], trusted_key=keypair[1])
    v = package.vectors()
    raw, labels = VirtualBackend(package).infer(v["inputs"])
    np.testing.assert_array_equal(raw, v["golden_raw"])
    np.testing.assert_array_equal(labels, v["golden_labels"])


def test_boards_host_side_labels_are_the_golden_labels(softmax):
    """The host side of the RTL and PYNQ boards (raw outputs → labels) applies the same
    tail: labels from what the Softmax reads."""
    from fpgaprint.hw_targets.backends.pynq import HostGraph

    golden = GoldenModel(softmax["res"].golden_path)
    host = HostGraph(softmax["res"].golden_path, golden.raw_output)
    x = np.random.default_rng(4).integers(-8, 8, (16, 16))
    raw, out, labels = golden.run(x)
    np.testing.assert_array_equal(host.labels(raw), labels)
    np.testing.assert_allclose(host.final(raw), out, rtol=0, atol=1e-7)


def test_host_side_refuses_an_op_outside_the_table(softmax, tmp_path):
    from fpgaprint.hw_targets.backends.pynq import HostGraph

    golden = GoldenModel(softmax["res"].golden_path)
    model = copy.deepcopy(golden.model)
    out = model.graph.output[0].name
    model.graph.node[-1].output[0] = "before_erf"
    model.graph.node.append(helper.make_node("Erf", ["before_erf"], [out], name="Erf_0"))
    model.save(str(tmp_path / "golden.onnx"))
    for make in (lambda: GoldenModel(model),
                 lambda: HostGraph(tmp_path / "golden.onnx", golden.raw_output)):
        with pytest.raises(InputError, match="host-side Erf node 'Erf_0'"):
            make()


def test_argmax_head_labels_are_its_answer(softmax):
    """An ArgMax head in place of the Softmax: the final output is the label itself."""
    golden = GoldenModel(softmax["res"].golden_path)
    model = copy.deepcopy(golden.model)
    sm = model.graph.node[-1]
    model.graph.node.remove(sm)
    model.graph.node.append(helper.make_node("ArgMax", list(sm.input), list(sm.output),
                                             name="ArgMax_0", axis=1, keepdims=1))
    model.set_tensor_shape(sm.output[0], [1, 1])
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    argmax = GoldenModel(model)
    assert argmax.host_ops[-1] == {"op": "ArgMax", "axis": 1, "keepdims": 1}
    x = np.random.default_rng(2).integers(-8, 8, (16, 16))
    raw, out, labels = argmax.run(x)
    want_raw, _, want_labels = golden.run(x)
    np.testing.assert_array_equal(raw, want_raw)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(out[:, 0].astype(np.int64), labels)


@pytest.mark.parametrize("ops, what", [
    ([{"op": "Erf"}], "expected"),
    ([{"op": "Softmax", "axis": 99}], "axis=99"),
    ([{"op": "TopK", "k": 1, "largest": 0}], "largest=0"),
    ([{"op": "ArgMax", "select_last_index": 1}], "select_last_index=1"),
    ([{"op": "Softmax", "axis": True}], "axis=True"),
    ([{"op": "Mul", "axis": 1}], "axis=1"),
    ([{"op": "Mul"}] * 17, "at most 16"),
    ({"op": "Mul"}, "expected a list"),
])
def test_host_ops_from_a_package_are_a_closed_table(ops, what):
    with pytest.raises(InputError, match="io.host_ops") as e:
        check_host_ops(ops)
    assert what in str(e.value)
    io = {"input": {"name": "i", "shape": [1, 4], "datatype": "UINT8"},
          "raw_output": {"name": "r", "shape": [1, 4], "datatype": "INT8"},
          "output": {"name": "o", "shape": [1, 4]}, "host_ops": ops}
    with pytest.raises(InputError, match="io.host_ops"):
        check_io(io)


def test_declared_host_ops_must_be_the_golden_tail(softmax):
    golden = GoldenModel(softmax["res"].golden_path)
    golden.check_host_ops(copy.deepcopy(golden.host_ops))
    with pytest.raises(InputError, match="not the golden model's host tail"):
        golden.check_host_ops([{"op": "Mul"}])


@pytest.mark.parametrize("kind, op", [("argmax", "ArgMax"), ("topk", "TopK")])
def test_index_heads_build_exact_and_answer_the_label(tmp_path, kind, op):
    module, shape = models.ranked_mlp(kind)
    res, stages = models.build_exported(module, shape, tmp_path)
    assert stages["rtlsim_stitched"]["exact"] and stages["rtlsim_stitched"]["max_abs_diff"] == 0
    assert res.report["io"]["host_ops"][-1]["op"] == op
    golden = GoldenModel(res.golden_path)
    assert "LabelSelect" not in {n.op_type for n in golden.model.graph.node}
    x = np.random.default_rng(3).integers(-8, 8, (16, 16))
    _, out, labels = golden.run(x)
    np.testing.assert_array_equal(out[:, 0].astype(np.int64), labels)  # the first index


@pytest.mark.parametrize("head, op", [(nn.LogSoftmax(dim=1), "LogSoftmax"),
                                      (nn.Sigmoid(), "Sigmoid")])
def test_other_output_heads_build_exact_on_the_host(tmp_path, head, op):
    module, shape = models.softmax_mlp(head=head)
    res, stages = models.build_exported(module, shape, tmp_path)
    assert stages["rtlsim_stitched"]["exact"] and stages["rtlsim_stitched"]["max_abs_diff"] == 0
    assert res.report["io"]["host_ops"][-1]["op"] == op
    assert "thresholds" not in res.report  # the output Sigmoid is a head, not thresholds
    golden = GoldenModel(res.golden_path)
    x = np.random.default_rng(5).integers(-8, 8, (16, 16))
    _, _, labels = golden.run(x)
    scores = golden.tensors(x, [golden.scores])[golden.scores].reshape(len(x), -1)
    np.testing.assert_array_equal(labels, scores.argmax(axis=1))
