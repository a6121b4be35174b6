"""Brevitas' truncated average pools: the default ROUND truncation compiles to a sum pool
and thresholds, and `TruncTo8bit` (whose left shift FINN+'s conversion drops) is rewritten
so FINN+ converts it exactly; both bit-exact on Pynq-Z1. Expectations come from the build
under test."""

from __future__ import annotations

import models
import pytest

from fpgaprint.core.golden import GoldenModel


@pytest.mark.parametrize("rounding, fragment", [("round", "thresholds"),
                                                ("to8bit", "truncs_unshifted")])
def test_truncated_average_pool_builds_exact(tmp_path, rounding, fragment):
    module, shape = models.avgpool_cnn(rounding)
    res, stages = models.build_exported(module, shape, tmp_path)
    for s in ("convert_to_hw", "minimize_bit_width", "dataflow_parent", "rtlsim_layers"):
        assert stages[s]["exact"] and stages[s]["max_abs_diff"] == 0.0, s
    assert len(res.report[fragment]) == 1
    ops = [n.op_type for n in GoldenModel(res.golden_path).model.graph.node]
    assert "Pool" in ops
    # thresholds after the pool: the rounded division of its sum
    assert ops.count("Thresholding") == (2 if rounding == "round" else 1)
    # FINN+ has no RTL pool: the RTL layers around it are simulated node by node
    assert all(r["simulated"] for r in res.report["rtl"]["layers"] if r["impl"] == "rtl")
