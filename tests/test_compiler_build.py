"""The compiler end to end on real FINN+/Brevitas: every stage bit-exact, golden model in place."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from conftest import long_test

from fpgaprint.compiler.build import build_model
from fpgaprint.compiler.config import BuildConfig
from fpgaprint.core.golden import GoldenModel


def _assert_bit_exact(report: dict) -> None:
    stages = {r["stage"]: r for r in report["equivalence"]}
    for name in ("qonnx", "input_grid", "qonnx_to_finn", "tidy_up", "streamline", "convert_to_hw",
                 "minimize_bit_width", "dataflow_parent"):
        assert stages[name]["ok"], (name, stages[name])
        assert stages[name]["label_mismatches"] == 0
    for name in ("convert_to_hw", "minimize_bit_width", "dataflow_parent"):
        assert stages[name]["exact"] and stages[name]["max_abs_diff"] == 0.0


def test_digits_ptq_bit_exact_with_golden_model(digits_build):
    out = digits_build.out
    report = json.loads((out / "reports" / "build.json").read_text())
    assert report["status"] == "ok"
    _assert_bit_exact(report)
    assert "brevitas" in {r["stage"] for r in report["equivalence"]}
    golden = GoldenModel(out / "model" / "golden.onnx")
    assert golden.input_datatype == "UINT8"
    assert report["io"]["raw_output"]["datatype"].startswith("INT")
    # the golden model classifies held-out digits as the quantized network does (derived
    # from this build, not from a trained accuracy)
    import torch

    fe = digits_build.result.frontend
    x = fe.grid.to_int(fe.data.x_test[:64])
    _, logits, labels = golden.run(x)
    with torch.no_grad():
        ref = fe.torch_model(torch.from_numpy(fe.grid.to_float(x))).numpy()
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-4 * np.abs(ref).max()
    np.testing.assert_array_equal(labels[clear], ref.argmax(1)[clear])
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert not report["vivado"]["ran"] and "Vivado" in report["vivado"]["message"]
    est = report["estimates"]["resources_total"]
    assert est["LUT"] > 0 and report["estimates"]["max_cycles"] > 0
    assert (out / "build.log").read_text().count("step ") >= 10


def test_resume_reruns_from_first_changed_step(digits_build, tmp_path):
    out = tmp_path / "pkg"
    shutil.copytree(digits_build.out, out)
    res = build_model("zoo:digits-mlp", "Pynq-Z1", out,
                      BuildConfig(equivalence_samples=16, target_fps=20_000))
    skipped = set(res.skipped_steps)
    assert {"input_grid", "qonnx_to_finn", "streamline", "convert_to_hw",
            "specialize_layers"} <= skipped
    assert "folding" not in skipped and "codegen" not in skipped
    again = build_model("zoo:digits-mlp", "Pynq-Z1", out,
                        BuildConfig(equivalence_samples=16, target_fps=20_000))
    assert "codegen" in again.skipped_steps
    _assert_bit_exact(again.report)


def test_a_zoo_model_is_trained_once_per_process_and_each_caller_gets_a_copy(monkeypatch):
    import torch

    from fpgaprint.compiler import zoo

    trained = []
    real = zoo.train
    monkeypatch.setattr(zoo, "train", lambda *a, **k: trained.append(a) or real(*a, **k))
    monkeypatch.setattr(zoo, "_TRAINED", {})
    a = zoo.make("digits-mlp", seed=7, epochs=2)
    rng_after = torch.get_rng_state()
    with torch.no_grad():
        next(a.model.parameters()).add_(1.0)  # a caller changes its copy
    torch.manual_seed(99)
    b = zoo.make("digits-mlp", seed=7, epochs=2)
    assert len(trained) == 1 and b.model is not a.model
    assert torch.equal(torch.get_rng_state(), rng_after)  # as if trained just now
    monkeypatch.setattr(zoo, "_TRAINED", {})
    fresh = zoo.make("digits-mlp", seed=7, epochs=2)
    assert len(trained) == 2
    fs, bs = fresh.model.state_dict(), b.model.state_dict()
    assert fs.keys() == bs.keys() and all(torch.equal(fs[k], bs[k]) for k in fs)
    assert fresh.meta == b.meta
    zoo.make("digits-mlp", seed=8, epochs=2)
    assert len(trained) == 3  # another seed is another model


def test_digits_qat_bit_exact(tmp_path):
    res = build_model("zoo:digits-mlp", "Pynq-Z1", tmp_path / "qat",
                      BuildConfig(qat=True, qat_epochs=2, weight_bits=3, act_bits=3,
                                  equivalence_samples=16))
    _assert_bit_exact(res.report)
    assert res.golden_path.is_file()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_user_exported_qonnx_compiles(tmp_path, run_cli, dynamo):
    """A Brevitas model exported by the user as QONNX builds bit-exactly via the CLI, from
    either exporter. The TorchScript one (FINN's own examples) leaves most shapes out and
    writes the TensorNorm of FINN's TFC with a Pow on constants."""
    import brevitas.nn as qnn
    import models
    import torch
    import torch.nn as nn
    from brevitas_examples.bnn_pynq.models.tensor_norm import TensorNorm

    torch.manual_seed(1)
    model = nn.Sequential(qnn.QuantIdentity(bit_width=4, return_quant_tensor=True),
                          qnn.QuantLinear(16, 12, bias=False, weight_bit_width=3),
                          nn.BatchNorm1d(12), qnn.QuantReLU(bit_width=3),
                          qnn.QuantLinear(12, 5, bias=False, weight_bit_width=3),
                          TensorNorm())
    with torch.no_grad():
        model[-1].running_var.fill_(2.5)
        model[-1].weight.fill_(0.75)
    path = models.export(model, (16,), tmp_path / "user.onnx", dynamo=dynamo)
    proto = onnx.load(str(path))
    if not dynamo:  # what the front end must cope with
        assert "Pow" in {n.op_type for n in proto.graph.node}
        assert len(proto.graph.value_info) < len(proto.graph.node)
    code, _, err = run_cli("build", path, "--board", "Pynq-Z2", "--out", tmp_path / "o",
                           "--samples", "8")
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "reports" / "build.json").read_text())
    _assert_bit_exact(report)
    assert report["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "o" / "model" / "golden.onnx").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tfc-w2a2", pytest.param("cnv-w2a2", marks=long_test(
    "about 45 s: CNV's RTL layers simulated in stitched segments (its mixed RTL/HLS path is "
    "tested on small CNNs in test_compiler_models and test_rtl_segments)"))])
def test_reference_topologies_bit_exact(compiled, tmp_path, name):
    # TFC is the session's shared build (equivalence on 16 samples); CNV, untrained, on 4
    res = build_model(f"zoo:{name}", "Pynq-Z1", tmp_path / name,
                      BuildConfig(equivalence_samples=4, zoo_epochs=0)) \
        if name.startswith("cnv") else compiled(name).result
    _assert_bit_exact(res.report)
    ops = {n.op_type for n in GoldenModel(res.golden_path).model.graph.node}
    assert "MVAU" in ops
    rtl = res.report["rtl"]
    simulated = [r for r in rtl["layers"] if r["impl"] == "rtl"]
    assert simulated and all(r["simulated"] for r in simulated)
    by_node = rtl["node_by_node"]
    assert by_node["ok"] and by_node["layers"] == sum(not r.get("covered_by")
                                                      for r in simulated)
    assert bool(by_node.get("covered_by")) == bool(rtl["stitched"]["built"])
    if name.startswith("cnv"):
        assert {"ConvolutionInputGenerator", "Pool"} <= ops
        # mixed: FINN+ has no RTL pool; its HLS layers are listed, not simulated, and the
        # RTL layers between them are covered by stitched segments
        assert {r.get("covered_by") for r in simulated} - {None} == \
            {s["name"] for s in rtl["segments"]} and len(rtl["segments"]) == 3
        hls = [r for r in rtl["layers"] if r["impl"] == "hls"]
        assert {r["op_type"] for r in hls} == {"Pool_hls"}
        assert all(r["note"] == "not simulated here: needs Vitis HLS" and not r["simulated"]
                   for r in hls)
        assert not rtl["stitched"]["built"] and "Pool_hls_0" in rtl["stitched"]["reason"]
        assert not (res.out / "hw" / "rtl").exists()
    else:
        assert len(simulated) == len(rtl["layers"]) and rtl["stitched"]["ok"]


def _flip_mvau_weight(model):
    node = model.get_nodes_by_op_type("MVAU")[-1]
    w = model.get_initializer(node.input[1]).copy()
    w.flat[0] = -w.flat[0] if w.flat[0] else 1.0
    model.set_initializer(node.input[1], w)


def _quarter_output_scale(model):
    """What a miscompiled average pool did: 0.25x the output."""
    node = [n for n in model.graph.node if n.op_type == "Mul"
            and model.get_initializer(n.input[1]) is not None][-1]
    model.set_initializer(node.input[1], model.get_initializer(node.input[1]) * 0.25)


@pytest.mark.parametrize("step, corrupt, kind, before", [
    ("minimize_bit_width", _flip_mvau_weight, "bit-exact", "convert_to_hw"),
    ("qonnx_to_finn", _quarter_output_scale, "float32 round-off", "input_grid"),
])
def test_a_stage_that_changes_the_function_fails_the_build_and_is_named(
        tmp_path, monkeypatch, run_cli, step, corrupt, kind, before):
    """Corrupt a step's result: the build exits 1 naming that step, fills build.failed.json
    with the stages compared, and no report claims success."""
    import dataclasses

    import fpgaprint.compiler.build as cb

    i = [s.name for s in cb.STEPS].index(step)
    orig = cb.STEPS[i]

    def corrupting(model, ctx):
        model, fragment = orig.fn(model, ctx)
        corrupt(model)
        return model, fragment

    steps = list(cb.STEPS)
    steps[i] = dataclasses.replace(orig, fn=corrupting)
    monkeypatch.setattr(cb, "STEPS", steps)
    out = tmp_path / "bad"
    cfg = tmp_path / "b.yaml"
    cfg.write_text("zoo_epochs: 1\nequivalence_samples: 8\n")
    code, _, err = run_cli("build", "zoo:digits-mlp", "--out", out, "--config", cfg)
    assert code == 1, err
    assert f"stage '{step}'" in err and kind in err and err.count("error:") == 1, err
    assert not (out / "reports" / "build.json").exists()
    failed = json.loads((out / "reports" / "build.failed.json").read_text())
    assert failed["status"] == "failed" and step in failed["error"]
    stages = {r["stage"]: r["ok"] for r in failed["equivalence"]}
    assert stages[before] and not stages[step]


def test_equivalence_checker_tolerates_round_off_but_not_integer_drift():
    from fpgaprint.compiler.equivalence import EquivalenceChecker
    from fpgaprint.core.grid import InputGrid

    x = np.zeros((3, 4), np.int64)
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.5, 0.1, 0.2]], np.float32)
    eq = EquivalenceChecker(x, InputGrid())
    eq.add("float_a", ref, exact=False)
    eq.add("float_b", ref + 1e-6, exact=False)  # float32 round-off
    eq.add("int_a", ref, exact=True)
    eq.add("int_b", ref, exact=True)
    with pytest.raises(Exception, match="stage 'int_c'.*differs from 'int_b'"):
        eq.add("int_c", ref + np.float32(1e-6), exact=True)
