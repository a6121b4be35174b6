"""The virtual board: executes the package's golden HW graph bit-exactly, with fault injection.

Its weights and thresholds are the golden model's memory images in their FINN datatypes; the
faults of a `FaultSpec` are applied to them once, at construction, and persist across resets
(as a tampered or defective bitstream does).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from typing import Any

import numpy as np

from fpgaprint.compiler.errors import InputError
from fpgaprint.compiler.golden import GoldenModel, MemoryImage
from fpgaprint.compiler.package import Package
from fpgaprint.hw_targets.faults import FaultSpec, inject, load_swap_model


def default_serial() -> str:
    """A serial number stable for this process: derived from host name and process id."""
    digest = hashlib.sha256(f"{socket.gethostname()}:{os.getpid()}".encode()).hexdigest()
    return f"VB-{digest[:10].upper()}"


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
    if a.ndim == 0 or a.shape[0] == 0:
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


def selftest_result(raw: np.ndarray, labels: np.ndarray, vectors: dict[str, np.ndarray],
                    policy: dict[str, Any], seconds: float) -> dict:
    """Self-test summary: exact check (raw == golden_raw) and fingerprint check (share of
    labels == expected_labels reaching the threshold), as far as the policy applies them."""
    exact = int(np.sum(np.any(raw != vectors["golden_raw"], axis=1)))
    matches = int(np.sum(labels == vectors["expected_labels"]))
    count = int(vectors["inputs"].shape[0])
    checks = list(policy.get("checks", ["exact", "fingerprint"]))
    passed = ("exact" not in checks or exact == 0) and (
        "fingerprint" not in checks or matches / count >= float(policy["fingerprint_threshold"]))
    return {"passed": bool(passed), "count": count, "exact_mismatches": exact,
            "label_matches": matches, "checks": checks, "seconds": round(seconds, 6)}


class VirtualBackend:
    """A board that runs the golden model of a verified package (Backend protocol)."""

    backend = "virtual"

    def __init__(self, package: Package, faults: FaultSpec | None = None,
                 serial: str | None = None):
        self.package = package
        self.faults = faults or FaultSpec()
        self.serial = serial or default_serial()
        io = package.io
        self.input_shape = tuple(io["input"]["shape"][1:])
        self.input_datatype = io["input"]["datatype"]
        self.raw_size = int(np.prod(io["raw_output"]["shape"][1:]))
        self._vectors = package.vectors()
        self._policy = package.policy()
        base = (load_swap_model(self.faults.swap_model, io) if self.faults.swap_model
                else GoldenModel(package.golden_path, raw_output=io["raw_output"]["name"]))
        self.golden, self._log = inject(base, self.faults)
        self.inferences = 0

    # -- Backend protocol ---------------------------------------------------------------
    def identity(self) -> dict:
        return {"board": self.package.board, "serial": self.serial,
                "package_id": self.package.package_id,
                "bitstream_sha256": self.package.bitstream_sha256,
                "backend": self.backend, "name": self.package.name}

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

    def selftest(self) -> dict:
        """Run the embedded vectors; compare raw with golden_raw and labels with
        expected_labels, as the package's policy says."""
        t0 = time.perf_counter()
        raw, labels = self.infer(self._vectors["inputs"])
        return selftest_result(raw, labels, self._vectors, self._policy,
                               time.perf_counter() - t0)

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

    def close(self) -> None:
        self.package.close()
