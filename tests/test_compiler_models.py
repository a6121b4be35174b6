"""Users' models compiled as they are: small Brevitas models of each shape (signed input,
depthwise conv, average pooling, residual join, external data, 1-bit weights), built in the
test, plus reproducible packages. Expectations come from the build under test."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from conftest import long_test, run_fpgaprint

from fpgaprint.compiler.build import build_model
from fpgaprint.compiler.config import BuildConfig
from fpgaprint.core.golden import GoldenModel

EPOCH = "1700000000"


def _stages_exact(report: dict) -> None:
    stages = {r["stage"]: r for r in report["equivalence"]}
    assert all(r["ok"] for r in stages.values()), stages
    for name in ("qonnx_to_finn", "streamline", "convert_to_hw", "minimize_bit_width",
                 "dataflow_parent"):
        assert stages[name]["ok"], name
    for name in ("convert_to_hw", "minimize_bit_width", "dataflow_parent"):
        assert stages[name]["exact"] and stages[name]["max_abs_diff"] == 0.0


def _fingerprint(module, shape, classes: int, path: Path, count: int = 24):
    from fpgaprint.fingerprint.generate import GenParams, generate
    from fpgaprint.fingerprint.source import from_module

    fs = generate(from_module(module, shape, classes), "vanilla", count, seed=0,
                  params=GenParams(steps=30, min_margin=0.02, target_margin=0.1))
    fs.save(path)
    return fs


# ---------------------------------------------------------------- signed input, end to end


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keypair):
    """A signed-input model: QONNX, its fingerprint set and a signed package."""
    d = tmp_path_factory.mktemp("signed")
    module, shape = models.signed_input_mlp()
    onnx_path = models.export(module, shape, d / "signed.onnx")
    fs = _fingerprint(module, shape, 5, d / "fp.npz")
    build_model(str(onnx_path), "Pynq-Z1", d / "pkg", BuildConfig(equivalence_samples=8),
                fingerprint=d / "fp.npz", key=keypair[0])
    return {"dir": d, "pkg": d / "pkg", "fs": fs, "onnx": onnx_path}


def test_signed_input_quantizer_is_the_accelerator_input(signed):
    fs, pkg = signed["fs"], signed["pkg"]
    assert fs.grid.signed and fs.grid.datatype == "INT8" and fs.grid.source != "default"
    assert float(fs.grid.step) == 1 / 128  # the quantizer's own scale
    assert fs.inputs_int.min() < 0 < fs.inputs_int.max()  # negative inputs are used
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["io"]["input"]["datatype"] == "INT8"
    assert manifest["input_grid"]["scale"] == float(fs.grid.step)
    report = json.loads((pkg / "reports" / "build.json").read_text())
    _stages_exact(report)
    golden = GoldenModel(pkg / "model" / "golden.onnx")
    assert golden.input_datatype == "INT8"
    header = (pkg / "firmware" / "selftest_vectors.h").read_text()
    assert '_INPUT_DATATYPE "INT8"' in header and "typedef int8_t fpgaprint_selftest_input_t" \
        in header
    vectors = np.load(pkg / "selftest" / "vectors.npz")
    np.testing.assert_array_equal(vectors["inputs"], fs.inputs_int)


def test_signed_input_package_verifies_pass_on_virtual_board(signed, keypair):
    from fpgaprint.hw_targets.served import served_boards

    with served_boards((signed["pkg"], "--trusted-key", keypair[1])) as (board,):
        r = run_fpgaprint("verify", "--port", board.port, "--package", signed["pkg"],
                          "--trusted-key", keypair[1], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verdict: PASS" in r.stdout


def test_fingerprint_grid_must_match_the_accelerator(signed, tmp_path, run_cli):
    """A set on the default [0, 1] grid is refused for a signed-input model (exit 2)."""
    from fpgaprint.core.fpset import load_set
    from fpgaprint.core.grid import InputGrid

    fs = load_set(signed["dir"] / "fp.npz")
    fs.grid = InputGrid(8)
    fs.inputs_int = np.abs(fs.inputs_int)
    fs.save(tmp_path / "wrong.npz")
    code, _, err = run_cli("build", signed["onnx"], "--out", tmp_path / "o", "--allow-unsigned",
                           "--fingerprint", tmp_path / "wrong.npz", "--samples", 4)
    assert code == 2 and "input grid" in err and "INT8" in err, err
    assert not (tmp_path / "o" / "reports" / "build.json").exists()
    assert json.loads((tmp_path / "o" / "reports" / "build.failed.json").read_text())[
        "status"] == "failed"


def test_own_4_bit_input_quantizer_is_the_grid(tmp_path):
    """Every integer of the model's own UINT4 grid gives the Brevitas model's label."""
    import torch

    module, shape = models.unsigned4_input_mlp()
    path = models.export(module, shape, tmp_path / "m.onnx")
    res = build_model(str(path), "Pynq-Z1", tmp_path / "o", BuildConfig(equivalence_samples=8),
                      allow_unsigned=True)
    grid = res.frontend.grid
    assert (grid.datatype, grid.qmin, grid.qmax) == ("UINT4", 0, 15)
    _stages_exact(res.report)
    x = np.random.default_rng(0).integers(0, 16, (64, *shape))
    _, logits, labels = GoldenModel(res.golden_path).run(x)
    with torch.no_grad():
        ref = module(torch.from_numpy(grid.to_float(x))).numpy()
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert (labels == ref.argmax(1)).all()


def test_unrepresentable_input_range_names_the_quantizer(tmp_path, run_cli):
    """An asymmetric (non-zero zero point) input quantizer cannot be the integer input."""
    module, shape = models.signed_input_mlp()
    path = models.export(module, shape, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    quant = next(n for n in proto.graph.node if n.op_type == "Quant")
    zero = next(t for t in proto.graph.initializer if t.name == quant.input[2])
    zero.CopyFrom(onnx.numpy_helper.from_array(np.array(3.0, np.float32), zero.name))
    onnx.save(proto, str(path))
    code, _, err = run_cli("build", path, "--out", tmp_path / "o", "--allow-unsigned")
    assert code == 2, err
    assert f"input quantizer {quant.name}" in err and "zero point" in err
    assert err.count("error:") == 1


# ---------------------------------------------------------------- shapes


@pytest.fixture(scope="module")
def depthwise(tmp_path_factory, keypair):
    """The depthwise CNN built twice, in different directories at different times, with
    other FINN+ build directories: by the CLI in a child process, then by `build_model` in
    this one."""
    d = tmp_path_factory.mktemp("dw")
    module, shape = models.depthwise_cnn()
    onnx_path = models.export(module, shape, d / "dw.onnx")
    _fingerprint(module, shape, 5, d / "fp.npz")
    a, b = d / "a" / "pkg", d / "b" / "deeper" / "pkg"
    r = run_fpgaprint("build", onnx_path, "--out", a, "--fingerprint", d / "fp.npz",
                      "--key", keypair[0], "--samples", 4,
                      env={"SOURCE_DATE_EPOCH": EPOCH, "FINN_BUILD_DIR": str(d)})
    assert r.returncode == 0, r.stderr
    time.sleep(1.1)
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    try:
        build_model(str(onnx_path), "Pynq-Z1", b, BuildConfig(equivalence_samples=4),
                    fingerprint=d / "fp.npz", key=keypair[0])
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    return {"dir": d, "onnx": onnx_path, "pkgs": [a, b]}


def test_depthwise_conv_maps_to_vvau_bit_exact(depthwise):
    pkg = depthwise["pkgs"][0]
    _stages_exact(json.loads((pkg / "reports" / "build.json").read_text()))
    ops = {n.op_type for n in GoldenModel(pkg / "model" / "golden.onnx").model.graph.node}
    assert "VVAU" in ops and "MVAU" in ops
    assert any(k.startswith("VVAU") for k in GoldenModel(pkg / "model" / "golden.onnx")
               .memories())


def test_two_builds_give_one_package_id(depthwise):
    """Same inputs, other directories, other times, the CLI or the API: same id,
    byte-identical identity."""
    a, b = depthwise["pkgs"]
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    for rel in ma["files"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert any(rel.startswith("hw/src/") for rel in ma["files"])  # generated sources
    for rel in ma["files"]:
        data = (a / rel).read_bytes()
        assert str(a.resolve()).encode() not in data and b"code_gen_ipgen" not in data, rel
    assert ma["created"] == "2023-11-14T22:13:20Z" and set(ma["extras"]) >= {"reports/",
                                                                             "build.log"}
    # the logs and timings differ, outside the identity
    assert (a / "build.log").read_bytes() != (b / "build.log").read_bytes()
    r = run_fpgaprint("package", "diff", a, b)
    assert r.returncode == 0 and "identical" in r.stdout, r.stdout + r.stderr
    from fpgaprint.compiler.package import write_tar

    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    try:
        tars = [write_tar(p).read_bytes() for p in (a, b)]
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    assert tars[0] == tars[1]  # the tar too, extras left out


def test_package_diff_names_what_differs(depthwise, signed):
    r = run_fpgaprint("package", "diff", depthwise["pkgs"][0], signed["pkg"])
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "differs:   model/golden.onnx" in lines
    assert any(line.startswith("only in A: hw/src/VVAU") for line in lines)
    assert "manifest:  name: 'dw' / 'signed'" in lines
    assert any(line.startswith("manifest:  io: ") for line in lines)
    assert not any("build.log" in line or "reports/" in line for line in lines)  # extras


def test_avgpool_floor_compiles_bit_exact(tmp_path):
    module, shape = models.avgpool_cnn("floor")
    path = models.export(module, shape, tmp_path / "m.onnx")
    res = build_model(str(path), "Pynq-Z1", tmp_path / "o", BuildConfig(equivalence_samples=4),
                      allow_unsigned=True)
    _stages_exact(res.report)
    ops = {n.op_type for n in GoldenModel(res.golden_path).model.graph.node}
    assert {"ConvolutionInputGenerator", "Pool"} <= ops, ops
    # mixed: FINN+ has no RTL pool; its HLS layer is listed, not simulated, and the RTL
    # layers around it are covered by stitched segments or simulated node by node
    rtl = res.report["rtl"]
    hls = [r for r in rtl["layers"] if r["impl"] == "hls"]
    simulated = [r for r in rtl["layers"] if r["impl"] == "rtl"]
    assert [r["op_type"] for r in hls] == ["Pool_hls"]
    assert hls[0]["note"] == "not simulated here: needs Vitis HLS" and not hls[0]["simulated"]
    assert simulated and all(r["simulated"] for r in simulated)
    covered = [r for r in simulated if r.get("covered_by")]
    assert covered and {r["covered_by"] for r in covered} == {
        s["name"] for s in rtl["segments"] if s.get("ok")}
    assert rtl["node_by_node"]["ok"] and \
        rtl["node_by_node"]["layers"] == len(simulated) - len(covered)
    assert not rtl["stitched"]["built"] and "Pool_hls_0" in rtl["stitched"]["reason"]
    assert not (res.out / "hw" / "rtl").exists()


def test_residual_join_is_named_as_the_user_wrote_it(tmp_path, run_cli):
    module, shape = models.residual_mlp()
    path = models.export(module, shape, tmp_path / "m.onnx")
    add = next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Add")
    code, _, err = run_cli("build", path, "--out", tmp_path / "o", "--allow-unsigned")
    assert code == 2, err
    assert f"operator Add {add}" in err and "Transpose" not in err
    assert err.count("error:") == 1


def test_qonnx_with_external_data_compiles(tmp_path, run_cli):
    module, shape = models.signed_input_mlp(seed=3)
    path = models.export(module, shape, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    ext = tmp_path / "ext"
    ext.mkdir()
    onnx.save(proto, str(ext / "m.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)
    assert (ext / "m.onnx.data").stat().st_size > 0
    code, _, err = run_cli("build", ext / "m.onnx", "--out", tmp_path / "o", "--allow-unsigned",
                           "--samples", 4)
    assert code == 0, err
    _stages_exact(json.loads((tmp_path / "o" / "reports" / "build.json").read_text()))
    assert not (tmp_path / "o" / "model" / "qonnx.onnx.data").exists()  # self-contained
    (ext / "m.onnx.data").unlink()
    code, _, err = run_cli("build", ext / "m.onnx", "--out", tmp_path / "o2", "--allow-unsigned")
    assert code == 2 and "m.onnx.data" in err and "missing" in err, err


def test_one_bit_weights_stay_one_bit(tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    module, shape = models.binary_weight_mlp()
    path = models.export(module, shape, tmp_path / "m.onnx")
    res = build_model(str(path), "Pynq-Z1", tmp_path / "o", BuildConfig(equivalence_samples=8),
                      allow_unsigned=True)
    _stages_exact(res.report)
    weights = {k: m for k, m in GoldenModel(res.golden_path).memories().items()
               if m.kind == "weights"}
    assert weights and all(m.datatype == "BIPOLAR" and m.bits == 1 for m in weights.values())
    final = ModelWrapper(str(tmp_path / "o" / res.report["steps"][-2]["model"]))
    mvaus = [n for n in final.graph.node if n.op_type.startswith("MVAU")]
    assert mvaus and all(getCustomOp(n).get_nodeattr("weightDataType") == "BIPOLAR"
                         for n in mvaus)


@pytest.mark.slow
@long_test("about 15 s (FINN+ writes 3 MB of HLS weights)")
def test_lfc_w1a2_fits_a_pynq_z1(tmp_path):
    res = build_model("zoo:lfc-w1a2", "Pynq-Z1", tmp_path / "lfc",
                      BuildConfig(equivalence_samples=4, zoo_epochs=0), allow_unsigned=True)
    assert not [f for f in res.report["resource_check"] if f["level"] == "fail"]
    assert res.report["estimates"]["resources_total"]["BRAM_18K"] <= 280
    assert {m.datatype for m in GoldenModel(res.golden_path).memories().values()
            if m.kind == "weights"} == {"BIPOLAR"}
