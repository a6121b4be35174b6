"""The stitched RTL design streams its input as the accelerator's first layer reads it: after
the golden graph's host-side head (a convolution's NCHW -> NHWC Transpose)."""

from __future__ import annotations

import models
import numpy as np
import pytest

from fpgaprint.compiler.rtlsim.design import StitchedDesign
from fpgaprint.core.golden import GoldenModel


@pytest.mark.parametrize("dynamo", [None, False], ids=["dynamo", "torchscript"])
def test_conv_fc_with_host_transpose_stitches_exact(tmp_path, dynamo):
    module, shape = models.conv_fc_cnn()
    res, stages = models.build_exported(module, shape, tmp_path, dynamo=dynamo)
    assert stages["rtlsim_stitched"]["exact"] and stages["rtlsim_stitched"]["max_abs_diff"] == 0
    st = res.report["rtl"]["stitched"]
    assert st["built"] and st["backpressure"]["ok"]
    assert all(r["impl"] == "rtl" and r["simulated"] for r in res.report["rtl"]["layers"])
    golden = GoldenModel(res.golden_path)
    # the case: the host reorders the input (NCHW -> NHWC) before the accelerator
    assert golden.model.graph.node[0].op_type == "Transpose"
    x = np.random.default_rng(3).integers(-8, 8, (4, *shape))
    want = golden.run(x)[0]
    with StitchedDesign(tmp_path / "o" / "hw" / "rtl").simulator() as sim:
        raw, _ = sim.run(golden.accelerator_inputs(x))
        np.testing.assert_array_equal(raw.reshape(want.shape), want)
        sim.reset()
        unordered, _ = sim.run(x)  # the golden model's own layout is not the stream's
    assert not np.array_equal(unordered.reshape(want.shape), want)


def test_a_board_reorders_the_input_before_its_accelerator(tmp_path, keypair):
    """The rtlsim board (as a PYNQ board) applies the golden graph's host-side Transpose
    before streaming: its raw outputs are the golden model's, bit for bit."""
    import shutil

    from conftest import META

    from fpgaprint.compiler.package import finalize_package, write_selftest
    from fpgaprint.hw_targets.backends import open_backend

    module, shape = models.conv_fc_cnn()
    res, _ = models.build_exported(module, shape, tmp_path, dynamo=False)
    pkg = tmp_path / "pkg"
    (pkg / "model").mkdir(parents=True)
    shutil.copy2(res.golden_path, pkg / "model" / "golden.onnx")
    shutil.copytree(tmp_path / "o" / "hw" / "rtl", pkg / "hw" / "rtl")
    golden = GoldenModel(res.golden_path)
    x = np.random.default_rng(4).integers(-8, 8, (6, *shape))
    raw, _, labels = golden.run(x)
    write_selftest(pkg, x, raw, labels, labels, {"checks": ["exact"]})
    finalize_package(pkg, {"name": "conv-fc", **META, "io": res.report["io"]},
                     key_path=keypair[0])
    with open_backend(pkg, "rtlsim", trusted_key=keypair[1]) as board:
        got, got_labels = board.infer(x)
        st = board.selftest()
    np.testing.assert_array_equal(got, raw.reshape(got.shape))
    np.testing.assert_array_equal(got_labels, labels)
    assert st["passed"] and st["exact_mismatches"] == 0
