"""The on-chip self-test in the bitstream: FINN+'s real ZynqBuild (IO DMAs, partitions,
CreateStitchedIP's project script and metadata, MakeZYNQProject's block design script) runs
with the BIST top around the accelerator's partition. Vivado and Vitis HLS are not installed
here; test doubles stand in for what executes them and nothing else: HLS synthesis of the IO
DMAs (an empty IP folder), Vivado's runs of FINN+'s scripts and of the re-packaging script
(recorded, not executed), and the files Vivado would leave (an empty bitfile; a hardware
handoff giving each `assign_axi_addr_proc` of FINN+'s script a 64 KiB range in order)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import own_digits_build
from qonnx.transformation.base import Transformation

from fpgaprint.compiler import vivado
from fpgaprint.compiler.bist import shell as S
from fpgaprint.compiler.config import BuildConfig
from fpgaprint.compiler.rtlsim.errors import RtlMismatchError
from fpgaprint.compiler.steps import finn_steps
from fpgaprint.core.boards import get_board
from fpgaprint.core.errors import InputError

ACC = "StreamingDataflowPartition_1"  # the accelerator's partition between the two IO DMAs
BASE = 0x43C00000  # where the stand-in handoff starts its ranges


@pytest.fixture(scope="module")
def build(digits_build, tmp_path_factory):
    """A digits build of this module's own (FINN+'s ipgen rewrites a build's sources)."""
    return own_digits_build(digits_build, tmp_path_factory.mktemp("vivado-bist"))


def _generate_bist(build: Path, digits_build) -> Path:
    """hw/rtl/bist/ as the build's BIST stage generates it for the digits self-test vectors."""
    from fpgaprint.compiler.bist.generate import generate
    from fpgaprint.compiler.bist.stage import predicted_cycles
    from fpgaprint.compiler.rtlsim.design import StitchedDesign
    from fpgaprint.core.golden import GoldenModel

    rtl = build / "hw" / "rtl"
    golden = GoldenModel(build / "model" / "golden.onnx")
    raw = golden.run(digits_build.inputs)[0]
    st = json.loads((build / "reports" / "build.json").read_text())["rtl"]["stitched"]
    generate(rtl, StitchedDesign(rtl).io, golden.accelerator_inputs(digits_build.inputs), raw,
             "exact", predicted_cycles=predicted_cycles(st, len(raw)),
             latency_cycles=st["latency_cycles"])
    return rtl / "bist"


@pytest.fixture()
def bist(build, digits_build):
    return _generate_bist(build, digits_build)


class _NoHLS(Transformation):
    """Stand-in for FINN+'s PrepareIP/HLSSynthIP (Vitis HLS): a node without generated IP
    gets empty IP and IP-generation folders, as PrepareIP gives every node one (FINN+'s
    CreateStitchedIP rewrites the Verilog under each node's `ipgen_path`; an empty one would
    be the working directory)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def apply(self, model):
        from finn.util.basic import make_build_dir
        from qonnx.custom_op.registry import getCustomOp

        for n in model.graph.node:
            op = getCustomOp(n)
            for attr, prefix in (("ip_path", "ip_standin_"), ("ipgen_path", "ipgen_standin_")):
                if not Path(op.get_nodeattr(attr) or "/nonexistent").is_dir():
                    op.set_nodeattr(attr, make_build_dir(prefix=prefix))
        return model, False


def _standin_handoff(proj: Path) -> None:
    """Stand-in for Vivado's run of MakeZYNQProject's script in `proj`: the bitfile and the
    hardware handoff it would leave, the handoff's ranges in the order of the script's
    `assign_axi_addr_proc` lines."""
    script = (proj / "ip_config.tcl").read_text()
    bit = proj / "finn_zynq_link.runs" / "impl_1" / "top_wrapper.bit"
    bit.parent.mkdir(parents=True)
    bit.write_bytes(b"")
    ranges = "".join(
        f'<MEMRANGE INSTANCE="{i}" SLAVEBUSINTERFACE="{f}" MASTERBUSINTERFACE="M_AXI_GP0" '
        f'BASEVALUE="0x{BASE + k * 0x10000:08X}" HIGHVALUE="0x{BASE + k * 0x10000 + 0xFFFF:08X}"'
        '/>' for k, (i, f) in enumerate(re.findall(r"^assign_axi_addr_proc (\S+)/(\S+)$",
                                                   script, re.MULTILINE)))
    hwh = proj / "finn_zynq_link.gen" / "sources_1" / "bd" / "top" / "hw_handoff" / "top.hwh"
    hwh.parent.mkdir(parents=True)
    hwh.write_text(f'<EDKSYSTEM><MODULES><MODULE INSTANCE="processing_system7_0"><MEMORYMAP>'
                   f'{ranges}</MEMORYMAP></MODULE></MODULES></EDKSYSTEM>')


@pytest.fixture()
def shell(monkeypatch):
    """FINN+'s steps with only their Vivado and HLS runs stood in; returns the re-packaging
    scripts handed to Vivado (project folder, script), a list of functions applied to the
    project before Vivado would read it, and the block design projects of MakeZYNQProject."""
    import finn.builder.build_dataflow_steps as bds
    import finn.transformation.fpgadataflow.create_stitched_ip as csi
    from finn.transformation.fpgadataflow import make_zynq_proj as mzp

    for name in ("PrepareIP", "HLSSynthIP"):
        monkeypatch.setattr(mzp, name, _NoHLS)
    for mod in (csi, mzp):
        monkeypatch.setattr(mod, "resolve_xilinx_tool", lambda tool: tool)
    monkeypatch.setattr(csi, "launch_process_helper", lambda *a, **k: None)
    monkeypatch.setattr(csi, "wait_for_file", lambda *a, **k: True)
    zynq: list[Path] = []

    def launch(bash_command, **kwargs):
        zynq.append(Path(bash_command[1]).parent)
        _standin_handoff(zynq[-1])

    monkeypatch.setattr(mzp, "launch_process_helper", launch)
    for name in ("copy_synthesis_reports", "generate_resource_report", "copy_timing_report",
                 "copy_partial_reconfiguration_artifacts"):
        monkeypatch.setattr(bds, name, lambda *a, **k: None)
    bs = finn_steps()
    for name in ("step_create_stitched_ip", "step_make_driver"):
        def step(model, cfg):
            return model
        step.__name__ = name
        monkeypatch.setattr(bs, name, step)
    runs: list[tuple[Path, str]] = []
    edits: list = []

    def run_tcl(proj, script):
        for edit in edits:
            edit(proj)
        runs.append((proj, script))

    monkeypatch.setattr(S, "run_tcl", run_tcl)
    return runs, edits, zynq


def _run(build) -> tuple[dict, list[str]]:
    lines: list[str] = []
    res = vivado._run_hardware_steps(build, get_board("Pynq-Z1"), BuildConfig(),
                                     lambda msg, **k: lines.append(msg))
    return res, lines


def _accelerator(build):
    """The shell build's graph of the accelerator's partition (the one without an IO DMA)."""
    from qonnx.core.modelwrapper import ModelWrapper

    d = build / "finn" / "vivado" / "intermediate_models" / "kernel_partitions"
    graphs = [ModelWrapper(str(p)) for p in sorted(d.glob("*.onnx"))]
    kernels = [g for g in graphs if not g.get_nodes_by_op_type("IODMA_hls")]
    assert len(graphs) == 3 and len(kernels) == 1
    return kernels[0]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_the_bitstream_carries_the_simulated_bist_top(build, bist, shell):
    """The accelerator's partition is re-packaged with the BIST top (the simulated files,
    byte for byte) under the VLNV MakeZYNQProject instantiates; its AXI-lite slave is in
    the partition's interfaces, FINN+'s block design connects it and gives it an address,
    and that address, read from the hardware handoff, is in the result."""
    runs, _, zynq = shell
    res, lines = _run(build)
    assert res["simulated_design"]
    assert len(runs) == 1  # one partition re-packaged: the accelerator, not the IO DMAs
    proj, script = runs[0]
    tcl = (proj / script).read_text()
    kernel = _accelerator(build)
    assert Path(kernel.get_metadata_prop("vivado_stitch_proj")) == proj
    vlnv = kernel.get_metadata_prop("vivado_stitch_vlnv")
    assert vlnv == f"xilinx_finn:finn:{ACC}:1.0"
    assert f"set_property top {ACC}_bist [current_fileset]" in tcl
    assert f"ipx::package_project -root_dir {proj}/ip -vendor xilinx_finn -library finn" in tcl
    assert f"set_property name {ACC} $core" in tcl
    assert "ipx::add_address_block Reg0" in tcl
    # every BIST file the script names is the simulated one, byte for byte
    named = {Path(f).name: Path(f)
             for grp in re.findall(r"add_files -norecurse \{([^}]*)\}", tcl)
             for f in grp.split()}
    simulated = sorted(p.name for p in bist.iterdir() if p.suffix in (".sv", ".mem"))
    assert sorted(set(named) - {f"{ACC}_bist.sv"}) == simulated
    for name in simulated:
        assert named[name].read_bytes() == (bist / name).read_bytes(), name
    assert res["bist"]["sources"] == {f"bist/{n}": _sha(bist / n) for n in simulated}
    # the partition's interfaces name the slave; FINN+'s block design connects and maps it
    ifnames = json.loads(kernel.get_metadata_prop("vivado_stitch_ifnames"))
    assert ifnames["axilite"] == ["s_axi_bist"]
    bd = (zynq[0] / "ip_config.tcl").read_text()
    assert f"create_bd_cell -type ip -vlnv {vlnv} {ACC}" in bd
    assert re.search(rf"connect_bd_intf_net \[get_bd_intf_pins {ACC}/s_axi_bist\] "
                     r"\[get_bd_intf_pins axi_interconnect_0/M\d\d_AXI\]", bd)
    order = re.findall(r"^assign_axi_addr_proc (\S+)$", bd, re.MULTILINE)
    k = order.index(f"{ACC}/s_axi_bist")
    assert res["bist"]["instance"] == ACC and res["bist"]["interface"] == "s_axi_bist"
    assert res["bist"]["address"]["base"] == f"0x{BASE + k * 0x10000:08X}"
    assert res["bist"]["address"]["hwh"] == "hw/finn-accel.hwh"
    said = ("vivado: the on-chip self-test (hw/rtl/bist, as simulated) is in the bitstream "
            f"around {ACC}, its AXI-lite slave s_axi_bist at {res['bist']['address']['base']}")
    assert [x for x in lines if "on-chip self-test" in x] == [said]
    # the wrapper and the simulated BIST sources elaborate around a module with the ports
    # of FINN+'s block design wrapper (a stand-in: the block design needs Vivado)
    from fpgaprint.compiler.bist.generate import axis_ports
    from fpgaprint.compiler.rtlsim.verilator import find_verilator

    spec = json.loads((bist / "bist.json").read_text())
    bd_standin = proj / "bd_wrapper_standin.sv"
    bd_standin.write_text(
        f"module {ACC}_wrapper (\n{axis_ports(spec['in_width'], spec['out_width'])},\n"
        "    input logic sim_finish);\n  assign s_axis_0_tready = m_axis_0_tready;\n"
        "  assign m_axis_0_tvalid = s_axis_0_tvalid;\n"
        f"  assign m_axis_0_tdata = {spec['out_width']}'(s_axis_0_tdata);\nendmodule\n")
    tool = find_verilator()
    lint = subprocess.run([str(tool.executable), "--lint-only", "-Wall", "-Wno-UNUSEDSIGNAL",
                           "-Wno-DECLFILENAME", "-Wno-PINCONNECTEMPTY", "-Wno-MULTITOP",
                           "--top-module", f"{ACC}_bist", str(named[f"{ACC}_bist.sv"]),
                           str(named["bist_ctrl.sv"]), str(named["fpgaprint_bist_top.sv"]),
                           str(bd_standin)], cwd=named["bist_ctrl.sv"].parent.parent,
                          env=tool.env(), capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stderr


def test_a_build_without_a_bist_is_unchanged(build, shell):
    from finn.transformation.fpgadataflow import make_zynq_proj as mzp

    shutil.rmtree(build / "hw" / "rtl" / "bist", ignore_errors=True)
    base = mzp.CreateStitchedIP
    runs, _, zynq = shell
    res, lines = _run(build)
    assert mzp.CreateStitchedIP is base
    assert "bist" not in res and not runs
    assert not [x for x in lines if "on-chip self-test" in x]
    kernel = _accelerator(build)
    assert kernel.get_metadata_prop(S.META) is None
    assert json.loads(kernel.get_metadata_prop("vivado_stitch_ifnames"))["axilite"] == []
    assert "s_axi_bist" not in (zynq[0] / "ip_config.tcl").read_text()


def _flip_rom_digit(bist: Path) -> None:
    f = bist / "bist_in.mem"
    text = f.read_text()
    f.write_text(("1" if text[0] == "0" else "0") + text[1:])


@pytest.mark.parametrize("change, detail", [
    (_flip_rom_digit, "the memory images' CRC-32 is 0x"),
    (lambda b: (b / "bist_ctrl.sv").unlink(), "bist/bist_ctrl.sv is missing"),
    (lambda b: (b / "fpgaprint_bist_top.sv").write_text(
        (b / "fpgaprint_bist_top.sv").read_text().replace("bist_start || start_reg",
                                                           "start_reg")),
     "bist/fpgaprint_bist_top.sv is not the source generated for bist.json"),
])
def test_a_bist_other_than_the_simulated_one_stops_before_vivado(build, bist, shell, change,
                                                                 detail):
    runs = shell[0]
    change(bist)
    with pytest.raises(RtlMismatchError) as e:
        _run(build)
    assert str(e.value).startswith("the on-chip self-test for the bitstream is not the "
                                   f"simulated one (hw/rtl/bist): {detail}"), str(e.value)
    assert e.value.exit_code == 1 and "\n" not in str(e.value) and not runs


def test_a_bist_file_changed_in_the_stitch_project_is_refused(build, bist, shell):
    """A copy altered after it was written for Vivado: the bitstream would not carry the
    simulated ROM; the build stops with exit 1 and copies no bitfile."""
    runs, edits, _ = shell
    edits.append(lambda proj: _flip_rom_digit(proj / S.SUBDIR / "bist"))
    for f in (build / "hw").glob("finn-accel.*"):
        f.unlink()
    with pytest.raises(RtlMismatchError) as e:
        _run(build)
    msg = str(e.value)
    assert msg.startswith("the on-chip self-test for the bitstream is not the simulated one "
                          "(hw/rtl/bist): ") and msg.endswith(
        "(given to Vivado) is not the simulated bist/bist_in.mem"), msg
    assert e.value.exit_code == 1 and len(runs) == 1
    assert not list((build / "hw").glob("finn-accel.*"))


def test_the_handoff_address_reader_bounds_and_validates(tmp_path):
    """The hardware handoff is read as untrusted XML: the slave's range, None when absent,
    one clear line for a file that is not a handoff or has a bad range."""
    f = tmp_path / "top.hwh"
    f.write_text('<EDKSYSTEM><MEMRANGE INSTANCE="p" SLAVEBUSINTERFACE="s_axi_bist" '
                 'MASTERBUSINTERFACE="M_AXI_GP0" BASEVALUE="0x43C10000" '
                 'HIGHVALUE="0x43C1FFFF"/></EDKSYSTEM>')
    assert S.bist_address(f, "p") == {"base": "0x43C10000", "high": "0x43C1FFFF",
                                       "master": "M_AXI_GP0"}
    assert S.bist_address(f, "q") is None
    f.write_text('<EDKSYSTEM><MEMRANGE INSTANCE="p" SLAVEBUSINTERFACE="s_axi_bist" '
                 'BASEVALUE="0x43C1FFFF" HIGHVALUE="0x43C10000"/></EDKSYSTEM>')
    with pytest.raises(InputError, match="range of p/s_axi_bist is empty"):
        S.bist_address(f, "p")
    f.write_text("<EDKSYSTEM><MEMRANGE")
    with pytest.raises(InputError) as e:
        S.bist_address(f, "p")
    assert str(e.value).startswith(f"{f}: not a hardware handoff (XML: ")
    assert e.value.exit_code == 2


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A small MLP's QONNX export and a fingerprint set of its own."""
    import models

    from fpgaprint.fingerprint.generate import GenParams, generate
    from fpgaprint.fingerprint.source import from_module

    d = tmp_path_factory.mktemp("order")
    module, shape = models.softmax_mlp()
    onnx_path = models.export(module, shape, d / "m.onnx")
    generate(from_module(module, shape, 5), "vanilla", 24, seed=0,
             params=GenParams(steps=30, min_margin=0.02, target_margin=0.1)).save(d / "fp.npz")
    return onnx_path, d / "fp.npz"


@pytest.mark.parametrize("carried", [True, False])
def test_a_packaged_build_runs_the_vivado_steps_on_its_simulated_bist(small_model, keypair,
                                                                     tmp_path, monkeypatch,
                                                                     carried):
    """The Vivado steps (a stand-in recording what they find: Vivado is not installed) run
    after the on-chip self-test was generated and simulated; the package keeps the onchip
    check when its bitstream carries the BIST, and leaves it out when it does not."""
    from fpgaprint.compiler.build import build_model
    from fpgaprint.core.package import load_policy

    seen: dict = {}

    def hardware_steps(out, board, config, log):
        seen["bist"] = S.BistFiles.read(out / "hw" / "rtl")
        (out / "hw" / "finn-accel.bit").write_bytes(b"")  # stand-in bitstream
        return {"ran": True, **({"bist": {"instance": ACC}} if carried else {})}

    monkeypatch.setattr(vivado, "missing_tools", list)
    monkeypatch.setattr(vivado, "_run_hardware_steps", hardware_steps)
    onnx_path, fp = small_model
    res = build_model(str(onnx_path), "Pynq-Z1", tmp_path / "pkg",
                      BuildConfig(equivalence_samples=4), fingerprint=fp, key=keypair[0])
    assert seen["bist"] is not None and seen["bist"].spec.stitched  # generated, then Vivado
    assert res.report["bist"]["simulated"] and res.report["bist"]["passed"]
    assert res.report["vivado"]["ran"]
    assert ("onchip" in load_policy(tmp_path / "pkg")["checks"]) is carried


def test_a_packaged_build_signs_where_the_bitstream_put_the_bist(small_model, keypair, tmp_path,
                                                                 monkeypatch):
    """The BIST slave's window the Vivado steps read from the hardware handoff (a stand-in
    here: Vivado is not installed) goes into the signed manifest, without the handoff's path,
    and reads back as the package's BIST window."""
    from fpgaprint.compiler.build import build_model
    from fpgaprint.core.package import verify_package

    handoff = tmp_path / "top.hwh"
    handoff.write_text(f'<EDKSYSTEM><MEMRANGE INSTANCE="{ACC}" SLAVEBUSINTERFACE="s_axi_bist" '
                       'MASTERBUSINTERFACE="M_AXI_GP0" BASEVALUE="0x43C10000" '
                       'HIGHVALUE="0x43C1FFFF"/></EDKSYSTEM>')

    def hardware_steps(out, board, config, log):
        (out / "hw" / "finn-accel.bit").write_bytes(b"")  # stand-in bitstream
        address = {**S.bist_address(handoff, ACC), "hwh": "hw/finn-accel.hwh"}
        return {"ran": True, "bist": {"instance": ACC, "interface": S.AXIL,
                                      "address": address}}

    monkeypatch.setattr(vivado, "missing_tools", list)
    monkeypatch.setattr(vivado, "_run_hardware_steps", hardware_steps)
    onnx_path, fp = small_model
    build_model(str(onnx_path), "Pynq-Z1", tmp_path / "pkg",
                BuildConfig(equivalence_samples=4), fingerprint=fp, key=keypair[0])
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["bitstream"]["bist"] == {"instance": ACC, "interface": "s_axi_bist",
                                             "base": "0x43C10000", "high": "0x43C1FFFF"}
    with verify_package(tmp_path / "pkg", trusted_key=keypair[1]) as pkg:
        assert pkg.bist_window() == (0x43C10000, 0x10000)
        assert "onchip" in pkg.policy()["checks"]
