"""FIFO depths by simulation of the stitched design (FINN+'s method on Verilator), the other
FIFO modes (FINN+'s config keys), and backpressure: the stitched design under seeded random
stalls on its input valid and output ready gives the same outputs.

The zoo builds are the session's shared ones (`compiled`, default config: FIFO sizing by
simulation); the FIFO modes are checked on the plumbed graph of the digits build (no build).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from fpgaprint.compiler.config import BuildConfig
from fpgaprint.compiler.rtlsim import fifosizing, stitch
from fpgaprint.compiler.rtlsim.design import StitchedDesign
from fpgaprint.compiler.rtlsim.sim import Stalls
from fpgaprint.core.boards import get_board
from fpgaprint.core.errors import InputError
from fpgaprint.core.golden import GoldenModel


def _fifo_depths(model) -> dict[str, int]:
    return {n.name: int(getCustomOp(n).get_nodeattr("depth")) for n in model.graph.node
            if n.op_type == "StreamingFIFO_rtl"}


@pytest.mark.parametrize("name", ["digits-mlp", "tfc-w2a2"])
def test_sized_fifos_reach_finns_interval_estimate(compiled, name):
    c = compiled(name)
    report = c.result.report
    st = report["rtl"]["stitched"]
    assert st["ii_cycles"] <= 1.02 * st["estimate"]["ii_cycles"], st
    f = st["fifos"]
    assert f["depths_from"] == "distributed_sim" and f["sizing_depth"] >= 64
    assert st["ii_cycles"] <= f["deep_ii_cycles"] * 1.01 + 1  # the sized design re-simulated
    assert f["filled"] == []
    rtl = c.out / "hw" / "rtl"
    graph = ModelWrapper(str(rtl / "design.onnx"))
    first = fifosizing.input_fifo(graph)
    for x in f["fifos"]:
        # FINN+'s depth for the measured peak (the input FIFO's peak is the source's)
        peak = 0 if x["name"] == first else x["peak"]
        assert x["depth"] == fifosizing.depth_for(peak, x["width"]) >= peak + 1, x
        if x["name"] != first:
            assert x["peak"] < f["sizing_depth"], x  # the deep FIFOs never filled
    depths = {x["name"]: x["depth"] for x in f["fifos"]}
    # the same depths in the packaged graph, design.json and FINN+'s fifo config report
    assert _fifo_depths(graph) == depths
    design = json.loads((rtl / "design.json").read_text())
    assert {x["name"]: x["depth"] for x in design["fifos"]} == depths
    finn_cfg = json.loads((c.out / "reports" / "fifo_depths.json").read_text())
    assert finn_cfg["fifo_depths"] == depths
    # the FIFOs' resources are in the estimate the board fit check reads
    est = report["estimates"]
    for fifo in depths:
        assert est["resources_per_layer"][fifo] == f["plumbing_resources"][fifo]
    accel = sum(v.get("LUT", 0) for k, v in est["resources_per_layer"].items()
                if k not in f["plumbing_resources"])
    plumbing = sum(v.get("LUT", 0) for v in f["plumbing_resources"].values())
    assert plumbing > 0 and est["resources_total"]["LUT"] == pytest.approx(accel + plumbing)


def test_backpressure_gives_the_same_outputs(compiled):
    c = compiled("tfc-w2a2")
    bp = c.result.report["rtl"]["stitched"]["backpressure"]
    assert bp["ok"] and bp["input_stall"] > 0 and bp["output_stall"] > 0
    x = np.random.default_rng(3).integers(0, 256, (12, *c.io["input"]["shape"][1:]))
    want = GoldenModel(c.golden).run(x)[0]
    with StitchedDesign(c.out / "hw" / "rtl").simulator() as sim:
        raw, full = sim.run(x)
        np.testing.assert_array_equal(raw, want)
        runs = []
        for stalls in (Stalls(seed=7), Stalls(seed=8, input=0.6, output=0.0),
                       Stalls(seed=9, input=0.0, output=0.6)):
            sim.reset()
            raw, cycles = sim.run(x, stalls)
            np.testing.assert_array_equal(raw, want, err_msg=str(stalls))
            runs.append(cycles)
        sim.reset()
        again = sim.run(x, Stalls(seed=7))[1]
    assert min(runs) > full  # the stalls did hold the design back
    assert again == runs[0]  # and are reproducible from their seed


def test_stall_probability_is_checked():
    with pytest.raises(ValueError, match="not in"):
        Stalls(input=1.0)


# ---------------------------------------------------------------- FIFO modes (no build)


@pytest.fixture(scope="module")
def accel(digits_build):
    """The digits build's accelerator graph as the RTL stage stitches it."""
    return ModelWrapper(str(max((digits_build.out / "model" / "steps")
                                .glob("*_codegen.onnx"))))


def _plumbed(accel, config: BuildConfig):
    hook, source = fifosizing.hook(config, get_board("Pynq-Z1"))
    return stitch.plumb(accel, "xc7z020clg400-1", 10.0, hook), source


def test_large_fifos_on_a_part_without_uram_are_block_ram():
    """fifo.sv asks for URAM for the deepest FIFOs under `auto`; a part without URAM backs
    them with BRAM, and the estimate and fit check must count that."""
    pynq, zcu = get_board("Pynq-Z1"), get_board("ZCU104")
    assert not pynq.resources["URAM"] and zcu.resources["URAM"]
    assert fifosizing.large_fifo_style(BuildConfig(), pynq) == "block"
    assert fifosizing.large_fifo_style(BuildConfig(), zcu) == "auto"
    with pytest.raises(InputError, match="Pynq-Z1 has no URAM"):
        fifosizing.large_fifo_style(BuildConfig(large_fifo_mem_style="ultra"), pynq)


def test_force_minimal_fifos_keeps_finns_minimal_depths(accel):
    m, source = _plumbed(accel, BuildConfig(auto_fifo_strategy="force_minimal_fifos"))
    assert source == "force_minimal_fifos"
    depths = _fifo_depths(m)
    assert depths and set(depths.values()) == {2}


def test_fifo_config_file_pins_the_depths(accel, tmp_path):
    names = sorted(_fifo_depths(stitch.plumb(accel, "xc7z020clg400-1", 10.0)))
    pinned = {n: 40 + 2 * i for i, n in enumerate(names)}
    f = tmp_path / "fifo.json"
    f.write_text(json.dumps({"fifo_depths": pinned}))
    m, source = _plumbed(accel, BuildConfig(auto_fifo_depths=False, fifo_config_file=str(f)))
    assert source == "fifo_config_file" and _fifo_depths(m) == pinned
    # and the FIFO wrappers FINN+ generated carry them
    for n in m.graph.node:
        if n.name in pinned:
            op = getCustomOp(n)
            src = (f"{op.get_nodeattr('code_gen_dir_ipgen')}/"
                   f"{op.get_nodeattr('gen_top_module')}.v")
            assert f".DEPTH({pinned[n.name]})" in Path(src).read_text()


@pytest.mark.parametrize("content, message", [
    ({"fifo_depths": {"StreamingFIFO_rtl_0": 1}},
     r"fifo_depths.StreamingFIFO_rtl_0=1: expected an integer from 2"),
    ({"depths": {}}, r"expected an object with \"fifo_depths\""),
    ({"fifo_depths": {"MVAU_rtl_0": 4}}, r"names 'MVAU_rtl_0', which is no FIFO"),
    ({"fifo_depths": {"StreamingFIFO_rtl_0": 4}}, r"has no depth for StreamingFIFO_rtl_1"),
    ({"fifo_depths": {"StreamingFIFO_rtl_0": 4}, "ram_style": {"StreamingFIFO_rtl_0": "big"}},
     r"ram_style.StreamingFIFO_rtl_0='big'"),
])
def test_bad_fifo_config_file_is_one_line_naming_it(accel, tmp_path, content, message):
    f = tmp_path / "fifo.json"
    f.write_text(json.dumps(content))
    with pytest.raises(InputError, match=message) as e:
        _plumbed(accel, BuildConfig(auto_fifo_depths=False, fifo_config_file=str(f)))
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


def test_large_fifo_mem_style_pins_deep_fifos_only(accel):
    m = stitch.plumb(accel, "xc7z020clg400-1", 10.0, fifosizing.setter(
        {n: (1024 if i == 1 else 32) for i, n in enumerate(
            sorted(_fifo_depths(stitch.plumb(accel, "xc7z020clg400-1", 10.0))))}, "ultra"))
    styles = {n.name: getCustomOp(n).get_nodeattr("ram_style") for n in m.graph.node
              if n.op_type == "StreamingFIFO_rtl"}
    deep = [n for n, d in _fifo_depths(m).items() if d == 1024]
    assert len(deep) == 1 and styles[deep[0]] == "ultra"
    assert {s for n, s in styles.items() if n not in deep} == {"auto"}


def test_live_fifo_strategy_is_rejected_naming_the_choices():
    with pytest.raises(InputError, match="auto_fifo_strategy='live_fifo': expected "
                                         "'distributed_sim' or 'force_minimal_fifos'"):
        BuildConfig.load(auto_fifo_strategy="live_fifo")


def test_depth_rule_is_finns():
    from finn.transformation.fpgadataflow.simulation_connected import calculate_bram_blocks

    assert fifosizing.depth_for(0, 8) == fifosizing.depth_for(31, 8) == 32
    assert fifosizing.depth_for(100, 8) == 101
    d = fifosizing.depth_for(300, 36)  # above the SRL limit: whole BRAM blocks
    assert d >= 301 and calculate_bram_blocks(d, 36) == calculate_bram_blocks(301, 36)
    assert calculate_bram_blocks(d + 1, 36) > calculate_bram_blocks(d, 36)


def test_folding_config_fifo_depths_are_kept_without_sizing(accel):
    """FINN+'s layer attributes inFIFODepths/outFIFODepths (what a folding config sets) give
    the FIFOs' depths with auto_fifo_depths false."""
    import copy

    m = copy.deepcopy(accel)
    layer = next(n for n in m.graph.node if n.op_type == "MVAU_rtl")
    getCustomOp(layer).set_nodeattr("inFIFODepths", [100])
    plumbed, source = _plumbed(m, BuildConfig(auto_fifo_depths=False))
    assert source.startswith("layer attributes")
    fifo = plumbed.find_direct_predecessors(plumbed.get_node_from_name(layer.name))[0]
    assert fifo.op_type == "StreamingFIFO_rtl" and getCustomOp(fifo).get_nodeattr("depth") == 100
    others = {d for n, d in _fifo_depths(plumbed).items() if n != fifo.name}
    assert others == {2}
