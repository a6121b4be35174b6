// fpgaprint on-chip self-test controller.
//
// Streams the self-test vectors of its input ROM into the accelerator, checks or compacts the
// output stream and reports the result. It starts after reset (power-on self-test) and again
// on `start` once done. While it runs it owns the accelerator's streams (`busy`); the top
// passes normal traffic through otherwise.
//
// * exact mode (EXACT = 1): every output word is compared with the expected-output ROM
//   (bits at and above OUT_BITS ignored); FAIL_COUNT counts failing vectors, FIRST_FAIL is
//   the first one.
// * signature mode (EXACT = 0): only the CRC-32 of the output stream is compared.
// * In both modes the output stream's CRC-32 (zlib's, words as little-endian bytes) is the
//   signature, and the CRC-32 of every ROM word as it is read must equal the stored one
//   (META line 1), so a corrupted ROM fails. META line 0 is the expected signature.
// * A watchdog ends a run whose accelerator stops answering (TIMEOUT, FAIL).
module bist_ctrl #(
    parameter int N_VEC = 1,
    parameter int IN_WORDS = 1,
    parameter int OUT_WORDS = 1,
    parameter int IN_W = 8,
    parameter int OUT_W = 8,
    parameter int OUT_BITS = 8,
    parameter bit EXACT = 1,
    parameter int WATCHDOG = 1 << 20,
    parameter string IN_FILE = "bist/bist_in.mem",
    parameter string EXP_FILE = "bist/bist_exp.mem",
    parameter string META_FILE = "bist/bist_meta.mem"
) (
    input  logic             clk,
    input  logic             rst_n,
    input  logic             start,
    output logic [IN_W-1:0]  acc_in_tdata,
    output logic             acc_in_tvalid,
    input  logic             acc_in_tready,
    input  logic [OUT_W-1:0] acc_out_tdata,
    input  logic             acc_out_tvalid,
    output logic             acc_out_tready,
    output logic             busy,
    output logic             done,
    output logic             pass,
    output logic             rom_ok,
    output logic             timeout,
    output logic [31:0]      fail_count,
    output logic [31:0]      first_fail,
    output logic [31:0]      signature,
    output logic [31:0]      expected_signature,
    output logic [31:0]      cycles,
    output logic [31:0]      rom_crc,
    output logic [31:0]      rom_crc_expected
);
  localparam int IN_TOTAL = N_VEC * IN_WORDS;
  localparam int OUT_TOTAL = N_VEC * OUT_WORDS;
  localparam int EXP_DEPTH = EXACT ? OUT_TOTAL : 1;
  function automatic logic [OUT_W-1:0] out_mask();
    logic [OUT_W-1:0] m;
    for (int i = 0; i < OUT_W; i++) m[i] = (i < OUT_BITS);
    return m;
  endfunction
  localparam logic [OUT_W-1:0] OUT_MASK = out_mask();

  (* rom_style = "block" *) logic [IN_W-1:0] rom_in[IN_TOTAL];
  (* rom_style = "block" *) logic [OUT_W-1:0] rom_exp[EXP_DEPTH];
  logic [31:0] meta[2];

  initial begin
    $readmemh(IN_FILE, rom_in);
    $readmemh(META_FILE, meta);
  end
  generate
    if (EXACT) begin : g_exp
      initial $readmemh(EXP_FILE, rom_exp);
    end else begin : g_noexp
      initial rom_exp[0] = '0;
    end
  endgenerate

  function automatic logic [31:0] crc_in_step(input logic [31:0] c, input logic [IN_W-1:0] d);
    logic [31:0] r;
    r = c;
    for (int i = 0; i < IN_W; i++) r = (r >> 1) ^ ((r[0] ^ d[i]) ? 32'hEDB88320 : 32'h0);
    return r;
  endfunction

  function automatic logic [31:0] crc_out_step(input logic [31:0] c, input logic [OUT_W-1:0] d);
    logic [31:0] r;
    r = c;
    for (int i = 0; i < OUT_W; i++) r = (r >> 1) ^ ((r[0] ^ d[i]) ? 32'hEDB88320 : 32'h0);
    return r;
  endfunction

  typedef enum logic [1:0] {IDLE, RUN, DONE} state_t;
  state_t st;
  logic auto_start;
  logic [31:0] in_addr, out_addr, vec_idx, word_idx, idle_cycles;
  logic [IN_W-1:0] in_word;
  logic [OUT_W-1:0] exp_word;
  logic [31:0] crc_in, crc_exp, crc_sig, n_fail, first;
  logic vec_bad, to;

  wire go = (st != RUN) && (auto_start || start);
  wire in_fire = acc_in_tvalid && acc_in_tready;
  wire out_fire = acc_out_tvalid && acc_out_tready;
  wire [OUT_W-1:0] out_masked = acc_out_tdata & OUT_MASK;
  wire word_bad = EXACT && (out_masked != (exp_word & OUT_MASK));
  wire [31:0] in_next = go ? 32'd0 : (in_fire ? in_addr + 1 : in_addr);
  wire [31:0] out_next = go ? 32'd0 : (out_fire ? out_addr + 1 : out_addr);

  // synchronous ROM reads: the word at the address presented next cycle
  always_ff @(posedge clk) begin
    in_word <= rom_in[in_next < IN_TOTAL ? in_next : 0];
    exp_word <= rom_exp[(EXACT && out_next < OUT_TOTAL) ? out_next : 0];
  end

  always_ff @(posedge clk) begin
    if (!rst_n || go) begin  // reset: idle, armed for the power-on run; go: a fresh run
      st <= rst_n ? RUN : IDLE;
      auto_start <= !rst_n;
      in_addr <= '0;
      out_addr <= '0;
      vec_idx <= '0;
      word_idx <= '0;
      crc_in <= '1;
      crc_exp <= '1;
      crc_sig <= '1;
      n_fail <= '0;
      first <= '1;
      vec_bad <= 1'b0;
      to <= 1'b0;
      cycles <= '0;
      idle_cycles <= '0;
    end else if (st == RUN) begin
      cycles <= cycles + 1;
      in_addr <= in_next;
      out_addr <= out_next;
      if (in_fire) crc_in <= crc_in_step(crc_in, in_word);
      if (out_fire) begin
        idle_cycles <= '0;
        crc_sig <= crc_out_step(crc_sig, out_masked);
        if (EXACT) crc_exp <= crc_out_step(crc_exp, exp_word);
        if (word_idx == OUT_WORDS - 1) begin
          word_idx <= '0;
          vec_idx <= vec_idx + 1;
          vec_bad <= 1'b0;
          if (vec_bad || word_bad) begin
            n_fail <= n_fail + 1;
            if (first == '1) first <= vec_idx;
          end
        end else begin
          word_idx <= word_idx + 1;
          vec_bad <= vec_bad || word_bad;
        end
        if (out_addr == OUT_TOTAL - 1) st <= DONE;
      end else begin
        idle_cycles <= idle_cycles + 1;
        if (idle_cycles == WATCHDOG - 1) begin
          to <= 1'b1;
          st <= DONE;
        end
      end
    end
  end

  assign acc_in_tdata = in_word;
  assign acc_in_tvalid = (st == RUN) && (in_addr < IN_TOTAL);
  assign acc_out_tready = (st == RUN);
  assign busy = (st != DONE);
  assign done = (st == DONE);
  assign timeout = to;
  assign signature = ~crc_sig;
  assign expected_signature = meta[0];
  assign rom_crc = ~crc_in ^ (EXACT ? ~crc_exp : 32'd0);
  assign rom_crc_expected = meta[1];
  assign rom_ok = done && !to && (rom_crc == rom_crc_expected);
  assign fail_count = EXACT ? n_fail : {31'd0, done && (signature != expected_signature)};
  assign first_fail = EXACT ? first : '1;
  assign pass = rom_ok && (signature == expected_signature) && (fail_count == 0);
endmodule
