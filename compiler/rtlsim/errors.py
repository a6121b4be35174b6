"""RTL simulation errors."""

from __future__ import annotations

from fpgaprint.core.errors import EquivalenceError, FpgaprintError


class SimulationError(FpgaprintError):
    """Verilator missing, a design that does not build, or a simulation that fails or stalls.

    The message is one line naming the layer (or top module); `log` is the full build log
    when there is one.
    """

    exit_code = 2

    def __init__(self, message: str, log: str | None = None):
        super().__init__(message)
        self.log = log

    def __reduce__(self):  # keeps `log` across processes
        return type(self), (str(self), self.log)


class RtlMismatchError(EquivalenceError):
    """The RTL computes something else than the golden model: names the layer (or the stitched
    design), the vector and the first differing element, or the memory image and its line."""

    exit_code = 1


class BistError(EquivalenceError):
    """The on-chip self-test of the healthy design does not PASS with the expected signature
    in the predicted cycles (exit 1)."""
