"""The RTL simulation error."""

from __future__ import annotations

from fpgaprint.core.errors import FpgaprintError


class SimulationError(FpgaprintError):
    """Verilator missing, a design that does not build, or a simulation that fails or stalls.

    The message is one line naming the layer (or top module); `log` is the full build log
    when there is one.
    """

    exit_code = 2

    def __init__(self, message: str, log: str | None = None):
        super().__init__(message)
        self.log = log
