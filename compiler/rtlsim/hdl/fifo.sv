// First-word-fall-through FIFO with the port and parameter interface of finn-rtllib's
// fifo. Verilator cannot evaluate the original's geometry function (a constant function
// returning an unpacked struct), so Verilator builds use this module instead. It holds
// DEPTH items; irdy, ovld and odat come from registers (no input-to-output paths).
// RAM_STYLE is accepted and ignored: it only selects a storage primitive in hardware.
module fifo #(
	int unsigned  DEPTH,
	int unsigned  DATA_WIDTH,
	parameter  RAM_STYLE = "auto"
)(
	input	logic  clk,
	input	logic  rst,

	input	logic [DATA_WIDTH-1:0]  idat,
	input	logic  ivld,
	output	logic  irdy,

	output	logic [DATA_WIDTH-1:0]  odat,
	output	logic  ovld,
	input	logic  ordy,

	output	logic [$clog2(DEPTH+1):0]  count,
	output	logic [$clog2(DEPTH+1):0]  maxcount
);

	initial begin
		if(DEPTH < 2) begin
			$error("%m: DEPTH of %0d must be 2 or above.", DEPTH);
			$finish;
		end
	end

	localparam int unsigned  PW = DEPTH > 1? $clog2(DEPTH) : 1;
	typedef logic [$clog2(DEPTH+1):0]  cnt_t;

	logic [DATA_WIDTH-1:0]  Mem[DEPTH];
	logic [PW-1:0]  WrPtr = 0;
	logic [PW-1:0]  RdPtr = 0;
	cnt_t  Count = 0;
	cnt_t  MaxCount = 0;

	assign	irdy = Count != cnt_t'(DEPTH);
	assign	ovld = Count != 0;
	assign	odat = Mem[RdPtr];
	assign	count = Count;
	assign	maxcount = MaxCount;

	uwire  push = irdy && ivld;
	uwire  pop  = ovld && ordy;
	uwire cnt_t  count_nxt = Count + cnt_t'(push) - cnt_t'(pop);

	always_ff @(posedge clk) begin
		if(rst) begin
			WrPtr <= 0;
			RdPtr <= 0;
			Count <= 0;
			MaxCount <= 0;
		end
		else begin
			if(push) begin
				Mem[WrPtr] <= idat;
				WrPtr <= (WrPtr == PW'(DEPTH-1))? 0 : WrPtr + 1;
			end
			if(pop)  RdPtr <= (RdPtr == PW'(DEPTH-1))? 0 : RdPtr + 1;
			Count <= count_nxt;
			if(count_nxt > MaxCount)  MaxCount <= count_nxt;
		end
	end

endmodule : fifo
