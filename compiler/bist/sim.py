"""The BIST top (`hw/rtl/bist/`) around the stitched accelerator, simulated with Verilator.

`BistSim` is a `StitchedSim` of the BIST top: after every reset the power-on self-test runs
to completion (`wait_done`), then normal traffic passes through to the accelerator with the
same `run` as the bare design. The status registers are read over the AXI-lite slave, as
firmware reads them (`registers`); `start` writes CONTROL.
"""

from __future__ import annotations

from pathlib import Path

from fpgaprint.compiler.rtlsim.design import RESET_CYCLES, StitchedDesign, StitchedSim
from fpgaprint.compiler.rtlsim.errors import SimulationError
from fpgaprint.core import bist as B

AXI = "s_axi_bist"
POLL = 1024  # cycles between polls of bist_done


def load_spec(rtl_dir: str | Path) -> B.BistSpec:
    """The BIST description of a `hw/rtl/` folder."""
    return B.load_spec(Path(rtl_dir) / "bist" / "bist.json")


def bist_sources(rtl_dir: str | Path) -> list[Path]:
    from fpgaprint.compiler.bist.generate import SOURCES

    return [Path(rtl_dir) / s for s in SOURCES]


def build_bist(design: StitchedDesign, log_dir: str | Path | None = None):
    """The Verilator model of the BIST top with the stitched design's sources."""
    from fpgaprint.compiler.bist.generate import TOP
    from fpgaprint.compiler.rtlsim.verilator import build_library

    return build_library(TOP, design.verilator_sources() + bist_sources(design.dir),
                         label=f"on-chip self-test top {TOP}", log_dir=log_dir)


class BistRegisters:
    """The BIST's pins and AXI-lite slave on a simulated top (`self.sim`, `self.spec`)."""

    sim: object
    spec: B.BistSpec

    def wait_done(self, max_cycles: int | None = None) -> int:
        """Clock until the self-test raises bist_done; cycles waited."""
        sim = self.sim
        limit = max_cycles or (2 * (self.spec.predicted_cycles or 0)
                               + 2 * int(self.spec.raw.get("watchdog_cycles") or 0) + 100_000)
        waited = 0
        while not sim.get("bist_done"):
            if waited >= limit:
                raise SimulationError(f"{sim.name}: the on-chip self-test did not finish within "
                                      f"{limit} cycles")
            sim.step(POLL)
            waited += POLL
        return waited

    # -- AXI-lite --------------------------------------------------------------------------
    def read(self, offset: int) -> int:
        """One 32-bit register read over the AXI-lite slave."""
        sim = self.sim
        sim.set(f"{AXI}_rready", 1)
        sim.set(f"{AXI}_araddr", offset)
        sim.set(f"{AXI}_arvalid", 1)
        sim.eval()
        for _ in range(16):
            sim.step(1)
            if sim.get(f"{AXI}_rvalid"):
                value = sim.get(f"{AXI}_rdata")
                sim.set(f"{AXI}_arvalid", 0)
                sim.step(1)
                return value
        raise SimulationError(f"{sim.name}: no AXI-lite read answer at 0x{offset:02x}")

    def write(self, offset: int, value: int) -> None:
        sim = self.sim
        sim.set(f"{AXI}_awaddr", offset)
        sim.set(f"{AXI}_wdata", value)
        sim.set(f"{AXI}_wstrb", 0xF)
        sim.set(f"{AXI}_awvalid", 1)
        sim.set(f"{AXI}_wvalid", 1)
        sim.set(f"{AXI}_bready", 1)
        sim.eval()
        for _ in range(16):
            accepted = sim.get(f"{AXI}_awready")
            sim.step(1)
            if accepted:
                sim.set(f"{AXI}_awvalid", 0)
                sim.set(f"{AXI}_wvalid", 0)
                sim.step(1)
                return
        raise SimulationError(f"{sim.name}: AXI-lite write at 0x{offset:02x} not accepted")

    def registers(self) -> dict[str, int]:
        """Every readable register (lower-case names, `core.bist.RECORD_FIELDS`)."""
        return {k: self.read(offset) for k, offset in B.RECORD_OFFSETS.items()}

    def start(self) -> dict[str, int]:
        """Run the self-test again (CONTROL.START) and return the registers once done."""
        self.write(B.OFFSETS["CONTROL"], 1)
        self.sim.step(2)
        self.wait_done()
        return self.registers()


class BistSim(BistRegisters, StitchedSim):
    """The BIST top in Verilator: self-test after reset, then passthrough inference."""

    def __init__(self, design: StitchedDesign, run_dir: str | Path | None = None, build=None):
        self.spec = load_spec(design.dir)
        super().__init__(design, run_dir, build or build_bist(design))
        self.wait_done()

    def reset(self) -> None:
        super().reset()
        self.wait_done()


class StandinBistSim(BistRegisters):
    """The BIST top around a stand-in `finn_design` (`standin.write_standin`), for designs
    without stitched RTL: tests the controller only."""

    def __init__(self, rtl_dir: str | Path, standin: Path, run_dir: str | Path | None = None):
        from fpgaprint.compiler.bist.generate import TOP
        from fpgaprint.compiler.rtlsim.sim import VerilatedSim
        from fpgaprint.compiler.rtlsim.verilator import build_library

        rtl_dir = Path(rtl_dir)
        self.spec = load_spec(rtl_dir)
        build = build_library(TOP, [standin, *bist_sources(rtl_dir)],
                              label=f"on-chip self-test top {TOP} (stand-in accelerator)")
        self.sim = VerilatedSim(build.library, run_dir=Path(run_dir or rtl_dir),
                                name=f"{TOP} with a stand-in accelerator")
        self.sim.reset("ap_rst_n", True, RESET_CYCLES)
        self.wait_done()

    def close(self) -> None:
        self.sim.close()

    def __enter__(self) -> "StandinBistSim":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
