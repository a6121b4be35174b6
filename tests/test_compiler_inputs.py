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
        _quant_onnx_with(model, "Erf")  # (a Softmax head at the output is kept on the host)
        expect = "unsupported operator Erf at node Mystery_7"
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


def test_config_accepts_finn_key_names(tmp_path):
    cfg = tmp_path / "finn.yaml"
    (tmp_path / "fold.json").write_text("{}")
    cfg.write_text(f"synth_clk_period_ns: 5\nfolding_config_file: {tmp_path / 'fold.json'}\n"
                   "target_fps: 1000\nmvau_wwidth_max: 64\nstandalone_thresholds: true\n")
    c = BuildConfig.load(cfg)
    assert c.clock_ns == 5.0 and c.folding_config == str(tmp_path / "fold.json")
    assert (c.target_fps, c.mvau_wwidth_max, c.standalone_thresholds) == (1000, 64, True)
    from fpgaprint.compiler.config import finn_config

    finn = finn_config(c, get_board("Pynq-Z1"), tmp_path / "out")
    assert finn.synth_clk_period_ns == 5.0 and finn.fpga_part == "xc7z020clg400-1"
    assert str(finn.folding_config_file).endswith("fold.json") and finn.target_fps == 1000


@pytest.mark.parametrize("text, key, expected", [
    ("weight_bits: '4'", "weight_bits", "an integer"),
    ("qat: 1", "qat", "true or false"),
    ("clock_ns: fast", "clock_ns", "a number (or null)"),
    ("synth_clk_period_ns: -1", "clock_ns", "greater than 0"),
    ("equivalence_samples: 0", "equivalence_samples", "greater than or equal to 1"),
    ("resource_warn: 2", "resource_warn", "less than or equal to 1"),
])
def test_config_wrong_type_names_key_and_type(tmp_path, text, key, expected):
    cfg = tmp_path / "b.yaml"
    cfg.write_text(text + "\n")
    with pytest.raises(InputError) as e:
        BuildConfig.load(cfg)
    msg = str(e.value)
    assert msg.startswith(f"config {key}=") and expected in msg and str(cfg) in msg, msg


@pytest.mark.parametrize("args, flag", [
    (["train", "zoo:digits-mlp", "--epochs", "0", "--out", "{tmp}/m.pt"], "--epochs"),
    (["train", "zoo:digits-mlp", "--out", "{tmp}/file/m.pt"], "--out"),
    (["build", "zoo:digits-mlp", "--clock-ns", "-1", "--out", "{tmp}/o"], "--clock-ns"),
    (["build", "zoo:digits-mlp", "--samples", "0", "--out", "{tmp}/o"], "--samples"),
    (["build", "zoo:digits-mlp", "--weight-bits", "0", "--out", "{tmp}/o"], "--weight-bits"),
    (["build", "zoo:digits-mlp", "--out", "{tmp}/file/o"], "--out"),
    (["build", "{tmp}/empty.onnx", "--out", "{tmp}/o"], "empty"),
])
def test_cli_edges_exit_2_naming_the_flag(tmp_path, run_cli, args, flag):
    (tmp_path / "file").write_text("a file, not a directory")
    (tmp_path / "empty.onnx").write_bytes(b"")
    code, _, err = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2, err
    assert flag in err and len(err.strip().splitlines()) <= 3, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.pt").exists()


def test_folding_json_contents_are_a_step_input(digits_build, tmp_path):
    """An edited folding JSON reruns the folding step; an entry for no node is an error."""
    import json
    import shutil

    from fpgaprint.compiler.build import build_model

    out = tmp_path / "pkg"
    shutil.copytree(digits_build.out, out)
    names = [s for s in json.loads((out / "finn" / "state.json").read_text())["steps"]]
    assert "folding" in names
    from qonnx.core.modelwrapper import ModelWrapper

    (step,) = (out / "model" / "steps").glob("*_folding.onnx")
    mvau = next(n.name for n in ModelWrapper(str(step)).graph.node
                if n.op_type.startswith("MVAU"))
    fold = tmp_path / "fold.json"
    cfg = BuildConfig(equivalence_samples=16, folding_config=str(fold))
    fold.write_text(json.dumps({"Defaults": {}, mvau: {"PE": 1}}))
    first = build_model("zoo:digits-mlp", "Pynq-Z1", out, cfg)
    assert "folding" not in first.skipped_steps and first.report["folding"]["source"]
    again = build_model("zoo:digits-mlp", "Pynq-Z1", out, cfg)
    assert "folding" in again.skipped_steps
    fold.write_text(json.dumps({"Defaults": {}, mvau: {"PE": 1}, "MVAU_x_9": {"PE": 2}}))
    with pytest.raises(InputError, match="folding entry 'MVAU_x_9' names no node"):
        build_model("zoo:digits-mlp", "Pynq-Z1", out, cfg)


def test_step_inputs_are_recorded_through_copies_of_the_config():
    """What a step reads from FINN+'s config is its resume key, also when read through a copy;
    the plain config behind it is unchanged and records nothing."""
    import copy

    from finn.builder.build_dataflow_config import DataflowBuildConfig

    from fpgaprint.compiler.steps import Recorder, _unwrap

    cfg = DataflowBuildConfig(output_dir="o", synth_clk_period_ns=5.0, generate_outputs=[],
                              target_fps=1000)
    rec = Recorder()
    seen = rec.proxy("finn", cfg)
    assert seen.target_fps == 1000 and copy.copy(seen).mvau_wwidth_max == cfg.mvau_wwidth_max
    assert copy.deepcopy(seen).synth_clk_period_ns == 5.0
    assert set(rec.reads) == {"finn.target_fps", "finn.mvau_wwidth_max",
                              "finn.synth_clk_period_ns"}
    other = Recorder()
    assert type(other.proxy("finn", cfg)) is type(seen)  # one recorded class per config class
    plain = _unwrap(seen)
    assert type(plain) is DataflowBuildConfig and plain == cfg
    plain.auto_fifo_depths
    assert "finn.auto_fifo_depths" not in rec.reads and not other.reads


def test_an_op_on_constants_alone_needs_no_mapping_but_on_data_it_is_named():
    """FINN+ folds a node whose inputs are all constant (Quant excepted), so its op may be one
    the compiler cannot map; the same op on the input is named, as is one with an empty
    (optional, not constant) input."""
    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaprint.compiler.steps import check_supported_ops
    from fpgaprint.core.errors import UnsupportedModelError

    def graph(pow_input: str, extra_input: str | None = None):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
        inits = [helper.make_tensor("v", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0]),
                 helper.make_tensor("s", TensorProto.FLOAT, [], [0.5]),
                 helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
                 helper.make_tensor("b", TensorProto.FLOAT, [], [4.0])]
        half = helper.make_node("Constant", [], ["half"], name="Half",
                                value=helper.make_tensor("h", TensorProto.FLOAT, [], [0.5]))
        pw = helper.make_node("Pow", [pow_input, "half"] + ([extra_input] if extra_input
                                                            is not None else []),
                              ["r"], name="Pow_7")
        q = helper.make_node("Quant", ["x", "s", "z", "b"], ["q"], name="Quant_0",
                             domain="qonnx.custom_op.general", signed=1, narrow=0,
                             rounding_mode="ROUND")
        div = helper.make_node("Div", ["q", "r"], ["y"], name="Div_1")
        return ModelWrapper(helper.make_model(
            helper.make_graph([half, pw, q, div], "g", [x], [y], inits)))

    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.infer_shapes import InferShapes

    check_supported_ops(graph("v"))  # sqrt of a constant: folded by FINN+, as here
    folded = graph("v").transform(InferShapes()).transform(FoldConstants())
    assert [n.op_type for n in folded.graph.node] == ["Quant", "Div"]
    with pytest.raises(UnsupportedModelError, match="unsupported operator Pow at node Pow_7"):
        check_supported_ops(graph("x"))
    with pytest.raises(UnsupportedModelError, match="unsupported operator Pow at node Pow_7"):
        check_supported_ops(graph("v", extra_input=""))


def test_a_node_reading_one_tensor_twice_keeps_both_inputs_when_renamed():
    """qonnx's rename renamed only the first of them (fixed in compiler/qonnx_fixes.py)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveReadableTensorNames

    from fpgaprint.compiler.frontend import with_shapes

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    cat = helper.make_node("Concat", ["x", "x"], ["y"], name="Concat_0", axis=1)
    model = with_shapes(ModelWrapper(helper.make_model(helper.make_graph([cat], "g", [x], [y]))))
    model = model.transform(GiveReadableTensorNames())
    node = model.graph.node[0]
    assert node.input[0] == node.input[1] == model.graph.input[0].name
    assert model.check_all_tensor_shapes_specified()


def test_input_feeding_a_concat_is_named_not_unexpected(tmp_path, run_cli):
    import models

    module, shape = models.input_concat()
    path = models.export(module, shape, tmp_path / "m.onnx")
    cat = next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Concat")
    code, _, err = run_cli("build", path, "--out", tmp_path / "o")
    assert code == 2, err
    assert f"operator Concat {cat}" in err and "unexpected" not in err, err
    assert err.count("error:") == 1


def test_monotonic_function_without_quantizer_says_what_compiles(tmp_path, run_cli):
    _quant_onnx_with(str(tmp_path / "m.onnx"), "Tanh")  # Tanh at the output: not a head
    code, _, err = run_cli("build", tmp_path / "m.onnx", "--out", tmp_path / "o")
    assert code == 2, err
    assert "unsupported operator Tanh at node Mystery_7" in err
    assert "a quantizer follows it" in err and err.count("error:") == 1
