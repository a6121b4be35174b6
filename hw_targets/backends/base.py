"""The board backend contract: a base class every backend derives from, and its registry.

A backend runs a verified package: `infer` computes raw outputs and labels for a batch of
inputs on the accelerator's input grid; `selftest` runs the package's embedded vectors and
decides with the one pass rule (`fpgaprint.core.selftest.evaluate`). Backends register by
name (`@register("virtual")`), as labgrid drivers do, and are looked up by `backend_class`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import socket
import time
import uuid
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.package import Package
from fpgaprint.core.selftest import Policy, evaluate

# name -> module that registers it; imported on first use so a backend's dependencies
# (FINN's execution, Verilator, the PYNQ driver) load only when it is chosen.
BACKEND_MODULES = {
    "virtual": "fpgaprint.hw_targets.backends.virtual",
    "pynq": "fpgaprint.hw_targets.backends.pynq",
    "rtlsim": "fpgaprint.hw_targets.backends.rtlsim",
}
_REGISTRY: dict[str, type["Backend"]] = {}


def register(name: str):
    """Class decorator: make a Backend subclass available as `name`."""
    def deco(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def backend_names() -> tuple[str, ...]:
    return tuple(BACKEND_MODULES)


def backend_class(name: str) -> type["Backend"]:
    """The registered backend called `name`; InputError listing the valid ones."""
    if name not in BACKEND_MODULES:
        raise InputError(f"unknown backend {name!r}; valid backends: "
                         f"{', '.join(BACKEND_MODULES)}")
    if name not in _REGISTRY:
        importlib.import_module(BACKEND_MODULES[name])
    return _REGISTRY[name]


def default_serial() -> str:
    """A serial number stable for this process: derived from host name and process id."""
    digest = hashlib.sha256(f"{socket.gethostname()}:{os.getpid()}".encode()).hexdigest()
    return f"VB-{digest[:10].upper()}"


def machine_serial() -> str | None:
    """This machine's own serial where it has one: its network interface's MAC address
    (`MAC-001122334455`), which differs per board, unlike the host name and boot that every
    board of one SD image shares; None when no interface gave one."""
    mac = uuid.getnode()
    if mac >> 40 & 1:  # the multicast bit: a random number, no interface's address
        return None
    return f"MAC-{mac:012X}"


def input_range(datatype: str) -> tuple[int, int]:
    """Smallest and largest value of a FINN integer datatype."""
    from qonnx.core.datatype import DataType

    try:
        dt = DataType[datatype]
    except KeyError:
        raise InputError(f"unknown input datatype {datatype!r}") from None
    return int(dt.min()), int(dt.max())


def check_inputs(x: Any, shape: tuple[int, ...], datatype: str) -> np.ndarray:
    """Inputs as int64 (B, *shape); rows may also come flattened. Raises InputError naming
    what does not fit."""
    a = np.asarray(x)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.rint(a)):
            raise InputError(f"inputs must be integers in {datatype}, got non-integer values")
    elif a.dtype.kind not in "iu":
        raise InputError(f"inputs must be integers in {datatype}, got dtype {a.dtype}")
    per = int(np.prod(shape))
    if a.ndim == 0 or a.shape[0] == 0 or a.size == 0:
        raise InputError(f"inputs: expected a batch (B, {', '.join(map(str, shape))}) with "
                         f"B >= 1, got shape {a.shape}")
    if tuple(a.shape[1:]) != tuple(shape) and int(np.prod(a.shape[1:])) != per:
        raise InputError(f"inputs: shape {a.shape} does not fit the accelerator input "
                         f"(B, {', '.join(map(str, shape))})")
    lo, hi = input_range(datatype)
    if int(a.min()) < lo or int(a.max()) > hi:
        raise InputError(f"inputs: values {int(a.min())}..{int(a.max())} outside {datatype} "
                         f"({lo}..{hi})")
    return a.astype(np.int64).reshape((a.shape[0], *shape))


class Backend(ABC):
    """A board running one verified package."""

    name: ClassVar[str] = "?"
    fault_injection: ClassVar[bool] = False  # accepts a FaultSpec (`faults=`)
    bist_source: ClassVar[str] = "emulated"  # where bist_registers come from

    def __init__(self, package: Package, serial: str | None = None):
        self.package = package
        self.serial = serial or default_serial()
        io = package.io
        self.input_shape = tuple(io["input"]["shape"][1:])
        self.input_datatype = io["input"]["datatype"]
        self.raw_size = int(np.prod(io["raw_output"]["shape"][1:]))
        self._vectors = package.vectors()
        self._policy = Policy.from_dict(package.policy())
        self._bist = package.bist()
        self._golden = None  # the golden model, loaded for the score check

    def identity(self) -> dict:
        """What HELLO reports: board, serial, package and bitstream hashes, backend."""
        return {"board": self.package.board, "serial": self.serial,
                "package_id": self.package.package_id,
                "bitstream_sha256": self.package.bitstream_sha256,
                "backend": self.name, "name": self.package.name}

    @abstractmethod
    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs int64 (B, R) and labels int64 (B,) for inputs (B, *input_shape)."""

    def warm_up(self) -> None:
        """Run the first embedded vector, untimed: one-time costs (loading FINN+'s ops,
        starting a simulation) are not compute time a host should allow for every request."""
        self.infer(self._vectors["inputs"][:1])

    def selftest(self) -> dict:
        """Run the embedded vectors and decide with the package's policy."""
        t0 = time.perf_counter()
        raw, labels = self.infer(self._vectors["inputs"])
        regs = self.bist_registers(raw) if self._bist is not None else None
        ev = evaluate(raw, labels, self._vectors, self._policy, onchip=regs, bist=self._bist,
                      scores=self.deployed_scores(raw) if "score" in self._policy.checks
                      else None)
        exact = ev.check("exact")
        out = {"passed": ev.passed, "count": int(len(labels)),
               "exact_mismatches": 0 if exact is None else exact.failed,
               "label_matches": int(np.sum(labels == self._vectors["expected_labels"])),
               "checks": list(self._policy.checks),
               "seconds": round(time.perf_counter() - t0, 6)}
        if self._bist is not None:
            out.update(bist=regs, bist_source=self.bist_source)
        return out

    def deployed_scores(self, raw: np.ndarray) -> np.ndarray:
        """Class scores (B, C) of raw outputs (B, R) through the golden graph's host tail, as
        the labels are computed (the score check)."""
        if self._golden is None:
            self._golden = self.package.golden()
        return self._golden.deployed_scores(raw)

    def bist_registers(self, raw: np.ndarray) -> dict[str, int] | None:
        """The on-chip self-test's registers (`core.bist.RECORD_FIELDS`), None when the
        board has none. This default is a behavioural model of the controller over the raw
        outputs of the package's vectors (`bist_source` "emulated"): boards that execute the
        BIST RTL (rtlsim) or read it from the FPGA (pynq) override it."""
        from fpgaprint.core.bist import emulate_raw

        return emulate_raw(self._bist, raw, self._vectors["golden_raw"],
                           self._bist.predicted_cycles or 0)

    def reset(self) -> None:
        """A reboot: clears run-time state; what is in the image stays."""

    def close(self) -> None:
        self.package.close()

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
