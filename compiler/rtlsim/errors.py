"""RTL simulation errors."""

from __future__ import annotations

import re

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


class DesignAssertionError(RtlMismatchError):
    """An assertion, `$error` or `$fatal` of the generated hardware fired in simulation: the
    compiled design does not do what its source specifies (exit 1). Names the layer whose
    RTL raised it, the cycle and the design's own message."""


# a layer's name as FINN+ gives it (MVAU_rtl_0, StreamingFIFO_rtl_3, ...) in an instance path
_LAYER = re.compile(r"\b((?:[A-Z][A-Za-z0-9]*_)+(?:rtl|hls)_\d+)\b")
# what Verilator's runtime prints for $error / $fatal and failed immediate assertions
_DESIGN_SAID = re.compile(r"%Error|%Fatal|Assertion failed")


def runtime_error(design: str, when: str, message: str, cycle: int | None) -> SimulationError \
        | DesignAssertionError:
    """The error for a simulation the design itself stopped: DesignAssertionError when its
    RTL said why (naming the layer from the instance path, else `design`), else
    SimulationError."""
    if not _DESIGN_SAID.search(message):
        return SimulationError(f"{design}: runtime error during {when}: {message}")
    m = _LAYER.search(message)
    layer = m.group(1) if m else design
    at = f" at cycle {cycle}" if cycle is not None else ""
    said = re.sub(r"^\[\d+\]\s*%(Error|Fatal):\s*", "", message.strip())
    where = f" of {design}" if layer != design else ""
    return DesignAssertionError(
        f"RTL layer {layer}{where} stopped the simulation{at}: {said} (the generated hardware "
        "does not do what its source specifies)")
