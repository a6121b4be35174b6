"""RTL co-simulation with Verilator.

`verilator` builds a design (a file list and a top module) into a shared library, cached
by content; `sim.VerilatedSim` drives one instance through a small C++ harness (signals by
name, clock, reset, AXI streams fed and drained in C++); `xsi` implements FINN+'s
`finn.xsi` API on top of both, so FINN+'s own node-level rtlsim runs without Vivado.
In the build (`stage.run`): `impl` chooses RTL or HLS variants, `layers` checks every RTL
layer node by node against the golden model, `stitch` chains an all-RTL accelerator into one
Verilog top packaged under hw/rtl/, `design` builds and runs that package folder.

    from fpgaprint.compiler.rtlsim import use_verilator
    with use_verilator():
        getCustomOp(node).prepare_rtlsim(behav=False)
        execute_onnx(model, inputs)  # nodes with exec_mode="rtlsim"
"""

from fpgaprint.compiler.rtlsim.errors import SimulationError
from fpgaprint.compiler.rtlsim.sim import StreamResult, VerilatedSim
from fpgaprint.compiler.rtlsim.verilator import Build, build_library, cache_dir, find_verilator
from fpgaprint.compiler.rtlsim.xsi import install, installed, uninstall, use_verilator

__all__ = ["Build", "SimulationError", "StreamResult", "VerilatedSim", "build_library",
           "cache_dir", "find_verilator", "install", "installed", "uninstall", "use_verilator"]
