"""The on-chip self-test generator: `hw/rtl/bist/` from a package's self-test vectors.

Written files (paths relative to `hw/rtl/`, no absolute path, no time stamp):

* `bist/bist_in.mem`: every vector's input as the accelerator's input stream words (FINN+'s
  packing, `core.streams`), one hex word per line, vectors in order;
* `bist/bist_exp.mem` (`exact` mode): every golden raw output word as the accelerator streams
  it; in `signature` mode only the CRC-32 of that stream is kept;
* `bist/bist_meta.mem`: the expected signature and the ROM's CRC-32;
* `bist/bist_ctrl.sv` (the controller, `hdl/bist_ctrl.sv`) and `bist/fpgaprint_bist_top.sv`
  (generated: `finn_design` + controller + AXI-lite status registers, offsets from
  `core.bist.REGISTERS`);
* `bist/bist.json`: the description (`core.bist.BistSpec`) with ROM bits and the resource
  estimate.

The top keeps the accelerator's ports (`ap_clk`, `ap_rst_n`, `s_axis_0`, `m_axis_0`); while
the self-test is idle they pass through to `finn_design` untouched. The memory images are
read with `$readmemh` from paths relative to `hw/rtl/`, so one Verilator build serves any ROM
contents of the same shape.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from fpgaprint.core import bist as B
from fpgaprint.core.errors import InputError
from fpgaprint.core.streams import DriverIO, fold_input, pack_input, pack_output

HDL = Path(__file__).with_name("hdl")
TOP = "fpgaprint_bist_top"
CTRL = "bist_ctrl.sv"
SOURCES = (f"bist/{CTRL}", f"bist/{TOP}.sv")
WATCHDOG = 1 << 24  # default cycles without an output word before a run ends in TIMEOUT
LUTROM_BITS = 1024  # smaller ROMs become LUTs, larger ones block RAM


def hex_lines(words: np.ndarray) -> str:
    """uint8 (n, nbytes) little-endian words as $readmemh lines (most significant digit
    first)."""
    w = np.ascontiguousarray(np.asarray(words, np.uint8)[:, ::-1])
    text = w.tobytes().hex()
    step = 2 * w.shape[1]
    return "\n".join(text[i:i + step] for i in range(0, len(text), step)) + "\n"


def read_hex_lines(text: str, nbytes: int) -> np.ndarray | None:
    """`hex_lines` read back: uint8 (n, nbytes) little-endian words, or None when `text` is
    not an image of `nbytes`-byte words."""
    lines = text.split()
    if not lines or any(len(x) != 2 * nbytes for x in lines):
        return None
    try:
        w = np.frombuffer(bytes.fromhex("".join(lines)), np.uint8).reshape(-1, nbytes)
    except ValueError:
        return None
    return np.ascontiguousarray(w[:, ::-1])


def rom_crc(win: np.ndarray, wout: np.ndarray | None) -> int:
    """The CRC-32 the controller checks its ROMs against: of the input words (uint8 (n,
    nbytes)), XOR that of the expected-output words in exact mode (`wout`; None in signature
    mode)."""
    crc = B.crc32_words(win, win.shape[1])
    return crc if wout is None else crc ^ B.crc32_words(wout, wout.shape[1])


def meta_image(signature: int, crc: int) -> str:
    """`bist/bist_meta.mem`: the expected signature and the ROM's CRC-32."""
    return f"{signature:08x}\n{crc:08x}\n"


def bram18(width: int, depth: int) -> int:
    """BRAM_18K primitives for a ROM of `depth` words of `width` bits (the best of the 18K
    block's aspect ratios); 0 for a ROM small enough for LUTs."""
    if width * depth <= LUTROM_BITS:
        return 0
    configs = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in configs)


def estimate(in_width: int, out_width: int, in_total: int, out_total: int,
             exact: bool) -> dict:
    """ROM bits and a BRAM_18K / LUT / FF estimate of the ROMs and the controller.

    LUT: CRC-32 update of a W-bit word ~ 32 * ceil((W + 32) / 5) LUT6 (XOR trees), for the
    input ROM, the output stream and (exact) the expected ROM; comparator, stream multiplexers,
    counters and the AXI-lite read multiplexer; LUT ROM at 64 bits per LUT6. FF: the counters,
    CRC registers, the ROM output words and the AXI-lite slave."""
    rom = {"inputs": in_width * in_total, "expected": out_width * out_total if exact else 0,
           "meta": 64}
    bram = bram18(in_width, in_total) + (bram18(out_width, out_total) if exact else 0)
    lutrom = sum(bits for name, bits in rom.items()
                 if name == "meta" or (bits and bits <= LUTROM_BITS))

    def crc(w: int) -> int:
        return 32 * math.ceil((w + 32) / 5)

    lut = (crc(in_width) + crc(out_width) + (crc(out_width) + math.ceil(out_width / 3)
                                             if exact else 0)
           + in_width + out_width + 10 * 32 + 12 * 32 // 4 + 40 + math.ceil(lutrom / 64))
    ff = in_width + out_width + 9 * 32 + 3 * 32 + 32 + 40
    return {"rom_bits": {**rom, "total": sum(rom.values())},
            "resources": {"BRAM_18K": bram, "LUT": lut, "FF": ff, "DSP": 0, "URAM": 0}}



# the BIST's AXI-lite slave `s_axi_bist`: (signal, output?, width; None: the address width)
AXIL_SIGNALS = (("awaddr", False, None), ("awvalid", False, 1), ("awready", True, 1),
                ("wdata", False, 32), ("wstrb", False, 4), ("wvalid", False, 1),
                ("wready", True, 1), ("bresp", True, 2), ("bvalid", True, 1),
                ("bready", False, 1), ("araddr", False, None), ("arvalid", False, 1),
                ("arready", True, 1), ("rdata", True, 32), ("rresp", True, 2),
                ("rvalid", True, 1), ("rready", False, 1))
AXIL = "s_axi_bist"


def axil_ports() -> str:
    """The port list of the AXI-lite slave, shared by the BIST top and the shell's wrapper."""
    lines = []
    for sig, out, width in AXIL_SIGNALS:
        w = B.ADDR_BITS if width is None else width
        rng = f"[{w - 1}:0]" if w > 1 else ""
        lines.append(f"    {'output' if out else 'input':<6} logic {rng:<11}{AXIL}_{sig}")
    return ",\n".join(lines)


def axis_ports(iw: int, ow: int) -> str:
    """The port list of FINN+'s stitched top `finn_design` (clock, reset, one AXI stream in and
    out), shared by the BIST top and the test stand-in."""
    return f"""    input  logic            ap_clk,
    input  logic            ap_rst_n,
    input  logic [{iw - 1}:0]     s_axis_0_tdata,
    input  logic            s_axis_0_tvalid,
    output logic            s_axis_0_tready,
    output logic [{ow - 1}:0]     m_axis_0_tdata,
    output logic            m_axis_0_tvalid,
    input  logic            m_axis_0_tready"""

def _top(spec: dict) -> str:
    regs = "\n".join(f"  localparam logic [{B.ADDR_BITS - 1}:0] REG_{r.name} = "
                     f"{B.ADDR_BITS}'h{r.offset:02X};  // {r.access}: {r.doc}"
                     for r in B.REGISTERS)
    bits = "\n".join(f"  localparam int STATUS_{name} = {bit};"
                     for name, bit in B.STATUS_BITS.items())
    iw, ow = spec["in_width"], spec["out_width"]
    status = " | ".join(
        f"(32'({sig}) << STATUS_{name})" for name, sig in (
            ("DONE", "done"), ("PASS", "pass_o"), ("BUSY", "busy"), ("ROM_OK", "rom_ok"),
            ("SIGNATURE_MODE", "!EXACT"), ("TIMEOUT", "timeout")))
    # every read-only register: a constant, or the signal of its record field's name
    consts = {"ID": f"32'h{B.MAGIC:08X}", "VERSION": f"32'd{B.MAP_VERSION}",
              "VECTORS": f"32'd{spec['vectors']}"}
    reads = "\n".join(f"        REG_{r.name}: rdata <= {consts.get(r.name, r.name.lower())};"
                      for r in B.REGISTERS if r.access == "ro")
    return f"""// Generated by fpgaprint (compiler/bist/generate.py): the stitched accelerator
// with its on-chip self-test. Register offsets: core/bist.py (firmware/fpgaprint_bist.h).
module {TOP} (
{axis_ports(iw, ow)},
    input  logic            bist_start,
    output logic            bist_done,
    output logic            bist_pass,
{axil_ports()}
);
{regs}
{bits}
  localparam bit EXACT = {1 if spec['mode'] == 'exact' else 0};

  logic [{iw - 1}:0] acc_in_tdata, bist_in_tdata;
  logic acc_in_tvalid, acc_in_tready, bist_in_tvalid;
  logic [{ow - 1}:0] acc_out_tdata;
  logic acc_out_tvalid, acc_out_tready, bist_out_tready;
  logic busy, done, pass_o, rom_ok, timeout, start_reg;
  logic [31:0] fail_count, first_fail, signature, expected_signature, cycles, rom_crc;
  logic [31:0] rom_crc_expected, status;

  finn_design accelerator (
      .ap_clk(ap_clk), .ap_rst_n(ap_rst_n),
      .s_axis_0_tdata(acc_in_tdata), .s_axis_0_tvalid(acc_in_tvalid),
      .s_axis_0_tready(acc_in_tready),
      .m_axis_0_tdata(acc_out_tdata), .m_axis_0_tvalid(acc_out_tvalid),
      .m_axis_0_tready(acc_out_tready));

  bist_ctrl #(
      .N_VEC({spec['vectors']}), .IN_WORDS({spec['in_words']}), .OUT_WORDS({spec['out_words']}),
      .IN_W({iw}), .OUT_W({ow}), .OUT_BITS({spec['out_bits']}), .EXACT(EXACT),
      .WATCHDOG({spec['watchdog_cycles']})
  ) controller (
      .clk(ap_clk), .rst_n(ap_rst_n), .start(bist_start || start_reg),
      .acc_in_tdata(bist_in_tdata), .acc_in_tvalid(bist_in_tvalid),
      .acc_in_tready(acc_in_tready),
      .acc_out_tdata(acc_out_tdata), .acc_out_tvalid(acc_out_tvalid),
      .acc_out_tready(bist_out_tready),
      .busy(busy), .done(done), .pass(pass_o), .rom_ok(rom_ok), .timeout(timeout),
      .fail_count(fail_count), .first_fail(first_fail), .signature(signature),
      .expected_signature(expected_signature), .cycles(cycles), .rom_crc(rom_crc),
      .rom_crc_expected(rom_crc_expected));

  // while the self-test runs it owns the accelerator's streams; otherwise traffic passes
  assign acc_in_tdata = busy ? bist_in_tdata : s_axis_0_tdata;
  assign acc_in_tvalid = busy ? bist_in_tvalid : s_axis_0_tvalid;
  assign s_axis_0_tready = !busy && acc_in_tready;
  assign m_axis_0_tdata = acc_out_tdata;
  assign m_axis_0_tvalid = !busy && acc_out_tvalid;
  assign acc_out_tready = busy ? bist_out_tready : m_axis_0_tready;
  assign bist_done = done;
  assign bist_pass = pass_o;
  assign status = {status};

  // AXI-lite slave: reads of the status registers, a write of CONTROL bit 0 starts a run
  logic rvalid, bvalid;
  logic [31:0] rdata;
  assign s_axi_bist_arready = !rvalid;
  assign s_axi_bist_rvalid = rvalid;
  assign s_axi_bist_rdata = rdata;
  assign s_axi_bist_rresp = 2'b00;
  assign s_axi_bist_awready = !bvalid && s_axi_bist_awvalid && s_axi_bist_wvalid;
  assign s_axi_bist_wready = !bvalid && s_axi_bist_awvalid && s_axi_bist_wvalid;
  assign s_axi_bist_bvalid = bvalid;
  assign s_axi_bist_bresp = 2'b00;
  always_ff @(posedge ap_clk) begin
    if (!ap_rst_n) begin
      rvalid <= 1'b0;
      bvalid <= 1'b0;
      start_reg <= 1'b0;
      rdata <= '0;
    end else begin
      start_reg <= 1'b0;
      if (s_axi_bist_arvalid && !rvalid) begin
        rvalid <= 1'b1;
        case (s_axi_bist_araddr)
{reads}
          default: rdata <= 32'd0;
        endcase
      end else if (rvalid && s_axi_bist_rready) rvalid <= 1'b0;
      if (s_axi_bist_awready) begin
        bvalid <= 1'b1;
        if (s_axi_bist_awaddr == REG_CONTROL && s_axi_bist_wstrb[0])
          start_reg <= s_axi_bist_wdata[0];
      end else if (bvalid && s_axi_bist_bready) bvalid <= 1'b0;
    end
  end
endmodule
"""


def hdl_sources(spec: dict) -> dict[str, str]:
    """The HDL files `generate` writes for the description `spec` (bist.json), by their
    paths relative to `hw/rtl/`: the controller and the generated top."""
    return {f"bist/{CTRL}": (HDL / CTRL).read_text(), f"bist/{TOP}.sv": _top(spec)}


def watchdog(latency_cycles: int | None) -> int:
    if not latency_cycles:
        return WATCHDOG
    return max(4096, 1 << math.ceil(math.log2(8 * int(latency_cycles))))


def generate(rtl_dir: str | Path, io: DriverIO, inputs: np.ndarray, golden_raw: np.ndarray,
             mode: str = "exact", stitched: bool = True,
             predicted_cycles: int | None = None,
             latency_cycles: int | None = None) -> B.BistSpec:
    """Write `rtl_dir/bist/` for the vectors `inputs` (N, ...) on the input grid and their
    golden raw outputs (N, R); returns its description. The watchdog allows 8x the
    accelerator's latency (`latency_cycles`, at least 4096) without an output word, else
    WATCHDOG."""
    if mode not in B.MODES:
        raise InputError(f"bist.mode {mode!r}: expected one of {list(B.MODES)}")
    inputs = np.asarray(inputs)
    n = int(inputs.shape[0])
    if not 1 <= n <= B.MAX_VECTORS:
        raise InputError(f"BIST: {n} vectors, expected 1..{B.MAX_VECTORS}")
    win = pack_input(fold_input(inputs, io), io)
    in_words = int(np.prod(win.shape[1:-1]))
    win = win.reshape(n * in_words, win.shape[-1])
    wout = pack_output(np.asarray(golden_raw, np.int64).reshape(n, -1), io)
    out_words = int(np.prod(wout.shape[1:-1]))
    wout = wout.reshape(n * out_words, wout.shape[-1])
    from fpgaprint.core.streams import datatype

    out_bits = int(io.oshape_folded[-1]) * int(datatype(io.odt).bitwidth())
    in_nb, out_nb = win.shape[1], wout.shape[1]
    signature = B.crc32_words(wout, out_nb, out_bits)
    exact = mode == "exact"
    crc = rom_crc(win, wout if exact else None)
    est = estimate(8 * in_nb, 8 * out_nb, len(win), len(wout), exact)
    d = Path(rtl_dir) / "bist"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / "bist_in.mem").write_text(hex_lines(win))
    files = {"inputs": "bist/bist_in.mem", "meta": "bist/bist_meta.mem"}
    if exact:
        (d / "bist_exp.mem").write_text(hex_lines(wout))
        files["expected"] = "bist/bist_exp.mem"
    (d / "bist_meta.mem").write_text(meta_image(signature, crc))
    spec = {
        "format": B.FORMAT, "mode": mode, "vectors": n, "in_words": in_words,
        "in_width": 8 * in_nb, "out_words": out_words, "out_width": 8 * out_nb,
        "out_bits": out_bits, "signature": f"0x{signature:08x}", "rom_crc": f"0x{crc:08x}",
        "stitched": bool(stitched), "predicted_cycles": predicted_cycles,
        "top": TOP, "sources": list(SOURCES), "files": files,
        "watchdog_cycles": watchdog(latency_cycles),
        "io": io.to_io_shape_dict(),
        **est,
    }
    for rel, text in hdl_sources(spec).items():
        (Path(rtl_dir) / rel).write_text(text)
    (d / "bist.json").write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return B.BistSpec.from_dict(spec, str(d / "bist.json"))
