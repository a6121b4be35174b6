// Pipelined sum of N addends with the port and parameter interface of finn-rtllib's
// add_multi. Verilator rejects the original (a constant function declared under a
// generate block, IEEE 1800-2023 13.4.3), so Verilator builds use this module instead.
//
// Timing contract (the one mvu.sv relies on): with L = $clog2(N), the sum appears after
// min(L, DEPTH) register stages that advance only when `en` is high, followed by
// DEPTH - L free-running stages when DEPTH > L. Registers reset to zero (RESET_ZERO) or x.
module add_multi import mvu_pkg::*; #(
	int unsigned  N,
	int unsigned  DEPTH,
	int unsigned  ARG_WIDTH,
	int  ARG_LO = 0,
	int  ARG_HI = 0,
	bit  RESET_ZERO = 1,

	localparam int unsigned  SUM_WIDTH = sumwidth(N, ARG_WIDTH, ARG_LO, ARG_HI)
)(
	input	logic  clk,
	input	logic  rst,
	input	logic  en,

	input	logic [ARG_WIDTH-1:0]  arg[N],
	output	logic [SUM_WIDTH-1:0]  sum
);

	localparam int unsigned  L = $clog2(N);
	localparam int unsigned  D = L < DEPTH? L : DEPTH;
	localparam bit  SIGNED = ARG_LO < 0;
	localparam logic [SUM_WIDTH-1:0]  RST_VAL = {(SUM_WIDTH){RESET_ZERO? 1'b0 : 1'bx}};

	// Combinational sum in SUM_WIDTH bits (sign-extended addends when SIGNED).
	logic [SUM_WIDTH-1:0]  total;
	always_comb begin
		total = '0;
		for(int unsigned  i = 0; i < N; i++) begin
			if(SIGNED)  total += SUM_WIDTH'($signed(arg[i]));
			else        total += SUM_WIDTH'(arg[i]);
		end
	end

	// D enable-gated stages.
	uwire [SUM_WIDTH-1:0]  sum0;
	if(D == 0) begin : genComb
		assign	sum0 = total;
	end : genComb
	else begin : genPipe
		logic [SUM_WIDTH-1:0]  P[D] = '{ default: RST_VAL };
		always_ff @(posedge clk) begin
			if(rst)  P <= '{ default: RST_VAL };
			else if(en) begin
				P[0] <= total;
				for(int unsigned  i = 1; i < D; i++)  P[i] <= P[i-1];
			end
		end
		assign	sum0 = P[D-1];
	end : genPipe

	// DEPTH - L free-running stages.
	if(DEPTH <= L) begin : genNoDelay
		assign	sum = sum0;
	end : genNoDelay
	else begin : genDelay
		logic [SUM_WIDTH-1:0]  Z[DEPTH - L] = '{ default: RST_VAL };
		always_ff @(posedge clk) begin
			if(rst)  Z <= '{ default: RST_VAL };
			else begin
				Z[0] <= sum0;
				for(int unsigned  i = 1; i < DEPTH - L; i++)  Z[i] <= Z[i-1];
			end
		end
		assign	sum = Z[DEPTH - L - 1];
	end : genDelay

endmodule : add_multi
