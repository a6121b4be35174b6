// Elastic buffer with the port and parameter interface of finn-rtllib's skid. Verilator
// rejects the original (a $error format string with a missing argument is a compile
// error there), so Verilator builds use this module instead. It holds up to
// 2*FEED_STAGES + 2 items; irdy, ovld and odat come from registers. Cycle timing differs
// from the original, the stream contents do not.
module skid #(
	int unsigned  DATA_WIDTH,
	int unsigned  FEED_STAGES = 0
)(
	input	logic  clk,
	input	logic  rst,

	input	logic [DATA_WIDTH-1:0]  idat,
	input	logic  ivld,
	output	logic  irdy,

	output	logic [DATA_WIDTH-1:0]  odat,
	output	logic  ovld,
	input	logic  ordy
);

	localparam int unsigned  CAP = 2*FEED_STAGES + 2;
	localparam int unsigned  PW = $clog2(CAP);
	typedef logic [$clog2(CAP+1)-1:0]  cnt_t;

	logic [DATA_WIDTH-1:0]  Mem[CAP];
	logic [PW-1:0]  WrPtr = 0;
	logic [PW-1:0]  RdPtr = 0;
	cnt_t  Count = 0;

	assign	irdy = Count != cnt_t'(CAP);
	assign	ovld = Count != 0;
	assign	odat = Mem[RdPtr];

	uwire  push = irdy && ivld;
	uwire  pop  = ovld && ordy;

	always_ff @(posedge clk) begin
		if(rst) begin
			WrPtr <= 0;
			RdPtr <= 0;
			Count <= 0;
		end
		else begin
			if(push) begin
				Mem[WrPtr] <= idat;
				WrPtr <= (WrPtr == PW'(CAP-1))? 0 : WrPtr + 1;
			end
			if(pop)  RdPtr <= (RdPtr == PW'(CAP-1))? 0 : RdPtr + 1;
			Count <= Count + cnt_t'(push) - cnt_t'(pop);
		end
	end

endmodule : skid
