"""The on-chip self-test in the bitstream: FINN+'s Zynq shell build with the simulated BIST
top (`hw/rtl/bist/`) around the accelerator.

FINN+ 1.6.1's ZynqBuild (the bitfile step for Zynq boards) inserts the IO DMAs, partitions
the graph, stitches every partition again with CreateStitchedIP (in
`make_zynq_proj._build_sdp_kernel`) and lets MakeZYNQProject build the block design from each
partition's metadata: `vivado_stitch_proj`, `vivado_stitch_vlnv` and
`vivado_stitch_ifnames`, whose "axilite" interfaces it connects to the PS's AXI-lite
interconnect and gives an address. It has no hook for a wrapper, so `zynq_shell` substitutes
a subclass for the CreateStitchedIP that `make_zynq_proj` names, for the duration of the one
step (a context manager; ZynqBuild's worker processes are forked, so they see it too). After
FINN+'s own stitching of the accelerator's partition (the one without an IO DMA) the subclass:

* writes the BIST files exactly as they were simulated (`BistFiles`: read once before the
  step, checked against `bist.json`: the controller and top that description generates, the
  ROM images' CRC-32 and the stored signature) under the partition's stitch project, and a
  thin wrapper (`<partition>_bist`): the BIST top with `bist_start` tied low and
  `bist_done`/`bist_pass` left to the register map, around a `finn_design` shim over FINN+'s
  block design;
* re-packages the partition's IP with Vivado (`package_bist.tcl`: the wrapper as top,
  `ipx::package_project` into the same `ip/` folder under the same VLNV, the `s_axi_bist`
  slave with an address block `Reg0`, which MakeZYNQProject's address assignment needs);
* adds `s_axi_bist` to the partition's `vivado_stitch_ifnames`, so MakeZYNQProject connects
  it to the interconnect and assigns its address.

`check_partition` then confirms, on the graph the step returns, that the accelerator's
partition carries those files unchanged; `bist_address` reads the address Vivado gave the
slave from the hardware handoff (`.hwh`). Vitis (Alveo) builds are not covered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
from pathlib import Path

from fpgaprint.compiler.bist.generate import AXIL
from fpgaprint.compiler.rtlsim.errors import RtlMismatchError
from fpgaprint.core import bist as B
from fpgaprint.core.errors import FpgaprintError, InputError

META = "fpgaprint_bist"  # partition metadata: the wrapper, its sources and their SHA-256
SUBDIR = "bist"  # under the partition's stitch project
TCL = "package_bist.tcl"
HWH_MAX_BYTES = 64 << 20
_REL = re.compile(r"bist/[A-Za-z0-9_][A-Za-z0-9_.]*")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _differs(detail: str) -> RtlMismatchError:
    return RtlMismatchError("the on-chip self-test for the bitstream is not the simulated one "
                            f"({B.BIST_DIR}): {detail}")


class BistFiles:
    """The BIST files of `hw/rtl/`, read once: `files` maps each path relative to `hw/rtl/`
    (the sources, then the memory images of `bist.json`) to its bytes."""

    def __init__(self, spec: B.BistSpec, files: dict[str, bytes]):
        self.spec, self.files = spec, files

    @property
    def sources(self) -> list[str]:
        return [r for r in self.files if r.endswith((".sv", ".v"))]

    @property
    def images(self) -> list[str]:
        return [r for r in self.files if r.endswith(".mem")]

    def hashes(self) -> dict[str, str]:
        return {r: _sha(b) for r, b in self.files.items()}

    @classmethod
    def read(cls, rtl_dir: Path) -> BistFiles | None:
        """The BIST of `rtl_dir` (None when none was generated), checked to be what its
        description generates and what the simulation ran: the controller and top
        `generate.hdl_sources` writes for it, memory images whose CRC-32 is `rom_crc`, and
        the stored signature and ROM CRC. Else RtlMismatchError naming the file."""
        from fpgaprint.compiler.bist.generate import (
            hdl_sources,
            meta_image,
            read_hex_lines,
            rom_crc,
        )

        rtl_dir = Path(rtl_dir)
        path = rtl_dir / "bist" / "bist.json"
        if not path.is_file():
            return None
        spec = B.load_spec(path)
        raw = spec.raw
        images = raw.get("files")
        need = {"inputs", "meta"} | ({"expected"} if spec.mode == "exact" else set())
        if not isinstance(images, dict) or not need <= set(images) or \
                not isinstance(raw.get("sources"), list) or \
                not isinstance(raw.get("watchdog_cycles"), int):
            raise InputError(f"{path}: 'sources', 'watchdog_cycles' and 'files' "
                             f"({', '.join(sorted(need))}) are not all given")
        rels = [*raw["sources"], *images.values()]
        files: dict[str, bytes] = {}
        for rel in rels:
            if not isinstance(rel, str) or not _REL.fullmatch(rel):
                raise InputError(f"{path}: file {str(rel)[:60]!r} is not a name under bist/")
            f = rtl_dir / rel
            if not f.is_file():
                raise _differs(f"{rel} is missing")
            files[rel] = f.read_bytes()
        for rel, text in hdl_sources(raw).items():
            if files.get(rel) != text.encode():
                raise _differs(f"{rel} is not the source generated for bist.json")
        def image(key: str, width: int):
            words = read_hex_lines(files[images[key]].decode("ascii", "replace"), width // 8)
            if words is None:
                raise _differs(f"{images[key]} is not a memory image of {width}-bit words")
            return words

        crc = rom_crc(image("inputs", spec.in_width),
                      image("expected", spec.out_width) if "expected" in images else None)
        if crc != spec.rom_crc:
            raise _differs(f"the memory images' CRC-32 is 0x{crc:08x}, bist.json's rom_crc "
                           f"0x{spec.rom_crc:08x}")
        if files[images["meta"]] != meta_image(spec.signature, spec.rom_crc).encode():
            raise _differs(f"{images['meta']} does not hold bist.json's signature and ROM CRC")
        return cls(spec, files)


def wrapper_source(block: str, bist: BistFiles, sim_finish: bool) -> str:
    """`finn_design` (the module the BIST top instantiates) over FINN+'s block design
    `<block>_wrapper`, and the IP's top `<block>_bist`: the BIST top with the accelerator's
    ports and the AXI-lite slave, `bist_start` low, `bist_done`/`bist_pass` unconnected (the
    register map reports them). `sim_finish`: FINN+'s stitched design has that input (its
    simulation control), tied low."""
    from fpgaprint.compiler.bist.generate import AXIL_SIGNALS, TOP, axil_ports, axis_ports

    iw, ow = bist.spec.in_width, bist.spec.out_width
    axis = ["ap_clk", "ap_rst_n", "s_axis_0_tdata", "s_axis_0_tvalid", "s_axis_0_tready",
            "m_axis_0_tdata", "m_axis_0_tvalid", "m_axis_0_tready"]
    axil = [f"{AXIL}_{sig}" for sig, _, _ in AXIL_SIGNALS]

    def conn(ports: list[str]) -> str:
        return ",\n".join(f"      .{p}({p})" for p in ports)

    tie = ",\n      .sim_finish(1'b0)" if sim_finish else ""
    return f"""// Generated by fpgaprint (compiler/bist/shell.py) for FINN+'s Zynq shell build: the
// simulated on-chip self-test top around the stitched partition {block}.
module finn_design (
{axis_ports(iw, ow)}
);
  {block}_wrapper stitched (
{conn(axis)}{tie});
endmodule

module {block}_bist (
{axis_ports(iw, ow)},
{axil_ports()}
);
  {TOP} bist (
{conn(axis + axil)},
      .bist_start(1'b0), .bist_done(), .bist_pass());
endmodule
"""


def package_tcl(proj: Path, block: str, vlnv: str, sources: list[Path],
                images: list[Path]) -> str:
    """Vivado TCL: the stitch project's IP re-packaged with `<block>_bist` as top, under the
    VLNV `vlnv` (in `proj/ip`, where FINN+ packaged the block design), with the `s_axi_bist`
    slave and its address block `Reg0` (4 KiB, MakeZYNQProject's minimum range)."""
    vendor, library, name, version = vlnv.split(":")
    srcs = " ".join(p.as_posix() for p in sources)
    mems = " ".join(p.as_posix() for p in images)
    return f"""# Generated by fpgaprint (compiler/bist/shell.py): the self-test around {block}
open_project {proj.as_posix()}/finn_vivado_stitch_proj.xpr
add_files -norecurse {{{srcs}}}
add_files -norecurse {{{mems}}}
set_property file_type {{Memory Initialization Files}} [get_files {{{mems}}}]
set_property top {block}_bist [current_fileset]
update_compile_order -fileset sources_1
ipx::package_project -root_dir {proj.as_posix()}/ip -vendor {vendor} -library {library} \\
    -taxonomy /UserIP -import_files -force
set core [ipx::current_core]
set_property name {name} $core
set_property version {version} $core
set_property ipi_drc {{ignore_freq_hz true}} $core
ipx::infer_bus_interfaces xilinx.com:interface:aximm_rtl:1.0 $core
ipx::infer_bus_interfaces xilinx.com:interface:axis_rtl:1.0 $core
foreach busif {{{AXIL} s_axis_0 m_axis_0}} {{
    ipx::associate_bus_interfaces -busif $busif -clock ap_clk $core
}}
set mm [ipx::add_memory_map {AXIL} $core]
set_property slave_memory_map_ref {AXIL} [ipx::get_bus_interfaces {AXIL} -of $core]
set_property range 4096 [ipx::add_address_block Reg0 $mm]
set_property core_revision 3 $core
ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::save_core $core
close_project
"""


def run_tcl(proj: Path, script: str) -> None:
    """Vivado in batch mode on `proj/script` (log `proj/<script>.log`); a failure is one line
    naming the log."""
    from finn.util.basic import resolve_xilinx_tool

    log = proj / f"{script}.log"
    with open(log, "w") as fh:
        rc = subprocess.run([resolve_xilinx_tool("vivado"), "-mode", "batch", "-source",
                             script], cwd=proj, stdout=fh, stderr=subprocess.STDOUT,
                            check=False).returncode
    if rc != 0:
        raise FpgaprintError(f"Vivado could not package the on-chip self-test (exit {rc}): "
                             f"see {log}")


def wrap_partition(model, block: str, bist: BistFiles) -> None:
    """Re-package the stitched partition `model` (FINN+'s CreateStitchedIP has run on it,
    IP name `block`) with the BIST top; its metadata then names `s_axi_bist` among its
    AXI-lite interfaces and records the wrapper and the SHA-256 of the files written."""
    from finn.transformation.fpgadataflow.create_stitched_ip import CreateStitchedIP

    proj = Path(model.get_metadata_prop("vivado_stitch_proj"))
    ifnames = json.loads(model.get_metadata_prop("vivado_stitch_ifnames"))
    want = {"s_axis": [["s_axis_0", bist.spec.in_width]],
            "m_axis": [["m_axis_0", bist.spec.out_width]]}
    got = {k: [list(x) for x in ifnames.get(k, [])] for k in want}
    if got != want:
        raise _differs(f"partition {block} streams {got}, the BIST top wraps {want}")
    other = sorted(k for k in ("aximm", "axilite", "ap_none", "clk2x") if ifnames.get(k))
    if other:
        raise InputError(f"the on-chip self-test wraps one input and one output stream; the "
                         f"accelerator partition {block} also has {', '.join(other)}")
    d = proj / SUBDIR
    for rel, data in bist.files.items():  # the bytes read and checked before the step
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    wrapper = d / f"{block}_bist.sv"
    wrapper.write_text(wrapper_source(block, bist, hasattr(CreateStitchedIP,
                                                           "insert_sim_ctrl")))
    vlnv = model.get_metadata_prop("vivado_stitch_vlnv")
    (proj / TCL).write_text(package_tcl(
        proj, block, vlnv, [d / r for r in bist.sources] + [wrapper],
        [d / r for r in bist.images]))
    run_tcl(proj, TCL)
    ifnames["axilite"] = [*ifnames.get("axilite", []), AXIL]
    model.set_metadata_prop("vivado_stitch_ifnames", json.dumps(ifnames))
    model.set_metadata_prop(META, json.dumps({
        "top": f"{block}_bist", "wrapper": wrapper.name, "dir": d.as_posix(), "tcl": TCL,
        "interface": AXIL, "sources": bist.hashes()}, sort_keys=True))


def moves_io(graph) -> bool:
    """Whether a shell build's partition `graph` holds FINN+'s IO DMAs (the others hold the
    accelerator)."""
    return any(n.op_type.startswith("IODMA") for n in graph.graph.node)


@contextlib.contextmanager
def zynq_shell(bist: BistFiles):
    """While open, FINN+'s ZynqBuild stitches the accelerator's partition with the BIST top
    around it (`wrap_partition`); the other partitions (IO DMAs) as FINN+ does."""
    from finn.transformation.fpgadataflow import make_zynq_proj as mzp

    base = mzp.CreateStitchedIP

    class BistStitchedIP(base):
        def apply(self, model):
            model, changed = super().apply(model)
            if not moves_io(model):
                wrap_partition(model, self.ip_name, bist)
            return model, changed

    mzp.CreateStitchedIP = BistStitchedIP
    try:
        yield
    finally:
        mzp.CreateStitchedIP = base


def check_partition(kernel, name: str, bist: BistFiles) -> dict:
    """The accelerator's partition `kernel` (named `name`) of the graph the bitfile step
    returned carries the BIST: `s_axi_bist` among its AXI-lite interfaces and the files
    written for Vivado still those simulated. Returns its record (instance, interface, top,
    sources); else RtlMismatchError."""
    meta = kernel.get_metadata_prop(META)
    if not meta:
        raise _differs(f"the bitfile's accelerator partition {name} was stitched without it")
    rec = json.loads(meta)
    ifnames = json.loads(kernel.get_metadata_prop("vivado_stitch_ifnames") or "{}")
    if AXIL not in ifnames.get("axilite", []):
        raise _differs(f"partition {name} does not list {AXIL} among its AXI-lite "
                       "interfaces")
    d = Path(rec["dir"])
    for rel, sha in bist.hashes().items():
        f = d / rel
        if rec["sources"].get(rel) != sha or not f.is_file() or _sha(f.read_bytes()) != sha:
            raise _differs(f"{f} (given to Vivado) is not the simulated {rel}")
    return {"instance": name, "interface": AXIL, "top": rec["top"],
            "sources": dict(sorted(bist.hashes().items()))}


def bist_address(hwh: Path, instance: str) -> dict | None:
    """The address range Vivado assigned to `instance`'s `s_axi_bist` slave, from the
    hardware handoff `hwh` (its MEMRANGE elements): {"base": "0x…", "high": "0x…",
    "master": bus interface of the PS}; None when the handoff has no such range."""
    import xml.etree.ElementTree as ET

    hwh = Path(hwh)
    if hwh.stat().st_size > HWH_MAX_BYTES:
        raise InputError(f"{hwh}: larger than {HWH_MAX_BYTES >> 20} MiB")
    try:
        root = ET.fromstring(hwh.read_bytes())
    except ET.ParseError as e:
        raise InputError(f"{hwh}: not a hardware handoff (XML: {e})") from None
    for r in root.iter("MEMRANGE"):
        if r.get("INSTANCE") == instance and r.get("SLAVEBUSINTERFACE") == AXIL:
            try:
                base, high = int(r.get("BASEVALUE", ""), 16), int(r.get("HIGHVALUE", ""), 16)
            except ValueError:
                raise InputError(f"{hwh}: the range of {instance}/{AXIL} is not two hex "
                                 "addresses") from None
            if not 0 <= base <= high < 1 << 64:
                raise InputError(f"{hwh}: the range of {instance}/{AXIL} is empty")
            return {"base": f"0x{base:08X}", "high": f"0x{high:08X}",
                    "master": r.get("MASTERBUSINTERFACE")}
    return None
