"""Bad input to `fpgaprint build`: one clear message, exit 2, nothing that looks complete."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from fpgaprint.compiler.config import BuildConfig
from fpgaprint.core.boards import BOARDS, check_resources, get_board
from fpgaprint.core.errors import InputError


def _float_onnx(path, op="Relu"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    node = helper.make_node(op, ["x"], ["y"], name=f"{op}_node")
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y])), path)


def _quant_onnx_with(path, op):
    """A QONNX-looking graph (has a Quant node) with an operator FINN cannot map."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v])
             for n, v in (("s", 0.5), ("z", 0.0), ("b", 4.0))]
    q = helper.make_node("Quant", ["x", "s", "z", "b"], ["q"], name="Quant_0",
                         domain="qonnx.custom_op.general", signed=1, narrow=0,
                         rounding_mode="ROUND")
    bad = helper.make_node(op, ["q"], ["y"], name="Mystery_7")
    onnx.save(helper.make_model(helper.make_graph([q, bad], "g", [x], [y], inits)), path)


def _assert_no_package(out):
    assert not (out / "manifest.json").exists()
    assert not (out / "reports" / "build.json").exists()


@pytest.mark.parametrize("case", ["missing", "not_onnx", "unquantized", "unsupported_op",
                                  "unknown_board", "bad_config"])
def test_bad_input_exit_2(tmp_path, run_cli, case):
    out = tmp_path / "out"
    model, extra = str(tmp_path / "m.onnx"), []
    if case == "missing":
        model = str(tmp_path / "nope.onnx")
        expect = "no such"
    elif case == "not_onnx":
        (tmp_path / "m.onnx").write_text("this is not a protobuf")
        expect = "not an ONNX model"
    elif case == "unquantized":
        _float_onnx(model)
        expect = "not quantized"
    elif case == "unsupported_op":
        _quant_onnx_with(model, "Softmax")
        expect = "unsupported operator Softmax at node Mystery_7"
    elif case == "unknown_board":
        _float_onnx(model)
        extra = ["--board", "Pynq-Z9"]
        expect = "valid boards: Pynq-Z1"
    else:
        _float_onnx(model)
        cfg = tmp_path / "build.yaml"
        cfg.write_text("weight_bits: 4\nwieght_bits: 2\n")
        extra = ["--config", str(cfg)]
        expect = "unknown config key(s) wieght_bits"
    code, _, err = run_cli("build", model, "--out", out, *extra)
    assert code == 2, err
    assert expect in err
    assert err.count("error:") == 1
    _assert_no_package(out)


def test_board_registry_matches_finn():
    from finn.util.basic import part_map

    assert {"Pynq-Z1", "Pynq-Z2", "Ultra96-V2", "ZCU104", "KV260", "Alveo-U250"} <= set(BOARDS)
    for board in BOARDS.values():
        assert part_map[board.finn_board] == board.part, board.name
        assert board.resources["LUT"] > 0 and board.clock_ns > 0
    assert get_board("pynq-z1").name == "Pynq-Z1"
    with pytest.raises(InputError, match="valid boards"):
        get_board("Arty")


def test_resource_check_warns_and_fails():
    z1 = get_board("Pynq-Z1")
    assert check_resources(z1, {"LUT": 1000}) == []
    assert check_resources(z1, {"LUT": 50000})[0][0] == "warn"
    assert check_resources(z1, {"DSP": 221})[0][0] == "fail"
    assert check_resources(z1, {"URAM": 1})[0][0] == "fail"


def test_boards_command_lists_all(run_cli):
    code, out, _ = run_cli("boards")
    assert code == 0
    for name in BOARDS:
        assert name in out


def test_config_cli_overrides_yaml(tmp_path):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("weight_bits: 2\nact_bits: 2\n")
    c = BuildConfig.load(cfg, act_bits=3, weight_bits=None)
    assert (c.weight_bits, c.act_bits) == (2, 3)
    with pytest.raises(InputError, match="weight_bits=0"):
        BuildConfig.load(None, weight_bits=0)
