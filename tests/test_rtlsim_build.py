"""RTL co-simulation in the build: impl_style, node-by-node rtlsim of RTL layers against the
golden model (those outside a stitched design, every one on request or to name the layer a
stitched design differs in), the stitched RTL accelerator (its top, its package folder, its
simulation), and the failure modes (a corrupted memory image, Verilator missing or failing, a
stalled design). The Vivado steps' contract is in test_vivado_kernel.py.

The zoo builds are the session's shared ones (`compiled`); tests that must change a build work
on a scratch build of the digits model's QONNX export in this module's own directory.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import own_digits_build

from fpgaprint.compiler.build import build_model
from fpgaprint.compiler.config import BuildConfig
from fpgaprint.compiler.rtlsim import SimulationError
from fpgaprint.compiler.rtlsim.design import StitchedDesign
from fpgaprint.compiler.rtlsim.errors import RtlMismatchError
from fpgaprint.compiler.rtlsim.stitch import module_ports
from fpgaprint.core.golden import GoldenModel

PORTS = [("input", "ap_clk"), ("input", "ap_rst_n"), ("input", "s_axis_0_tdata"),
         ("input", "s_axis_0_tvalid"), ("output", "s_axis_0_tready"),
         ("output", "m_axis_0_tdata"), ("output", "m_axis_0_tvalid"),
         ("input", "m_axis_0_tready")]


def _grid_inputs(c, n: int, seed: int) -> np.ndarray:
    shape = c.io["input"]["shape"][1:]
    return np.random.default_rng(seed).integers(0, 256, (n, *shape))


@pytest.mark.parametrize("name", ["digits-mlp", "tfc-w2a2"])
def test_auto_build_is_all_rtl_and_bit_exact_at_every_layer_and_stitched(compiled, name):
    c = compiled(name)
    report = c.result.report
    rtl = report["rtl"]
    assert rtl["impl_style"] == "auto"
    layers = rtl["layers"]
    assert layers and all(r["impl"] == "rtl" and r["simulated"] for r in layers), layers
    assert {"MVAU_rtl", "Thresholding_rtl"} <= {r["op_type"] for r in layers}
    # every layer is in the stitched design, whose simulation covers it
    assert all(r["golden_layer"] and r["covered_by"] == "finn_design" for r in layers)
    n = report["equivalence_inputs"]
    assert rtl["node_by_node"] == {**rtl["node_by_node"], "ok": True,
                                   "covered_by": "finn_design", "layers": 0}
    st = rtl["stitched"]
    assert st["built"] and st["ok"] and st["vectors"] == n and st["top"] == "finn_design"
    assert st["latency_cycles"] > 0 and st["ii_cycles"] > 0
    assert st["estimate"]["latency_cycles"] > 0 and st["estimate"]["ii_cycles"] > 0
    stages = {r["stage"]: r for r in report["equivalence"]}
    assert "rtlsim_layers" not in stages and stages["rtlsim_stitched"]["ok"]
    on_disk = json.loads((c.out / "reports" / "build.json").read_text())
    assert on_disk["rtl"]["stitched"]["latency_cycles"] == st["latency_cycles"]
    # the packaged design, simulated again on fresh vectors, is bit-exact with the golden model
    x = _grid_inputs(c, 20, 9)
    with StitchedDesign(c.out / "hw" / "rtl").simulator() as sim:
        raw, cycles = sim.run(x)
    np.testing.assert_array_equal(raw, GoldenModel(c.golden).run(x)[0])
    assert cycles >= 20 * st["ii_cycles"] * 0.5


def test_stitched_top_has_the_finn_stitched_ip_ports(digits_build):
    rtl = digits_build.out / "hw" / "rtl"
    design = StitchedDesign(rtl)
    assert module_ports((rtl / "finn_design.v").read_text(), "finn_design") == PORTS
    widths = {p.name: p.width for p in design.build().ports}
    assert widths["s_axis_0_tdata"] == design.raw["ports"]["input"]["width"]
    assert widths["m_axis_0_tdata"] == design.raw["ports"]["output"]["width"]
    assert widths["s_axis_0_tdata"] == 8 * design.io.ishape_packed[-1]
    assert set(widths) == {p for _, p in PORTS}
    assert design.sources[-1] == "finn_design.v"
    kinds = [layer["op_type"] for layer in design.raw["layers"]]
    assert kinds[0] == kinds[-1] == "StreamingFIFO_rtl"  # FINN+'s InsertFIFO at both ends


def test_package_holds_the_rtl_hashed_and_without_absolute_paths(digits_rtl_package,
                                                                 digits_build, keypair):
    from fpgaprint.core.package import verify_package

    with verify_package(digits_rtl_package, trusted_key=keypair[1]) as p:
        files = p.manifest["files"]
    rtl = digits_rtl_package / "hw" / "rtl"
    on_disk = {f.relative_to(digits_rtl_package).as_posix() for f in rtl.rglob("*") if f.is_file()}
    assert on_disk <= set(files) and "hw/rtl/finn_design.v" in on_disk
    assert any(f.startswith("hw/rtl/mem/") and f.endswith(".dat") for f in on_disk)
    design = json.loads((rtl / "design.json").read_text())
    for m in design["memories"]:
        assert all(rel.startswith("mem/") and (rtl / rel).is_file() for rel in m["files"].values())
    forbidden = [str(digits_build.out), str(Path.home()), "code_gen_ipgen"]
    for f in [*rtl.rglob("*"), digits_rtl_package / "manifest.json"]:
        if not f.is_file():
            continue
        data = f.read_bytes()
        for s in forbidden:
            assert s.encode() not in data, (f, s)
        if f.suffix in (".v", ".sv", ".json", ".dat"):
            assert not re.search(rb'"/[^"\n]*"', data), f  # no absolute path literal
    inits = [line for f in (rtl / "layers").glob("*memstream_wrapper.v")
             for line in f.read_text().splitlines() if "parameter  INIT_FILE" in line]
    assert inits and all('"mem/' in line for line in inits)


def test_impl_style_is_validated():
    from fpgaprint.core.errors import InputError

    with pytest.raises(InputError, match="impl_style='vhdl': expected 'auto', 'rtl' or 'hls'"):
        BuildConfig.load(impl_style="vhdl")


def test_impl_style_rtl_names_the_layers_left_in_hls():
    from fpgaprint.compiler.rtlsim.impl import HLS_NOTE, require_rtl
    from fpgaprint.core.errors import InputError

    rows = [{"layer": "MVAU_rtl_0", "impl": "rtl"}, {"layer": "Pool_hls_0", "impl": "hls",
                                                     "note": HLS_NOTE}]
    require_rtl(rows, "auto", "xc7z020clg400-1")
    with pytest.raises(InputError, match="no RTL implementation for Pool_hls_0 on xc7z020"):
        require_rtl(rows, "rtl", "xc7z020clg400-1")


# ---------------------------------------------------------------- scratch builds


@pytest.fixture(scope="module")
def scratch(digits_build, tmp_path_factory):
    """A digits build of its own (from the shared build's QONNX export), changed and restored
    by the tests below."""
    return own_digits_build(digits_build, tmp_path_factory.mktemp("rtl-scratch"))


def _source(out: Path) -> Path:
    return out.parent / "src" / "qonnx.onnx"


def _code_gen(out: Path, layer: str) -> Path:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    model = ModelWrapper(str(sorted((out / "model" / "steps").glob("*_codegen.onnx"))[0]))
    return Path(getCustomOp(model.get_node_from_name(layer)).get_nodeattr("code_gen_dir_ipgen"))


class _Edited:
    """A file changed for one test and restored afterwards."""

    def __init__(self, path: Path, edit):
        self.path, self.edit = path, edit

    def __enter__(self):
        self.orig = self.path.read_bytes()
        self.path.write_text(self.edit(self.orig.decode()))
        return self

    def __exit__(self, *exc):
        self.path.write_bytes(self.orig)


def _flip_hex_digit(text: str, line: int) -> str:
    lines = text.splitlines()
    d = lines[line]
    lines[line] = d[:-1] + ("0" if d[-1] != "0" else "1")
    return "\n".join(lines) + "\n"


def test_corrupted_weight_image_fails_the_build_naming_layer_file_and_line(scratch, run_cli):
    image = _code_gen(scratch, "MVAU_rtl_1") / "memblock.dat"
    with _Edited(image, lambda t: _flip_hex_digit(t, 4)):
        code, _, err = run_cli("build", _source(scratch), "--out", scratch,
                               "--samples", "4")
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert "mem/MVAU_rtl_1_memblock.dat of RTL layer MVAU_rtl_1" in line
    assert "MVAU_1/weights" in line and "line 5" in line
    failed = json.loads((scratch / "reports" / "build.failed.json").read_text())
    assert failed["status"] == "failed" and "MVAU_rtl_1" in failed["error"]
    assert not (scratch / "reports" / "build.json").exists()


def test_node_by_node_all_simulates_every_layer_besides_the_stitched_design(scratch, tmp_path):
    out = tmp_path / "all"
    res = build_model(str(_source(scratch)), "Pynq-Z1", out,
                      BuildConfig(equivalence_samples=4, rtlsim_node_by_node="all"),
                      allow_unsigned=True)
    rtl = res.report["rtl"]
    layers = rtl["layers"]
    assert layers and all(r["simulated"] and r["cycles_rtlsim"] > 0 and "covered_by" not in r
                          for r in layers)
    assert rtl["node_by_node"] == {**rtl["node_by_node"], "ok": True, "vectors": 4,
                                   "layers": len(layers)}
    stages = {r["stage"]: r for r in res.report["equivalence"]}
    assert stages["rtlsim_layers"]["exact"] and stages["rtlsim_stitched"]["ok"]
    assert rtl["stitched"]["built"] and rtl["stitched"]["ok"]


def test_a_stitched_design_that_differs_is_traced_to_its_layer(scratch, run_cli):
    """A layer's RTL changed (its output offset): the stitched design differs, and its layers,
    simulated one by one, name the layer, the vector and the element (exit 1)."""
    rtl = _code_gen(scratch, "Thresholding_rtl_0") / "Thresholding_rtl_0.v"
    with _Edited(rtl, lambda t: t.replace("parameter  BIAS   = 0", "parameter  BIAS   = 1", 1)):
        assert "BIAS   = 1" in rtl.read_text()
        code, _, err = run_cli("build", _source(scratch), "--out", scratch, "--samples", "4")
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: RTL layer Thresholding_rtl_0 (Thresholding_rtl) differs from "
                           "the golden model on equivalence vector "), line
    failed = json.loads((scratch / "reports" / "build.failed.json").read_text())["rtl"]
    assert failed["stitched"]["ok"] is False and failed["stitched"]["stage"] == "rtlsim_stitched"
    assert failed["stitched"]["error"].startswith("stitched RTL design finn_design differs")
    assert failed["node_by_node"] == {**failed["node_by_node"], "ok": False,
                                      "stage": "rtlsim_layers", "exit_code": 1}
    assert "simulating its layers one by one" in (scratch / "build.log").read_text()


def test_corrupted_threshold_image_is_named_with_vector_and_element(scratch, tmp_path):
    """Node-level rtlsim reads the threshold images themselves: the layer that differs, the
    vector and the element are named."""
    from fpgaprint.compiler.rtlsim.layers import check_layers

    steps = scratch / "model" / "steps"
    codegen = str(sorted(steps.glob("*_codegen.onnx"))[0])
    golden = scratch / "model" / "golden.onnx"
    x = np.random.default_rng(4).integers(0, 256, (6, 64))
    ok = check_layers(codegen, golden, x)
    assert [r["layer"] for r in ok["layers"]][:2] == ["MVAU_rtl_0", "Thresholding_rtl_0"]
    image = _code_gen(scratch, "Thresholding_rtl_0") / "Thresholding_rtl_0_threshs_0_0.dat"
    with _Edited(image, lambda t: "\n".join(["7fff"] * len(t.split())) + "\n"):
        with pytest.raises(RtlMismatchError) as e:
            check_layers(codegen, golden, x)
    msg = str(e.value)
    assert msg.startswith("RTL layer Thresholding_rtl_0 (Thresholding_rtl) differs from the "
                          "golden model on equivalence vector 0:")
    assert re.search(r"\w+_out\d+\[\d+\] is -?\d+ in RTL simulation, -?\d+ in the "
                     r"golden model", msg), msg
    assert e.value.exit_code == 1


def test_missing_verilator_is_one_line_naming_the_layer(scratch, run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("FPGAPRINT_VERILATOR", str(tmp_path / "no-verilator"))
    code, _, err = run_cli("build", _source(scratch), "--out", scratch,
                           "--samples", "4")
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: MVAU_rtl_0: FPGAPRINT_VERILATOR=") and "not a file" in line


def test_failing_compile_is_one_line_naming_the_layer_with_the_log_in_build_log(scratch, run_cli):
    wrapper = _code_gen(scratch, "MVAU_rtl_1") / "MVAU_rtl_1_wrapper.v"
    with _Edited(wrapper, lambda t: t + "\nmodule broken; wire w = ; endmodule\n"):
        code, _, err = run_cli("build", _source(scratch), "--out", scratch,
                               "--samples", "4")
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert "MVAU_rtl_1" in line and "%Error" in line and "failed" in line
    log = (scratch / "build.log").read_text()
    assert "--- full log" in log and "syntax error" in log


def test_stalled_stitched_design_times_out_naming_it(digits_build, monkeypatch):
    design = StitchedDesign(digits_build.out / "hw" / "rtl")
    x = _grid_inputs(digits_build, 2, 1)
    words = design.words_out
    with design.simulator() as sim:
        # expect one output word more than the design ever produces
        monkeypatch.setattr(StitchedDesign, "words_out", property(lambda s: words + 1))
        t0 = time.perf_counter()
        with pytest.raises(SimulationError) as e:
            sim.run(x)
        assert time.perf_counter() - t0 < 60
        msg = str(e.value)
        assert msg.startswith("stitched design finn_design:") and "m_axis_0" in msg
        assert "\n" not in msg
        monkeypatch.undo()
        raw, _ = sim.run(x)  # reset after the timeout: it works again
    np.testing.assert_array_equal(raw, GoldenModel(digits_build.golden).run(x)[0])


def test_hls_build_lists_its_layers_as_not_simulated(digits_build, run_cli, tmp_path):
    out = tmp_path / "hls"
    code, _, err = run_cli("build", digits_build.out / "model" / "qonnx.onnx", "--out", out,
                           "--samples", "4", "--impl-style", "hls")
    assert code == 0, err
    rtl = json.loads((out / "reports" / "build.json").read_text())["rtl"]
    assert rtl["impl_style"] == "hls" and rtl["layers"]
    assert all(r["impl"] == "hls" and not r["simulated"] and
               r["note"] == "not simulated here: needs Vitis HLS" for r in rtl["layers"])
    assert rtl["stitched"] is None and not (out / "hw" / "rtl").exists()
    assert "not simulated here: needs Vitis HLS" in err


def test_memory_images_have_the_documented_layout(digits_build):
    """docs/package-format.md's layout of the weight and threshold images, decoded from the
    packaged files, gives back the golden model's memories."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fpgaprint.core.words import WordFormat

    rtl = digits_build.out / "hw" / "rtl"
    design = json.loads((rtl / "design.json").read_text())
    model = ModelWrapper(str(rtl / "design.onnx"))
    mems = GoldenModel(digits_build.golden).memories()
    kinds = set()
    for m in design["memories"]:
        op = getCustomOp(model.get_node_from_name(m["layer"]))
        fmt = WordFormat.of(m["datatype"])
        w, mask = fmt.bits, (1 << fmt.bits) - 1
        want = mems[m["key"]].values
        got = np.zeros_like(want)

        def lines(name):
            return [int(x, 16) for x in (rtl / m["files"][name]).read_text().split()]

        pe = op.get_nodeattr("PE")
        if m["op_type"] == "MVAU_rtl":
            mw, mh = want.shape
            simd = op.get_nodeattr("SIMD")
            words = lines("memblock.dat")
            assert len(words) == mw * mh // (pe * simd)
            for i in range(mw):
                for n in range(mh):
                    word = words[(n // pe) * (mw // simd) + i // simd]
                    got[i, n] = fmt.from_word(word >> ((n % pe) * simd + i % simd) * w & mask)
        else:
            c_all, steps = want.shape
            o = op.get_output_datatype().bitwidth()
            for p in range(pe):
                for s in range(o):
                    words = lines(f"{m['layer']}_threshs_{p}_{s}.dat")
                    assert len(words) == (c_all // pe) << s
                    for c in range(c_all // pe):
                        for j in range(1 << s):
                            step = (j << (o - s)) + (1 << (o - s - 1)) - 1
                            if step < steps:
                                got[c * pe + p, step] = fmt.from_word(words[(c << s) + j] & mask)
        np.testing.assert_array_equal(got, want, err_msg=m["key"])
        kinds.add(m["op_type"])
    assert kinds == {"MVAU_rtl", "Thresholding_rtl"}


# ---------------------------------------------------------------- what is simulated is flashed


def test_a_graph_other_than_the_simulated_one_is_refused(digits_build):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fpgaprint.compiler.vivado import check_simulated

    rtl = digits_build.out / "hw" / "rtl"
    model = ModelWrapper(str(rtl / "design.onnx"))
    fifo = next(n for n in model.graph.node if n.op_type == "StreamingFIFO_rtl" and
                n.name != "StreamingFIFO_rtl_0")
    op = getCustomOp(fifo)
    op.set_nodeattr("depth", op.get_nodeattr("depth") + 1)
    with pytest.raises(RtlMismatchError, match=rf"the graph for Vivado is not the simulated "
                                               rf"design \(hw/rtl\): {fifo.name}.depth is"):
        check_simulated(model, rtl)
