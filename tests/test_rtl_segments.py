"""Stitched RTL segments: in a conv net whose max pool is an HLS layer (FINN+ has no RTL pool,
as in CNV), the RTL layers on either side of the pool are stitched into segments, each built
once with Verilator and run over all vectors against the golden model's tensors; a segment
that differs is traced to its layer. Expectations come from the build under test."""

from __future__ import annotations

import json
from pathlib import Path

import models
import numpy as np
import pytest

from fpgaprint.compiler.build import build_model
from fpgaprint.compiler.config import BuildConfig
from fpgaprint.compiler.rtlsim import segments, verilator
from fpgaprint.compiler.rtlsim.design import StitchedDesign
from fpgaprint.compiler.rtlsim.impl import impl_of
from fpgaprint.core.golden import GoldenModel

SAMPLES = 8


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("segments")
    module, shape = models.maxpool_cnn()
    src = models.export(module, shape, d / "m.onnx")
    res = build_model(str(src), "Pynq-Z1", d / "o", BuildConfig(equivalence_samples=SAMPLES),
                      allow_unsigned=True)
    return src, res


def _codegen(out: Path) -> Path:
    return min((out / "model" / "steps").glob("*_codegen.onnx"))


def _inputs(res, n: int) -> np.ndarray:
    """n vectors on the build's input grid."""
    grid = res.report["input_grid"]
    lo, hi = (-(1 << grid["bits"] - 1), 1 << grid["bits"] - 1) if grid["signed"] else \
        (0, 1 << grid["bits"])
    return np.random.default_rng(7).integers(lo, hi, (n, 2, 10, 10))


def test_rtl_layers_around_an_hls_pool_are_covered_by_stitched_segments(built):
    _, res = built
    rtl = res.report["rtl"]
    assert not rtl["stitched"]["built"] and "Pool_hls_0" in rtl["stitched"]["reason"]
    segs = rtl["segments"]
    assert len(segs) == 2
    assert all(s["built"] and s["ok"] and s["vectors"] == SAMPLES and s["cycles"] > 0
               for s in segs)
    names = [r["layer"] for r in rtl["layers"]]
    pool = next(i for i, r in enumerate(rtl["layers"]) if r["impl"] == "hls")
    assert max(map(names.index, segs[0]["layers"])) < pool < min(map(names.index,
                                                                      segs[1]["layers"]))
    rows = [r for r in rtl["layers"] if r["impl"] == "rtl"]
    assert all(r["simulated"] and "cycles_rtlsim" not in r for r in rows)
    assert [r["covered_by"] for r in rows] == [s["name"] for s in segs for _ in s["layers"]]
    assert rtl["node_by_node"]["ok"] and rtl["node_by_node"]["layers"] == 0
    # the pool's depthwise window, which ends the first segment, interleaves channels for
    # the pool by design: that segment's output is the golden values in the window's order
    window = next(r for r in rows if r["layer"] == segs[0]["layers"][-1])
    assert window["op_type"] == "ConvolutionInputGenerator_rtl"
    assert window["reference"] == "reordered" and segs[0]["reference"] == "reordered"
    assert segs[1]["reference"] == "golden"
    stages = {e["stage"]: e for e in res.report["equivalence"]}
    assert stages["rtlsim_layers"]["exact"]
    assert not (res.out / "hw" / "rtl").exists()  # segments are scratch, never packaged
    assert (res.out / "finn" / "segments" / segs[0]["name"] / "design.json").is_file()


def test_each_segment_is_one_verilator_build_and_computes_the_golden_tensors(
        built, tmp_path, monkeypatch):
    from qonnx.core.modelwrapper import ModelWrapper

    monkeypatch.setenv(verilator.CACHE_ENV, str(tmp_path / "cache"))  # cold
    _, res = built
    codegen, golden = _codegen(res.out), res.golden_path
    x = _inputs(res, 5)
    runs = verilator.stats["verilator_runs"]
    result = segments.check(codegen, golden, x, tmp_path / "finn", res.report["part"], 10.0)
    runs = verilator.stats["verilator_runs"] - runs
    rtl_layers = [n for n in ModelWrapper(str(codegen)).graph.node if impl_of(n) == "rtl"]
    assert runs == len(result["segments"]) == 2 and not result["layers"]
    assert len(rtl_layers) == 8
    # each segment's design, run again here, gives the golden tensor at its output (per
    # vector in its depthwise window's order, when it ends on one)
    g = GoldenModel(golden)
    for s in result["segments"]:
        t = g.tensors(x, [s["input"], s["output"]])
        with StitchedDesign(tmp_path / "finn" / "segments" / s["name"]).simulator() as sim:
            raw, _ = sim.run(t[s["input"]].reshape(len(x), -1))
        want = np.rint(t[s["output"]]).reshape(len(x), -1)
        if s["reference"] == "reordered":
            assert not np.array_equal(raw, want)
            raw, want = np.sort(raw, axis=1), np.sort(want, axis=1)
        np.testing.assert_array_equal(raw, want)


def test_a_run_that_cannot_be_stitched_is_checked_node_by_node(built, tmp_path, monkeypatch):
    from fpgaprint.compiler.rtlsim import stitch

    _, res = built
    plumb = stitch.plumb

    def refusing(model, *args, **kwargs):
        if model.get_node_from_name("MVAU_rtl_0") is not None:
            raise stitch.NotStitchable("MVAU_rtl_0: not stitched in this test")
        return plumb(model, *args, **kwargs)

    monkeypatch.setattr(stitch, "plumb", refusing)
    result = segments.check(_codegen(res.out), res.golden_path, _inputs(res, 2),
                            tmp_path / "finn", res.report["part"], 10.0)
    first, second = result["segments"]
    assert first["built"] is False and first["reason"] == "MVAU_rtl_0: not stitched in this test"
    assert second["built"] and second["ok"]
    assert [r["layer"] for r in result["layers"]] == first["layers"]
    # node by node, the window that ends the run is checked against FINN+'s model of it
    assert [r["reference"] for r in result["layers"]][-1] == "reordered"
    assert all(r["vectors"] == 2 and r["cycles"] > 0 for r in result["layers"])


def test_a_segment_that_differs_is_traced_to_its_layer(built, run_cli):
    """A layer's RTL changed (its output offset): its segment differs, and the segment's
    layers, simulated one by one, name the layer, the vector and the element (exit 1)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    src, res = built
    model = ModelWrapper(str(_codegen(res.out)))
    layer = "Thresholding_rtl_1"
    code_gen = getCustomOp(model.get_node_from_name(layer)).get_nodeattr("code_gen_dir_ipgen")
    rtl = Path(code_gen) / f"{layer}.v"
    orig = rtl.read_bytes()
    rtl.write_text(orig.decode().replace("parameter  BIAS   = 0", "parameter  BIAS   = 1", 1))
    try:
        assert "BIAS   = 1" in rtl.read_text()
        code, _, err = run_cli("build", src, "--out", res.out, "--samples", SAMPLES,
                               "--allow-unsigned")
    finally:
        rtl.write_bytes(orig)
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: RTL layer {layer} (Thresholding_rtl) differs from the "
                           "golden model on equivalence vector "), line
    failed = json.loads((res.out / "reports" / "build.failed.json").read_text())["rtl"]
    bad = [s for s in failed["segments"] if not s.get("ok")]
    assert len(bad) == 1 and layer in bad[0]["layers"]
    assert bad[0]["error"].startswith(f"stitched RTL segment {bad[0]['name']} (")
    assert " differs from the golden model on equivalence vector " in bad[0]["error"]
    assert failed["node_by_node"] == {**failed["node_by_node"], "ok": False,
                                      "stage": "rtlsim_layers", "exit_code": 1}
    assert "its layers simulated one by one" in (res.out / "build.log").read_text()
