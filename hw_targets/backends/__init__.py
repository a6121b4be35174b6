"""Board backends: `virtual` (golden model, fault injection) and `pynq` (FINN+ driver on a
PYNQ board). `open_backend` verifies the package before any backend sees it."""

from __future__ import annotations

from pathlib import Path

from fpgaprint.compiler.errors import InputError
from fpgaprint.hw_targets.faults import FaultSpec

BACKENDS = ("virtual", "pynq")


def open_backend(
    package_dir: str | Path,
    backend: str = "virtual",
    faults: FaultSpec | None = None,
    serial: str | None = None,
    trusted_key: str | Path | None = None,
    allow_unsigned: bool = False,
):
    """A Backend for the verified package (directory or .tar.gz); refuses a package whose
    signature or hashes do not verify."""
    from fpgaprint.compiler.package import verify_package

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if backend != "virtual" and faults is not None and faults.active:
        raise InputError(f"fault injection needs the virtual backend, not {backend!r}")
    package = verify_package(package_dir, trusted_key=trusted_key, allow_unsigned=allow_unsigned)
    try:
        if backend == "virtual":
            from fpgaprint.hw_targets.backends.virtual import VirtualBackend

            return VirtualBackend(package, faults, serial)
        from fpgaprint.hw_targets.backends.pynq import PynqBackend

        return PynqBackend(package, serial)
    except BaseException:
        package.close()
        raise
