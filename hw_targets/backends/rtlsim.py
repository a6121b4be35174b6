"""The rtlsim board: the package's stitched RTL accelerator (`hw/rtl/`) simulated in Verilator.

Raw outputs are what the RTL streams out; labels come from the host-side tail of the golden
graph (as on a PYNQ board, `HostGraph`). Memory faults (`--flip`, `--flip-bits`, `--stuck-at`)
act on the RTL's weight and threshold memory images: the faulty values, in the datatype of the
RTL layer's memory word, are written back with FINN+'s own writer of that image into a private
copy of `mem/`, so a flipped bit is a flipped bit of the hardware description. The images are
read when the simulation starts and persist across resets (they are the bitstream's BRAM
contents). A package without stitched RTL is refused (exit 2).

When the package carries the on-chip self-test (`hw/rtl/bist/`), the board simulates the BIST
top around the accelerator: the power-on self-test is the BIST's own run after reset, its
registers are read over AXI-lite, and inference passes through it. `--bist-rom-flip WORD:BIT`
corrupts the BIST's input ROM image.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.package import Package
from fpgaprint.core.words import MemoryImage
from fpgaprint.hw_targets.backends.base import Backend, check_inputs, register
from fpgaprint.hw_targets.faults import FaultSpec, apply_memory_faults

DESIGN = "hw/rtl/design.json"


@register("rtlsim")
class RtlsimBackend(Backend):
    """A board that runs the package's stitched RTL in Verilator."""

    fault_injection = True

    def __init__(self, package: Package, faults: FaultSpec | None = None,
                 serial: str | None = None):
        from fpgaprint.compiler.rtlsim.design import StitchedDesign, memory_images
        from fpgaprint.hw_targets.backends.pynq import HostGraph

        super().__init__(package, serial)
        if DESIGN not in package.manifest.get("files", {}):
            raise InputError(f"{package.dir}: the package has no stitched RTL ({DESIGN}): its "
                             "accelerator has HLS layers or was built without RTL; serve it "
                             "with --backend virtual")
        self.faults = faults or FaultSpec()
        if self.faults.swap_model or self.faults.replay:
            raise InputError("--swap-model and --replay need the virtual backend; the rtlsim "
                             "board runs the package's own RTL")
        self.design = StitchedDesign(package.path("hw/rtl"))
        io = package.io
        if int(np.prod(self.design.io.ishape_normal[1:])) != int(np.prod(self.input_shape)) or \
                int(np.prod(self.design.io.oshape_normal[1:])) != self.raw_size:
            raise InputError(f"{package.dir}: the stitched RTL's streams "
                             f"({self.design.io.ishape_normal} -> {self.design.io.oshape_normal})"
                             f" do not fit the package's io")
        golden = self._golden = package.golden()  # also the score check's host tail
        self.host = HostGraph(package.golden_path, io["raw_output"]["name"])
        self._mems = memory_images(self.design, golden)
        changed, self._log = apply_memory_faults(self._mems, self.faults)
        self._tmp = None
        run_dir = self.design.dir
        self.image_changes: list[dict] = []
        has_bist = self._bist is not None
        if self.faults.bist_rom_flips and not has_bist:
            raise InputError(f"{package.dir}: --bist-rom-flip: the package has no on-chip "
                             "self-test (hw/rtl/bist/)")
        if changed or self.faults.bist_rom_flips:
            import shutil

            from fpgaprint.compiler.rtlsim.design import write_memories
            from fpgaprint.hw_targets.faults import flip_rom_image

            self._tmp = tempfile.TemporaryDirectory(prefix="fpgaprint-rtlsim-")
            run_dir = Path(self._tmp.name)
            self.image_changes = write_memories(self.design, run_dir, changed)
            if has_bist:
                shutil.copytree(self.design.dir / "bist", run_dir / "bist")
            for word, bit in self.faults.bist_rom_flips:
                flip_rom_image(run_dir / "bist" / "bist_in.mem", word, bit, self._bist.in_width)
                self._log.append({"kind": "bist_rom_flip", "memory": "bist/bist_in.mem",
                                  "index": word, "bit": bit})
            for key, values in changed.items():
                m = self._mems[key]
                self._mems[key] = MemoryImage(m.layer, m.tensor, m.kind, values, m.datatype,
                                              m.bits, m.signed)
            for e in self._log:
                e["image_bits"] = [c for c in self.image_changes if c["memory"] == e["memory"]]
        self.run_dir = Path(run_dir)  # where the simulation reads its memory images
        if has_bist:
            from fpgaprint.compiler.bist.sim import BistSim

            self.sim = BistSim(self.design, run_dir)
        else:
            self.sim = self.design.simulator(run_dir)
        self.inferences = 0
        self.cycles = 0

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs streamed out of the RTL, labels from the golden graph's tail."""
        x = check_inputs(x, self.input_shape, self.input_datatype)
        raw, cycles = self.sim.run(self.host.head(x))
        self.inferences += x.shape[0]
        self.cycles += cycles
        return raw, self.host.labels(raw)

    bist_source = "rtl"

    def bist_registers(self, raw: np.ndarray) -> dict[str, int] | None:
        """The simulated BIST's registers after its power-on run, read over AXI-lite."""
        return self.sim.registers()

    def reset(self) -> None:
        """A reboot resets the design (the BIST runs again); the memory images (and their
        faults) stay."""
        self.sim.reset()
        self.inferences = 0

    def close(self) -> None:
        try:
            self.sim.close()
            if self._tmp is not None:
                self._tmp.cleanup()
        finally:
            super().close()

    def fault_log(self) -> list[dict]:
        """Ground truth of every applied memory fault; `image_bits`: the image bits of its
        memory that differ from the package ({file, line, bit})."""
        return [dict(e) for e in self._log]

    def memories(self) -> dict[str, MemoryImage]:
        """The RTL's weight and threshold memories as they are, faults included."""
        return dict(self._mems)
