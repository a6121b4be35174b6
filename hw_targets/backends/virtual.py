"""The virtual board: executes the package's golden HW graph bit-exactly, with fault injection.

Its weights and thresholds are the golden model's memory images in their FINN datatypes; the
faults of a `FaultSpec` are applied to them once, at construction, and persist across resets
(as a tampered or defective bitstream does).
"""

from __future__ import annotations

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.golden import MemoryImage
from fpgaprint.core.package import Package
from fpgaprint.hw_targets.backends.base import Backend, check_inputs, register
from fpgaprint.hw_targets.faults import FaultSpec, inject, load_swap_model


@register("virtual")
class VirtualBackend(Backend):
    """A board that runs the golden model of a verified package."""

    fault_injection = True

    def __init__(self, package: Package, faults: FaultSpec | None = None,
                 serial: str | None = None):
        super().__init__(package, serial)
        self.faults = faults or FaultSpec()
        if self.faults.bist_rom_flips:
            raise InputError("--bist-rom-flip needs the rtlsim backend: the virtual board has "
                             "no on-chip self-test ROM (its BIST registers are emulated)")
        io = package.io
        base = (load_swap_model(self.faults.swap_model, io) if self.faults.swap_model
                else package.golden())
        if "host_ops" in io and not self.faults.swap_model:
            base.check_host_ops(io["host_ops"])  # the host applies only these after it
        self.golden, self._log = inject(base, self.faults)
        self.inferences = 0

    # -- Backend -----------------------------------------------------------------------
    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """raw int64 (B, R) and labels int64 (B,) = argmax of the model's final output."""
        x = check_inputs(x, self.input_shape, self.input_datatype)
        self.inferences += x.shape[0]
        if self.faults.replay:
            idx = np.arange(x.shape[0]) % self._vectors["golden_raw"].shape[0]
            return (self._vectors["golden_raw"][idx].copy(),
                    self._vectors["golden_labels"][idx].copy())
        raw, _, labels = self.golden.run(x)
        return raw.reshape(x.shape[0], -1), labels

    def reset(self) -> None:
        """A reboot clears the run-time counters; memory faults stay (they are in the image)."""
        self.inferences = 0

    # -- inspection ---------------------------------------------------------------------
    def fault_log(self) -> list[dict]:
        """Ground truth of every applied memory fault (see hw_targets.faults.inject)."""
        return [dict(e) for e in self._log]

    def memories(self) -> dict[str, MemoryImage]:
        """The board's weight and threshold memories as they are, faults included."""
        return self.golden.memories()
