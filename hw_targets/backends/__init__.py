"""Board backends: `virtual` (golden model, fault injection), `rtlsim` (the package's
stitched RTL in Verilator, fault injection) and `pynq` (FINN+ driver on a PYNQ board),
registered by name in `base`. `open_backend` verifies the package before any
backend sees it."""

from __future__ import annotations

from pathlib import Path

from fpgaprint.core.errors import InputError
from fpgaprint.hw_targets.backends.base import Backend, backend_class, backend_names
from fpgaprint.hw_targets.faults import FaultSpec

BACKENDS = backend_names()


def open_backend(
    package_dir: str | Path,
    backend: str = "virtual",
    faults: FaultSpec | None = None,
    serial: str | None = None,
    trusted_key: str | Path | list | tuple | None = None,
    allow_unsigned: bool = False,
    allow_unpinned: bool = False,
) -> Backend:
    """A Backend for the verified package (directory or .tar.gz); refuses a package whose
    signature or hashes do not verify, or whose signer is not pinned (unless allowed)."""
    from fpgaprint.core.package import verify_package

    cls = backend_class(backend)
    active = faults is not None and faults.active
    if active and not cls.fault_injection:
        able = [n for n in BACKENDS if backend_class(n).fault_injection]
        raise InputError(f"fault injection needs a backend that supports it "
                         f"({', '.join(able)}), not {backend!r}")
    package = verify_package(package_dir, trusted_key=trusted_key, allow_unsigned=allow_unsigned,
                             allow_unpinned=allow_unpinned)
    try:
        return cls(package, serial=serial, **({"faults": faults} if active else {}))
    except BaseException as e:
        package.__exit__(type(e), e, None)  # its error names the package, not the copy
        raise
