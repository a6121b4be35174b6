"""A testbench stand-in for `finn_design`: plays stored output words instead of computing.

For designs without a stitched RTL accelerator (HLS layers need Vitis HLS), the BIST
controller is tested in Verilator against this module, which takes IN_WORDS input words per
vector and answers each vector with the next OUT_WORDS words of `bist/standin_out.mem` (the
golden outputs, or deliberately altered ones). It tests the controller, never the hardware.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fpgaprint.compiler.bist.generate import axis_ports, hex_lines
from fpgaprint.core import bist as B
from fpgaprint.core.streams import pack_output

NAME = "standin_finn_design.sv"


def write_standin(rtl_dir: str | Path, spec: B.BistSpec, raw: np.ndarray,
                  stop_after: int | None = None) -> Path:
    """`rtl_dir/bist/standin_finn_design.sv` and `standin_out.mem` answering with the raw
    outputs `raw` (N, R), or only the first `stop_after` vectors (a hung accelerator);
    returns the source path."""
    d = Path(rtl_dir) / "bist"
    nb = spec.out_width // 8
    words = pack_output(np.asarray(raw, np.int64), spec.io).reshape(-1, nb)
    (d / "standin_out.mem").write_text(hex_lines(words))
    iw, ow, total = spec.in_width, spec.out_width, spec.vectors * spec.out_words
    src = d / NAME
    src.write_text(f"""// Test stand-in for finn_design (compiler/bist/standin.py): stored outputs.
module finn_design (
{axis_ports(iw, ow)}
);
  localparam int IN_WORDS = {spec.in_words};
  localparam int OUT_WORDS = {spec.out_words};
  localparam int TOTAL = {total};
  localparam int ANSWER = {spec.vectors if stop_after is None else int(stop_after)};
  logic [{ow - 1}:0] outs[TOTAL];
  initial $readmemh("bist/standin_out.mem", outs);
  logic [31:0] in_cnt, out_cnt, addr, pending, answered;
  wire in_fire = s_axis_0_tvalid && s_axis_0_tready;
  wire out_fire = m_axis_0_tvalid && m_axis_0_tready;
  wire vec_in = in_fire && in_cnt == IN_WORDS - 1 && answered < ANSWER;
  wire vec_out = out_fire && out_cnt == OUT_WORDS - 1;
  assign s_axis_0_tready = ap_rst_n;
  assign m_axis_0_tvalid = pending != 0;
  assign m_axis_0_tdata = outs[addr < TOTAL ? addr : 0];
  always_ff @(posedge ap_clk) begin
    if (!ap_rst_n) begin
      in_cnt <= '0;
      out_cnt <= '0;
      addr <= '0;
      pending <= '0;
      answered <= '0;
    end else begin
      if (in_fire) in_cnt <= in_cnt == IN_WORDS - 1 ? '0 : in_cnt + 1;
      if (vec_in) answered <= answered + 1;
      if (out_fire) begin
        out_cnt <= vec_out ? '0 : out_cnt + 1;
        addr <= addr + 1 < TOTAL ? addr + 1 : 0;
      end
      pending <= pending + (vec_in ? 1 : 0) - (vec_out ? 1 : 0);
    end
  end
endmodule
""")
    return src
