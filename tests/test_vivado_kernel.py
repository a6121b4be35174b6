"""The bitfile's accelerator is the simulated design: FINN+'s shell build (ZynqBuild) does not
take the stitched IP but partitions the graph around its IO DMAs and stitches the accelerator's
partition again, its nodes renamed. FINN+'s real ZynqBuild runs here with stand-ins for the
transformations that need Vivado or Vitis HLS (PrepareIP, HLSSynthIP, CreateStitchedIP,
MakeZYNQProject) and for the step's report copying; Vivado is not installed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import own_digits_build
from qonnx.transformation.base import Transformation

from fpgaprint.compiler import vivado
from fpgaprint.compiler.config import BuildConfig
from fpgaprint.compiler.rtlsim.errors import RtlMismatchError
from fpgaprint.compiler.steps import finn_steps
from fpgaprint.core.boards import get_board


class _NoVivado(Transformation):
    """Stand-in for a transformation that needs Vivado: leaves the graph as it is."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def apply(self, model):
        return model, False


@pytest.fixture()
def build(digits_build, tmp_path):
    """A digits build of its own (FINN+'s ipgen rewrites a build's sources)."""
    return own_digits_build(digits_build, tmp_path)


@pytest.fixture()
def shell(monkeypatch):
    """FINN+'s steps with only their Vivado parts stood in; returns what the stand-in of
    CreateStitchedIP does to each partition (a list of functions of the kernel graph)."""
    import finn.builder.build_dataflow_steps as bds
    from finn.transformation.fpgadataflow import make_zynq_proj as mzp

    edits: list = []

    class Stitch(_NoVivado):
        def apply(self, model):
            for edit in edits:
                edit(model)
            return model, False

    for name in ("PrepareIP", "HLSSynthIP", "MakeZYNQProject"):
        monkeypatch.setattr(mzp, name, _NoVivado)
    monkeypatch.setattr(mzp, "CreateStitchedIP", Stitch)
    for name in ("copy_and_rename_bitfiles", "copy_synthesis_reports",
                 "generate_resource_report", "copy_timing_report",
                 "copy_partial_reconfiguration_artifacts"):
        monkeypatch.setattr(bds, name, lambda *a, **k: None)
    bs = finn_steps()
    handed: dict = {}
    for name in ("step_create_stitched_ip", "step_make_driver"):
        def step(model, cfg, name=name):
            handed[name] = (model, cfg)
            return model
        step.__name__ = name
        monkeypatch.setattr(bs, name, step)
    return edits, handed


def test_vivado_steps_receive_the_simulated_graph_and_build_it(build, shell):
    """FINN+'s own step_hw_ipgen and step_set_fifo_depths run; the graph its
    step_create_stitched_ip is handed, and the accelerator partition its bitfile step
    stitches, are the design that was simulated (nodes, attributes, FIFO depths, stream
    widths, memory images)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    _, handed = shell
    lines: list[str] = []
    res = vivado._run_hardware_steps(build, get_board("Pynq-Z1"), BuildConfig(),
                                     lambda msg, **k: lines.append(msg))
    assert res["ran"] and res["simulated_design"]
    model, cfg = handed["step_create_stitched_ip"]
    assert not cfg.auto_fifo_depths and cfg.fifo_config_file is not None
    rtl = build / "hw" / "rtl"
    design = json.loads((rtl / "design.json").read_text())
    sim = ModelWrapper(str(rtl / "design.onnx"))
    assert [(n.name, n.op_type) for n in model.graph.node] == \
        [(n.name, n.op_type) for n in sim.graph.node] == \
        [(x["name"], x["op_type"]) for x in design["layers"]]
    assert {"StreamingFIFO_rtl", "MVAU_rtl", "Thresholding_rtl"} <= \
        {n.op_type for n in model.graph.node}
    depths = {n.name: getCustomOp(n).get_nodeattr("depth") for n in model.graph.node
              if n.op_type == "StreamingFIFO_rtl"}
    assert depths == {f["name"]: f["depth"] for f in design["fifos"]}
    assert any(d > 2 for d in depths.values())  # sized, not FINN+'s minimal FIFOs
    for a, b in zip(model.graph.node, sim.graph.node):
        oa, ob = getCustomOp(a), getCustomOp(b)
        assert oa.get_instream_width_padded() == ob.get_instream_width_padded(), a.name
        assert oa.get_outstream_width_padded() == ob.get_outstream_width_padded(), a.name
    for m in design["memories"]:
        code_gen = Path(getCustomOp(model.get_node_from_name(m["layer"]))
                        .get_nodeattr("code_gen_dir_ipgen"))
        for name, rel in m["files"].items():
            assert (code_gen / name).read_text().split() == (rtl / rel).read_text().split()
    assert "vivado: the graph for the stitched IP is the simulated design " \
        "(hw/rtl/design.json)" in lines
    said = [x for x in lines if "bitfile's accelerator partition" in x]
    assert said == ["vivado: the bitfile's accelerator partition StreamingDataflowPartition_1 "
                    "is the simulated design"]
    assert list(handed) == ["step_create_stitched_ip", "step_make_driver"]


def test_a_bitfile_partition_other_than_the_simulated_design_is_refused(build, shell):
    from qonnx.custom_op.registry import getCustomOp

    def deeper_fifo(model):
        fifos = [n for n in model.graph.node if n.op_type == "StreamingFIFO_rtl"]
        if fifos:  # the accelerator's partition (the IO DMAs' have no FIFO)
            op = getCustomOp(fifos[1])
            op.set_nodeattr("depth", op.get_nodeattr("depth") * 2)

    shell[0].append(deeper_fifo)
    with pytest.raises(RtlMismatchError) as e:
        vivado._run_hardware_steps(build, get_board("Pynq-Z1"), BuildConfig(),
                                   lambda msg, **k: None)
    msg = str(e.value)
    assert msg.startswith("the bitfile's accelerator partition StreamingDataflowPartition_1 is "
                          "not the simulated design (hw/rtl): StreamingDataflowPartition_1_"
                          "StreamingFIFO_rtl_1.depth is "), msg
    assert e.value.exit_code == 1
    assert not [p for p in (build / "hw").iterdir() if p.is_file()]  # no bitfile copied
