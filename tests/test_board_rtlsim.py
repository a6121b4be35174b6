"""The rtlsim board: the package's stitched RTL in Verilator behind the board agent.

Healthy, it answers bit-exactly like the golden model; a flipped bit in a weight or threshold
memory image is one flipped bit of the packaged image and computes what the golden model with
the same flip computes; `fpgaprint verify` gives PASS and FAIL over a real pty.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import first_changing_flip

from fpgaprint.core.errors import InputError
from fpgaprint.core.golden import GoldenModel
from fpgaprint.hw_targets.backends import open_backend
from fpgaprint.hw_targets.faults import FaultSpec
from fpgaprint.hw_targets.served import served_boards


@pytest.fixture(scope="module")
def pkg(digits_rtl_package, keypair):
    return digits_rtl_package, keypair[1]


@pytest.fixture(scope="module")
def golden(digits_rtl_package):
    return GoldenModel(digits_rtl_package / "model" / "golden.onnx")


@pytest.fixture(scope="module")
def changing_flip(golden, digits_rtl_package):
    """A weight bit whose flip changes raw outputs of the package's self-test vectors."""
    from fpgaprint.core.package import load_vectors

    x = load_vectors(digits_rtl_package)["inputs"]
    return first_changing_flip(golden, x, "MVAU_2/weights", 7)[0]


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64))


def test_healthy_board_is_bit_exact(pkg, golden):
    path, pub = pkg
    board = open_backend(path, "rtlsim", trusted_key=pub)
    try:
        st = board.selftest()
        assert st["passed"] and st["exact_mismatches"] == 0 and st["count"] > 0
        x = _inputs(40, 1)
        raw, labels = board.infer(x)
        want_raw, _, want_labels = golden.run(x)
        np.testing.assert_array_equal(raw, want_raw)
        np.testing.assert_array_equal(labels, want_labels)
        assert board.identity()["backend"] == "rtlsim" and board.cycles > 0
        board.reset()  # a reboot keeps the design answering
        np.testing.assert_array_equal(board.infer(x[:3])[0], want_raw[:3])
    finally:
        board.close()


def test_flip_is_one_image_bit_and_computes_like_the_flipped_golden_model(pkg, golden,
                                                                         changing_flip):
    path, pub = pkg
    key, index, bit = changing_flip
    board = open_backend(path, "rtlsim", FaultSpec(flips=[changing_flip]), trusted_key=pub)
    try:
        (entry,) = board.fault_log()
        assert (entry["memory"], entry["index"], entry["bit"]) == (key, index, bit)
        assert entry["effective"]
        # one bit of the packaged memory image differs, in the MVAU_2 weight image
        (change,) = entry["image_bits"]
        assert change["file"] == "mem/MVAU_rtl_2_memblock.dat"
        packaged = (path / "hw" / "rtl" / change["file"]).read_text().split()
        simulated = (board.run_dir / change["file"]).read_text().split()  # a private copy
        line = change["line"] - 1
        assert [i for i, (a, b) in enumerate(zip(packaged, simulated)) if a != b] == [line]
        assert int(packaged[line], 16) ^ int(simulated[line], 16) == 1 << change["bit"]
        x = np.concatenate([_inputs(24, 2), np.zeros((1, 64), np.int64)])
        want = golden.flipped([changing_flip]).run(x)[0]
        np.testing.assert_array_equal(board.infer(x)[0], want)
        assert not board.selftest()["passed"]
        assert int(board.memories()[key].values.reshape(-1)[index]) == entry["new"]
    finally:
        board.close()


def test_stuck_threshold_bit_follows_the_golden_model(pkg, golden):
    """A stuck least significant bit that keeps the thresholds sorted: the RTL (a binary search
    over its thresholds) computes what the golden model (counting thresholds) computes."""
    path, pub = pkg
    t = golden.memories()["Thresholding_0/thresholds"]
    v = t.values
    c, s = next((c, s) for c in range(v.shape[0]) for s in range(1, v.shape[1] - 1)
                if int(v[c, s]) % 2 == 0 and v[c, s - 1] < v[c, s] and v[c, s] + 1 < v[c, s + 1])
    index = c * v.shape[1] + s
    board = open_backend(path, "rtlsim",
                         FaultSpec(stuck_at=[("Thresholding_0/thresholds", index, 0, 1)]),
                         trusted_key=pub)
    try:
        (entry,) = board.fault_log()
        assert entry["new"] == entry["old"] + 1
        (change,) = entry["image_bits"]
        assert change["file"].startswith("mem/Thresholding_rtl_0_threshs_")
        x = _inputs(32, 3)
        want = golden.flipped([("Thresholding_0/thresholds", index, 0)]).run(x)[0]
        np.testing.assert_array_equal(board.infer(x)[0], want)
    finally:
        board.close()


def test_random_flips_hit_the_same_bits_as_on_the_virtual_board(pkg):
    path, pub = pkg
    spec = FaultSpec(flip_bits=6, seed=11)
    rtl = open_backend(path, "rtlsim", spec, trusted_key=pub)
    virtual = open_backend(path, "virtual", spec, trusted_key=pub)
    try:
        log = rtl.fault_log()
        strip = [{k: v for k, v in e.items() if k != "image_bits"} for e in log]
        assert strip == virtual.fault_log()
        bits = {(c["file"], c["line"], c["bit"]) for e in log for c in e["image_bits"]}
        assert len(bits) == sum(e["effective"] for e in log)  # one image bit per flipped bit
    finally:
        rtl.close()
        virtual.close()


def test_package_without_stitched_rtl_is_refused(digits_package, keypair, run_cli):
    with pytest.raises(InputError, match="no stitched RTL"):
        open_backend(digits_package, "rtlsim", trusted_key=keypair[1])
    code, _, err = run_cli("board", "serve", digits_package, "--pty", "--backend", "rtlsim",
                           "--trusted-key", keypair[1])
    assert code == 2 and "no stitched RTL" in err and "--backend virtual" in err


def test_a_signed_design_that_does_not_build_is_named_by_the_package_path(
        digits_rtl_package, keypair, tmp_path):
    """The board runs a private copy of the verified package; its errors name the package
    as the user gave it, not the copy."""
    import shutil

    from conftest import resign

    from fpgaprint.core.errors import FpgaprintError

    copy = tmp_path / "pkg"
    shutil.copytree(digits_rtl_package, copy)
    (copy / "hw" / "rtl" / "finn_design.v").write_text("module finn_design(; endmodule\n")
    resign(copy, keypair[0])
    with pytest.raises(FpgaprintError) as e:
        open_backend(copy, "rtlsim", trusted_key=keypair[1])
    assert str(copy) in str(e.value) and "fpgaprint-pkg-" not in str(e.value), str(e.value)


def test_swap_and_replay_need_the_virtual_backend(pkg):
    path, pub = pkg
    with pytest.raises(InputError, match="need the virtual backend"):
        open_backend(path, "rtlsim", FaultSpec(replay=True), trusted_key=pub)


def test_verify_passes_and_a_flipped_bit_fails_over_a_pty(pkg, changing_flip, run_cli, tmp_path):
    path, pub = pkg
    key, index, bit = changing_flip
    common = ("--backend", "rtlsim", "--trusted-key", pub)
    with served_boards((path, "--pty", *common),
                       (path, "--pty", *common, "--flip", f"{key}:{index}:{bit}")) as (good, bad):
        code, out, err = run_cli("verify", "--port", good.port, "--package", path,
                                 "--trusted-key", pub, "--json", tmp_path / "good.json")
        assert code == 0, out + err
        assert "PASS" in out + err
        code, out, err = run_cli("verify", "--port", bad.port, "--package", path,
                                 "--trusted-key", pub)
        assert code == 1, out + err
        assert "FAIL" in out + err
