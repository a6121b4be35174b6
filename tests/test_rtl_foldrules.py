"""Foldings FINN+'s RTL MVU cannot run under backpressure (docs/rtl-findings.md): the folding
step avoids them and says so, and the keyword-spotting shape that met them builds exact with
its stitched design simulated. Without the rule the same build stops at FINN+'s assertion,
exit 1, naming the layer, the cycle and the stage."""

from __future__ import annotations

import json

import models
import pytest

from fpgaprint.compiler import steps
from fpgaprint.compiler.build import build_model
from fpgaprint.compiler.config import BuildConfig
from fpgaprint.compiler.rtlsim.errors import DesignAssertionError
from fpgaprint.compiler.rtlsim.foldrules import safe_simd


@pytest.mark.parametrize("mw, simd, want", [
    (5, 5, 1), (9, 9, 3), (12, 12, 6), (64, 64, 32),  # one synapse fold: largest divisor below
    (9, 3, 3), (64, 8, 8), (5, 1, 1),  # already two or more folds: kept
    (1, 1, 1),  # a width of 1 has no other folding
])
def test_safe_simd_leaves_at_least_two_synapse_folds(mw, simd, want):
    assert safe_simd(mw, simd) == want
    assert mw % want == 0


@pytest.fixture(scope="module")
def kws_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("kws")
    module, shape = models.kws_cnn()
    return models.export(module, shape, d / "kws.onnx")


def _folded(out, name: str) -> dict[str, tuple[int, int, int]]:
    """{MVAU_rtl layer: (MW, SIMD, PE)} of a step's saved model."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    path = next((out / "model" / "steps").glob(f"*_{name}.onnx"))
    res = {}
    for n in ModelWrapper(str(path)).graph.node:
        if n.op_type == "MVAU_rtl":
            op = getCustomOp(n)
            res[n.name] = tuple(int(op.get_nodeattr(a)) for a in ("MW", "SIMD", "PE"))
    return res


# FINN+'s minimal FIFOs: every stall of a layer reaches the MVU before it (the condition of
# the overflow); the build also runs the stitched design under random stalls
MINIMAL = {"equivalence_samples": 4, "auto_fifo_strategy": "force_minimal_fifos"}


def test_kws_shape_builds_exact_with_its_stitched_design(kws_onnx, tmp_path):
    out = tmp_path / "o"
    res = build_model(str(kws_onnx), "Pynq-Z1", out, BuildConfig(**MINIMAL),
                      allow_unsigned=True)
    rep = res.report
    st = rep["rtl"]["stitched"]
    assert st["built"] and st["ok"] and st["vectors"] == 4
    assert all(r["impl"] == "rtl" and r["simulated"] for r in rep["rtl"]["layers"]
               if r["op_type"] == "MVAU_rtl")
    folded = _folded(out, "folding")
    # every RTL MVU keeps two or more synapse folds, and each layer the step changed is
    # listed with what it had and why
    assert folded and all(simd < mw for mw, simd, _ in folded.values()), folded
    adjusted = rep["folding"]["adjusted"]
    log = (out / "build.log").read_text()
    assert adjusted, "FINN+ folds the 5-wide first layer to SIMD = MW at the chosen rate"
    for a in adjusted:
        mw, simd, _ = folded[a["layer"]]
        assert (a["attribute"], a["from"], a["to"]) == ("SIMD", mw, simd)
        assert "mvu_vvu_axi.sv" in a["reason"]
        assert f"folding: {a['layer']} SIMD {a['from']} -> {a['to']}: " in log


def test_kws_shape_builds_exact_with_fifos_sized_by_simulation(kws_onnx, tmp_path):
    """The default FIFO sizing on a part without URAM: the deep FIFOs of the 1-D convolution
    are block RAM, the design fits, and the stitched run (full rate and stalled) is exact."""
    res = build_model(str(kws_onnx), "Pynq-Z1", tmp_path / "o",
                      BuildConfig(equivalence_samples=4), allow_unsigned=True)
    st = res.report["rtl"]["stitched"]
    assert st["built"] and st["ok"] and st["vectors"] == 4
    assert st["fifos"]["depths_from"] == "distributed_sim"
    assert all(f["ram_style"] != "ultra" and not f["resources"].get("URAM")
               for f in st["fifos"]["fifos"])


def test_without_the_rule_the_assertion_fails_the_build_naming_layer_cycle_and_stage(
        kws_onnx, tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "avoid_failing_foldings", lambda model: (model, []))
    out = tmp_path / "o"
    with pytest.raises(DesignAssertionError) as e:
        build_model(str(kws_onnx), "Pynq-Z1", out, BuildConfig(**MINIMAL), allow_unsigned=True)
    msg = str(e.value)
    assert e.value.exit_code == 1 and "\n" not in msg
    assert msg.startswith("RTL layer MVAU_rtl_") and " at cycle " in msg
    assert "Overflowing output queue" in msg
    failed = json.loads((out / "reports" / "build.failed.json").read_text())
    entry = [v for v in (failed["rtl"]["node_by_node"], failed["rtl"]["stitched"])
             if v and v.get("ok") is False]
    assert entry and entry[0]["stage"].startswith("rtlsim_") and entry[0]["exit_code"] == 1
