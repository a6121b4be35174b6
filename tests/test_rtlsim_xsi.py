"""RTL co-simulation on Verilator: FINN+'s own node-level rtlsim, bit-exact against python mode.

Each FINN+ HW layer is built unspecialized (the reference, executed in python mode),
specialized to its `_rtl` variant, code-generated with PrepareIP, compiled with FINN+'s
`prepare_rtlsim()` through `finn.xsi` bound to Verilator, and executed with
`exec_mode="rtlsim"`. Compiled layers are shared by the module; a small hand-written
design covers the harness itself (wide ports, stream timing, stalls, $fatal).
"""

from __future__ import annotations

import copy
import stat
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from fpgaprint.compiler.rtlsim import (
    SimulationError,
    VerilatedSim,
    build_library,
    find_verilator,
    xsi,
)
from fpgaprint.compiler.rtlsim import verilator as vl

Z7 = "xc7z020clg400-1"  # DSP48E1
ZU = "xczu7ev-ffvc1156-2-e"  # DSP48E2
VERSAL = "xcvc1902-vsva2197-2MP-e-S"  # DSP58


@pytest.fixture(scope="module")
def rtl_cache():
    """The Verilator cache the builds use (vl.cache_dir()). Its builds are keyed by the hash of
    everything that goes into them, so a cached library is the compile of these very sources;
    test_second_compile_hits_cache_without_running_verilator compiles a design no earlier run
    can have cached, and test_broken_source_gives_one_line_naming_the_top uses an empty one."""
    return vl.cache_dir()


@pytest.fixture(scope="module")
def finn_rtl(rtl_cache):
    """FINN+ set up without Vivado, with finn.xsi bound to Verilator for the module."""
    from fpgaprint.core.finn_env import ensure_finn

    ensure_finn()
    with xsi.use_verilator():
        yield


# -- FINN+ layers ------------------------------------------------------------------------

def _single(op: str, ishape, oshape, idt: str, odt: str, inits=None, **attrs):
    """A one-node HW graph `inp -> op -> outp`; `inits` maps input names to (array, dtype)."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.util.basic import qonnx_make_model

    inits = inits or {}
    node = helper.make_node(op, ["inp", *inits], ["outp"], domain="finn.custom_op.fpgadataflow",
                            backend="fpgadataflow", preferred_impl_style="rtl", **attrs)
    graph = helper.make_graph(
        [node], "layer", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, list(ishape))],
        [helper.make_tensor_value_info("outp", TensorProto.FLOAT, list(oshape))])
    m = ModelWrapper(qonnx_make_model(graph, producer_name="fpgaprint-tests"))
    m.set_tensor_datatype("inp", DataType[idt])
    m.set_tensor_datatype("outp", DataType[odt])
    for name, (value, dt) in inits.items():
        m.set_initializer(name, np.asarray(value, dtype=np.float32))
        m.set_tensor_datatype(name, DataType[dt])
    return m.transform(GiveUniqueNodeNames())


def _ints(rng, dt: str, shape, narrow: bool = False):
    from qonnx.core.datatype import DataType

    t = DataType[dt]
    return rng.integers(int(t.min()) + int(narrow), int(t.max()) + 1, size=shape)


def _mvau(rng, mw, mh, simd, pe, idt, wdt, nvec, narrow, **kw):
    from qonnx.core.datatype import DataType

    w = _ints(rng, wdt, (mw, mh), narrow=narrow)
    if not narrow:
        w[0, 0] = int(DataType[wdt].min())  # full-range weights
    return _single("MVAU", [*nvec, mw], [*nvec, mh], idt, "INT32", {"weights": (w, wdt)},
                   MW=mw, MH=mh, SIMD=simd, PE=pe, inputDataType=idt, weightDataType=wdt,
                   outputDataType="INT32", noActivation=1, numInputVectors=nvec, **kw)


def _thresholding(rng, channels, steps, pe, idt, odt, act, nvec):
    t = np.sort(_ints(rng, idt, (channels, steps)), axis=1)
    return _single("Thresholding", [*nvec, channels], [*nvec, channels], idt, odt,
                   {"thresholds": (t, idt)}, NumChannels=channels, PE=pe, numSteps=steps,
                   inputDataType=idt, weightDataType=idt, outputDataType=odt, ActVal=act,
                   numInputVectors=nvec)


def _swg(ifm, k, stride, ch, simd, dt, depthwise=0):
    ofm = (ifm - k) // stride + 1
    return _single("ConvolutionInputGenerator", [1, ifm, ifm, ch], [1, ofm, ofm, k * k * ch], dt,
                   dt, ConvKernelDim=[k, k], IFMChannels=ch, IFMDim=[ifm, ifm], OFMDim=[ofm, ofm],
                   SIMD=simd, Stride=[stride, stride], Dilation=[1, 1], inputDataType=dt,
                   outputDataType=dt, depthwise=depthwise)


def _dwc(shape, in_width, out_width, dt):
    return _single("StreamingDataWidthConverter", shape, shape, dt, dt, inShape=shape,
                   outShape=shape, inWidth=in_width, outWidth=out_width, dataType=dt)


# name -> (model builder, FPGA part, reference). Reference "python": the unspecialized node
# in python mode; "rtl-python": the _rtl node's own python model (exec_mode="cppsim"), for
# layers whose _rtl variant reorders its output by design (depthwise SWG interleaves
# channels for the VVAU that follows it).
CASES = {
    "mvau_int4_dsp48e1": (lambda r: _mvau(r, 16, 8, 4, 2, "INT4", "INT4", [2, 3], True), Z7,
                          "python"),
    "mvau_uint8_dsp48e2": (lambda r: _mvau(r, 32, 16, 8, 4, "UINT8", "INT8", [4], False), ZU,
                           "python"),
    "mvau_pumped_dsp58": (lambda r: _mvau(r, 24, 12, 6, 3, "INT6", "INT5", [3], False,
                                          pumpedCompute=1), VERSAL, "python"),
    "vvau_dsp58": (lambda r: _single(
        "VVAU", [1, 4, 4, 72], [1, 4, 4, 8], "INT4", "INT32",
        {"weights": (_ints(r, "INT4", (8, 1, 3, 3), narrow=True), "INT4")}, PE=2, SIMD=3,
        Dim=[4, 4], Channels=8, Kernel=[3, 3], inputDataType="INT4", weightDataType="INT4",
        outputDataType="INT32", noActivation=1), VERSAL, "python"),
    "thresholding_uint2": (lambda r: _thresholding(r, 8, 3, 2, "INT8", "UINT2", 0, [1, 4, 4]),
                           Z7, "python"),
    "thresholding_int3_bias": (lambda r: _thresholding(r, 12, 7, 4, "INT10", "INT3", -4,
                                                       [5]), Z7, "python"),
    "swg_3x3": (lambda r: _swg(6, 3, 1, 4, 2, "UINT4"), Z7, "python"),
    "swg_depthwise_stride2": (lambda r: _swg(7, 3, 2, 4, 2, "INT4", depthwise=1), Z7,
                              "rtl-python"),
    "fmpadding": (lambda r: _single("FMPadding", [1, 5, 5, 4], [1, 8, 7, 4], "INT4", "INT4",
                                    ImgDim=[5, 5], Padding=[1, 1, 2, 1], NumChannels=4, SIMD=2,
                                    inputDataType="INT4", numInputVectors=1), Z7, "python"),
    "crop": (lambda r: _single("Crop", [1, 6, 6, 4], [1, 3, 4, 4], "INT4", "INT4",
                               DataType="INT4", ImgDim=[6, 6], NumChannels=4, CropNorth=1,
                               CropSouth=2, CropWest=1, CropEast=1, SIMD=2,
                               numInputVectors=[1]), Z7, "python"),
    "dwc_up": (lambda r: _dwc([1, 4, 12], 8, 24, "INT4"), Z7, "python"),
    "dwc_down": (lambda r: _dwc([1, 4, 12], 48, 16, "INT4"), Z7, "python"),
}


class Layer:
    """A reference model and its specialized, compiled _rtl counterpart."""

    def __init__(self, name: str, edit_generated=None):
        from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
        from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
        from qonnx.custom_op.registry import getCustomOp

        build, part, self.reference = CASES[name]
        self.ref = build(np.random.default_rng(sum(map(ord, name))))
        rtl = copy.deepcopy(self.ref).transform(SpecializeLayers(part))
        self.rtl = rtl.transform(PrepareIP(part, 5.0))
        self.node = self.rtl.graph.node[0]
        self.op = getCustomOp(self.node)
        assert self.node.op_type.endswith("_rtl"), (name, self.node.op_type)
        if edit_generated is not None:
            edit_generated(Path(self.op.get_nodeattr("code_gen_dir_ipgen")))
        t0 = time.perf_counter()
        self.op.prepare_rtlsim(behav=False)
        self.compile_seconds = time.perf_counter() - t0

    def run(self, x: np.ndarray, mode: str = "rtlsim") -> np.ndarray:
        from finn.core.onnx_exec import execute_onnx

        self.op.set_nodeattr("exec_mode", mode)
        return execute_onnx(self.rtl, {"inp": x})["outp"]

    def expected(self, x: np.ndarray) -> np.ndarray:
        from finn.core.onnx_exec import execute_onnx

        if self.reference == "rtl-python":
            return self.run(x, mode="cppsim")
        return execute_onnx(self.ref, {"inp": x})["outp"]

    def random_input(self, rng) -> np.ndarray:
        dt = self.ref.get_tensor_datatype("inp").name
        return _ints(rng, dt, self.ref.get_tensor_shape("inp")).astype(np.float32)


@pytest.fixture(scope="module")
def layers(finn_rtl):
    cache: dict[str, Layer] = {}

    def get(name: str) -> Layer:
        if name not in cache:
            cache[name] = Layer(name)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_rtl_layer_bit_exact_with_python_mode(layers, name):
    layer = layers(name)
    rng = np.random.default_rng(7)
    for _ in range(3):
        x = layer.random_input(rng)
        got = layer.run(x)
        want = layer.expected(x)
        assert got.shape == want.shape
        assert np.array_equal(got, want), (name, np.argwhere(got != want)[:5])
    # FINN+'s cycle counting ran: at least one cycle per output word
    assert layer.op.get_nodeattr("cycles_rtlsim") >= layer.op.get_number_output_values()


def test_streaming_fifo_passes_data_through_finn_node_api(finn_rtl):
    """StreamingFIFO_rtl (never simulated by its execute_node) via the node's rtlsim calls."""
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from finn.util.data_packing import npy_to_rtlsim_input, rtlsim_output_to_npy
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp

    m = _single("StreamingFIFO", [1, 6, 8], [1, 6, 8], "INT5", "INT5", depth=4,
                folded_shape=[1, 6, 2, 4], normal_shape=[1, 6, 8], dataType="INT5",
                impl_style="rtl")
    m = m.transform(SpecializeLayers(Z7)).transform(PrepareIP(Z7, 5.0))
    op = getCustomOp(m.graph.node[0])
    op.prepare_rtlsim(behav=False)
    folded = _ints(np.random.default_rng(3), "INT5", (1, 6, 2, 4)).astype(np.float32)
    d = Path(op.get_nodeattr("code_gen_dir_ipgen"))
    np.save(d / "in.npy", folded)
    words = npy_to_rtlsim_input(str(d / "in.npy"), DataType["INT5"], op.get_instream_width())
    io = {"inputs": {"in0": words}, "outputs": {"out0": []}}
    sim = op.get_rtlsim()
    op.reset_rtlsim(sim)
    op.rtlsim_multi_io(sim, io)
    op.close_rtlsim(sim)
    rtlsim_output_to_npy(io["outputs"]["out0"], str(d / "out.npy"), DataType["INT5"],
                         folded.shape, op.get_outstream_width(), 5)
    assert np.array_equal(np.load(d / "out.npy"), folded)
    assert op.get_nodeattr("cycles_rtlsim") >= len(words)


def test_stalled_layer_times_out_naming_it(layers, monkeypatch):
    """A layer that stops producing output ends in a timeout naming the layer and stream."""
    from finn.custom_op.fpgadataflow.rtl.thresholding_rtl import Thresholding_rtl

    layer = layers("thresholding_uint2")
    real = Thresholding_rtl.get_number_output_values
    # expect one output word more than the layer ever produces
    monkeypatch.setattr(Thresholding_rtl, "get_number_output_values", lambda s: real(s) + 1)
    monkeypatch.setenv("LIVENESS_THRESHOLD", "5000")
    t0 = time.perf_counter()
    with pytest.raises(SimulationError) as e:
        layer.run(layer.random_input(np.random.default_rng(1)))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(layer.node.name + ":")
    assert "out0_V" in msg and "timed out" in msg
    assert time.perf_counter() - t0 < 60


def test_second_compile_hits_cache_without_running_verilator(finn_rtl, tmp_path, monkeypatch):
    """The same layer generated into another directory reuses the build: Verilator runs once."""
    tool = find_verilator()
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "verilator"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\n'
                       + (f'VERILATOR_ROOT="{tool.root}"; export VERILATOR_ROOT\n'
                          if tool.root else "")
                       + f'exec "{tool.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv(vl.BINARY_ENV, str(wrapper))
    assert find_verilator().ident == tool.ident

    # a design no earlier run can have cached: a comment unique to this run in the wrapper
    nonce = f"// {uuid.uuid4()}\n"

    def mark(code_gen_dir: Path) -> None:
        for f in code_gen_dir.glob("*.v"):
            f.write_text(f.read_text() + nonce)

    def builds() -> int:
        lines = calls.read_text().splitlines() if calls.exists() else []
        return sum(1 for ln in lines if ln.strip() != "--version")

    first = Layer("fmpadding", edit_generated=mark)
    assert builds() == 1
    second = Layer("fmpadding", edit_generated=mark)
    assert builds() == 1
    assert first.op.get_nodeattr("code_gen_dir_ipgen") != second.op.get_nodeattr(
        "code_gen_dir_ipgen")
    keys = [Path(layer.op.get_nodeattr("rtlsim_so")).with_name("cache_key").read_text()
            for layer in (first, second)]
    assert keys[0] == keys[1]
    x = second.random_input(np.random.default_rng(2))
    assert np.array_equal(second.run(x), second.expected(x))


def test_broken_source_gives_one_line_naming_the_top(finn_rtl, tmp_path, monkeypatch):
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.custom_op.registry import getCustomOp

    monkeypatch.setenv(vl.CACHE_ENV, str(tmp_path / "cache"))
    m = CASES["fmpadding"][0](None).transform(SpecializeLayers(Z7)).transform(PrepareIP(Z7, 5.0))
    op = getCustomOp(m.graph.node[0])
    top = op.get_verilog_top_module_name()
    gen = Path(op.get_nodeattr("code_gen_dir_ipgen"))
    (wrapper,) = [Path(f) for f in op.get_rtl_file_list(abspath=True) if Path(f).parent == gen]
    assert top in wrapper.read_text()
    with wrapper.open("a") as f:
        f.write("\nmodule broken; wire w = ; endmodule\n")
    with pytest.raises(SimulationError) as e:
        op.prepare_rtlsim(behav=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert top in msg and "%Error" in msg and wrapper.name in msg
    log = Path(e.value.log)
    assert log.is_file() and str(log) in msg
    text = log.read_text()
    assert "syntax error" in text and "--top-module" in text


def test_missing_verilator_names_the_top(finn_rtl, tmp_path, monkeypatch):
    monkeypatch.setenv(vl.BINARY_ENV, str(tmp_path / "no-such-verilator"))
    with pytest.raises(SimulationError) as e:
        build_library("some_top", [Path(xsi.HDL_DIR / "fifo.sv")])
    assert "\n" not in str(e.value) and str(e.value).startswith("some_top:")


def test_install_binds_and_restores_finn_xsi():
    import finn.xsi as finn_xsi

    before = finn_xsi.__dict__.get("compile_sim_obj")
    was = xsi.installed()
    with xsi.use_verilator():
        assert finn_xsi.compile_sim_obj is xsi.compile_sim_obj
        assert xsi.installed()
        with xsi.use_verilator():
            assert xsi.installed()
        assert xsi.installed()
    assert finn_xsi.__dict__.get("compile_sim_obj") is before
    assert xsi.installed() == was


# -- the harness on a small hand-written design -------------------------------------------

TOY = r"""
// One registered stage: out = in ^ 'hA5A5A5 at one word per cycle. After `stall_after`
// outputs (0: never) it stops moving; $fatal on output number `fatal_at` (0: never).
module toy (
  input  ap_clk, input ap_rst_n,
  input  [99:0] wide_in, output [99:0] wide_out,
  input  [15:0] stall_after, input [7:0] fatal_at,
  input  [23:0] in0_V_TDATA, input in0_V_TVALID, output in0_V_TREADY,
  output [23:0] out0_V_TDATA, output out0_V_TVALID, input out0_V_TREADY
);
  assign wide_out = wide_in + 100'd1;
  logic [23:0] D; logic V = 0; logic [15:0] N = 0;
  wire stalled = stall_after != 0 && N >= stall_after;
  assign in0_V_TREADY = !stalled && (!V || out0_V_TREADY);
  assign out0_V_TVALID = V && !stalled;
  assign out0_V_TDATA = D;
  always_ff @(posedge ap_clk) begin
    if (!ap_rst_n) begin V <= 0; N <= 0; end
    else begin
      if (out0_V_TVALID && out0_V_TREADY) begin
        N <= N + 1;
        if (fatal_at != 0 && N + 1 == 16'(fatal_at)) $fatal(1, "toy: fatal at output %0d", N + 1);
      end
      if (in0_V_TREADY && in0_V_TVALID) begin D <= in0_V_TDATA ^ 24'hA5A5A5; V <= 1; end
      else if (out0_V_TVALID && out0_V_TREADY) V <= 0;
    end
  end
endmodule
"""


@pytest.fixture(scope="module")
def toy_lib(rtl_cache, tmp_path_factory):
    src = tmp_path_factory.mktemp("toy") / "toy.sv"
    src.write_text(TOY)
    return build_library("toy", [src]).library


@pytest.fixture
def toy(toy_lib):
    sim = VerilatedSim(toy_lib, name="toy")
    sim.reset()
    yield sim
    sim.close()


def test_wide_ports_round_trip(toy):
    assert toy.signal("wide_in").width == 100
    for v in (0, 2**64 - 1, 2**99 + 2**64 - 1, 2**100 - 1):
        toy.set("wide_in", v)
        toy.eval()
        assert toy.get("wide_out") == (v + 1) % 2**100


def test_stream_contents_and_cycles(toy):
    rng = np.random.default_rng(0)
    values = [int(v) for v in rng.integers(0, 2**24, size=50)]
    start = toy.cycles
    res = toy.stream({"in0_V": values}, {"out0_V": len(values)}, liveness=100)
    assert res.outputs["out0_V"] == [v ^ 0xA5A5A5 for v in values]
    # one word per cycle: the first input is presented after cycle 1, accepted on edge 2,
    # its result collected on edge 3, the last on edge n+2, and one cycle ends the run
    assert res.cycles == len(values) + 3 == toy.cycles - start


def test_reset_takes_finn_cycle_count(toy):
    start = toy.cycles
    toy.reset(cycles=16)
    assert toy.cycles - start == 18


def test_stalled_stream_times_out(toy):
    toy.set("stall_after", 10)
    t0 = time.perf_counter()
    with pytest.raises(SimulationError) as e:
        toy.stream({"in0_V": list(range(50))}, {"out0_V": 50}, liveness=200)
    msg = str(e.value)
    assert msg.startswith("toy:") and "out0_V" in msg and "10 of 50" in msg
    assert "\n" not in msg and time.perf_counter() - t0 < 30
    # the aborted transfer leaves the design mid-stream: refused until it is reset
    with pytest.raises(SimulationError, match="reset first"):
        toy.stream({"in0_V": [1]}, {"out0_V": 1}, liveness=200)
    toy.set("stall_after", 0)
    toy.reset()
    assert toy.stream({"in0_V": [1, 2]}, {"out0_V": 2}, liveness=200).outputs["out0_V"] == [
        1 ^ 0xA5A5A5, 2 ^ 0xA5A5A5]


def test_runtime_fatal_raises_and_process_survives(toy):
    """The design's own $fatal is a hardware mismatch (exit 1) naming the design and cycle."""
    from fpgaprint.compiler.rtlsim.errors import DesignAssertionError

    toy.set("fatal_at", 5)
    with pytest.raises(DesignAssertionError) as e:
        toy.stream({"in0_V": list(range(20))}, {"out0_V": 20}, liveness=100)
    msg = str(e.value)
    assert "toy: fatal at output 5" in msg and msg.startswith("RTL layer toy stopped")
    assert f"at cycle {toy.cycles}" in msg and e.value.exit_code == 1 and "\n" not in msg
    with pytest.raises(DesignAssertionError):
        toy.step(1)  # a failed model stays failed


@pytest.mark.parametrize("message, cls, layer", [
    ("[40] %Error: mvu_vvu_axi.sv:376: Assertion failed in TOP.finn_design.MVAU_rtl_0.inst."
     "blkOutput: Overflowing output queue.", "DesignAssertionError", "MVAU_rtl_0"),
    ("toy.sv:12: TOP.toy: %Fatal: toy: fatal", "DesignAssertionError", "top"),
    ("Verilated model didn't converge", "SimulationError", None),
])
def test_runtime_errors_classified(message, cls, layer):
    from fpgaprint.compiler.rtlsim import errors

    e = errors.runtime_error("top", "step", message, 149)
    assert type(e).__name__ == cls and e.exit_code == (1 if layer else 2)
    if layer:
        assert str(e).startswith(f"RTL layer {layer} ") and "at cycle 149" in str(e)


def test_missing_port_is_named(toy):
    with pytest.raises(SimulationError, match="toy: no port 'nope'"):
        toy.set("nope", 1)
    with pytest.raises(SimulationError, match="no AXI stream 'in9_V'"):
        toy.stream({"in9_V": [1]}, {}, liveness=10)


# -- FINN+'s data packing, vectorized ------------------------------------------------------

@pytest.fixture
def packing():
    from fpgaprint.compiler.rtlsim import packing

    undo = packing.install()  # also records FINN+'s originals
    yield packing
    packing.uninstall(undo)


def test_repeated_stream_words_keep_their_bytes(packing):
    """An MVAU's weight stream, repeated per input vector as FINN+ does (`wei * reps`), goes
    to the simulator as the bytes of exactly those words."""
    from qonnx.core.datatype import DataType

    a = np.random.default_rng(3).integers(-2, 2, size=(4, 40)).astype(np.float32)
    words = packing.npy_to_rtlsim_input(a, DataType["INT2"], 80)
    rep = words * 3
    assert isinstance(rep, packing.Words) and list(rep) == list(words) * 3
    assert rep.rows.shape == (12, 10)
    assert [int.from_bytes(r.tobytes(), "little") for r in rep.rows] == list(rep)
    assert list(2 * words) == list(words) * 2


@pytest.mark.parametrize("dt, shape", [("INT2", (3, 5, 18)), ("UINT8", (2, 64)),
                                       ("INT13", (4, 7, 5)), ("BIPOLAR", (6, 9)),
                                       ("UINT1", (2, 3, 70)), ("INT32", (3, 4)),
                                       ("INT4", (5, 1))])
def test_vectorized_packing_gives_finn_words(packing, dt, shape):
    """Same stream words and arrays as FINN+'s own (per-element) packing, which it replaces
    in FINN+'s layer modules while installed."""
    from finn.custom_op.fpgadataflow.rtl import matrixvectoractivation_rtl as mvau
    from qonnx.core.datatype import DataType

    assert mvau.npy_to_rtlsim_input is packing.npy_to_rtlsim_input
    t = DataType[dt]
    rng = np.random.default_rng(len(shape))
    a = rng.integers(int(t.min()), int(t.max()) + 1, size=shape).astype(np.float32)
    if dt == "BIPOLAR":
        a = np.where(a > 0, 1.0, -1.0).astype(np.float32)
    bits = shape[-1] * t.bitwidth()
    words = packing.npy_to_rtlsim_input(a, t, bits)
    assert words == packing._original["npy_to_rtlsim_input"](a, t, bits)
    back = packing.rtlsim_output_to_npy(words, None, t, shape, bits, t.bitwidth())
    want = packing._original["rtlsim_output_to_npy"](words, None, t, shape, bits, t.bitwidth())
    assert back.dtype == want.dtype and np.array_equal(back, want) and np.array_equal(back, a)


def test_vectorized_packing_falls_back_for_values_outside_the_datatype(packing):
    from qonnx.core.datatype import DataType

    with pytest.raises(AssertionError):  # FINN+'s own check
        packing.npy_to_rtlsim_input(np.array([[1.0, 9.0]], np.float32), DataType["INT4"], 8)


@pytest.mark.parametrize("dt, shape, pad", [("INT2", (3, 5, 18), 36), ("INT2", (3, 5, 18), 40),
                                            ("UINT8", (2, 64), 512), ("BIPOLAR", (6, 9), 12),
                                            ("BINARY", (4, 4), 4), ("INT24", (3, 4), 96),
                                            ("INT4", (7,), 32), ("UINT1", (2, 3, 70), 280),
                                            ("INT13", (4, 7, 5), 68)])
def test_vectorized_hex_words_are_finn_memory_words(packing, dt, shape, pad):
    """The memory-file words FINN+ writes (`pack_innermost_dim_as_hex_string`): same strings,
    dtype and shape, both element orders, with and without a prefix; bound in the layers."""
    from finn.custom_op.fpgadataflow import matrixvectoractivation as mvau
    from qonnx.core.datatype import DataType

    assert mvau.pack_innermost_dim_as_hex_string is packing.pack_innermost_dim_as_hex_string
    t = DataType[dt]
    rng = np.random.default_rng(pad)
    a = rng.integers(int(t.min()), int(t.max()) + 1, size=shape).astype(np.float32)
    if dt == "BIPOLAR":
        a = np.where(a > 0, 1.0, -1.0).astype(np.float32)
    finn = packing._original["pack_innermost_dim_as_hex_string"]
    for reverse in (False, True):
        for prefix in ("0x", ""):
            got = packing.pack_innermost_dim_as_hex_string(a, t, pad, reverse, prefix)
            want = finn(a, t, pad, reverse, prefix)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want)


@pytest.mark.parametrize("values, dt, pad, error", [
    ([[1.0, 9.0]], "INT4", 8, "not permitted"),  # outside the datatype
    ([[0.0, 1.0]], "BIPOLAR", 4, "not permitted"),  # 0 is not bipolar
    ([[1.0, 2.0, 3.0]], "INT4", 8, "greater than pad_to_nbits"),
])
def test_vectorized_hex_words_leave_bad_input_to_finn(packing, values, dt, pad, error):
    """What FINN+ refuses is refused by FINN+ itself, with its own message."""
    from qonnx.core.datatype import DataType

    with pytest.raises(Exception, match=error):
        packing.pack_innermost_dim_as_hex_string(np.array(values, np.float32), DataType[dt], pad)


def test_hex_words_are_installed_only_inside_the_block():
    from finn.custom_op.fpgadataflow import matrixvectoractivation as mvau

    from fpgaprint.compiler.rtlsim import packing

    before = mvau.pack_innermost_dim_as_hex_string
    with packing.installed():
        assert mvau.pack_innermost_dim_as_hex_string is packing.pack_innermost_dim_as_hex_string
    assert mvau.pack_innermost_dim_as_hex_string is before
