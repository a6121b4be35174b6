"""fpgaprint: a deployment compiler for FPGA neural-network accelerators with a fingerprint
verification harness.

Layers, bottom up: ``fpgaprint.core`` (errors, input grid, memory words, golden model, package
reader, fingerprint set format, boards, the self-test contract); ``compiler``, ``fingerprint``,
``hw_targets`` and ``harness`` above it; ``fpgaprint.cli`` on top.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("fpgaprint")
except _metadata.PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
