"""The fingerprint set: intrinsic examples on the input grid with their labels and provenance.

A set whose calibration keeps the score check (`core.selftest`) also carries the source
model's outputs on its vectors (`source_outputs`, float32 (N, C)) and the check's threshold
(`score_threshold`); both or neither.

Stored as one `.npz` (format `fpgaprint-fingerprint/1`), written to a temporary file and
renamed so a set is never half-written.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fpgaprint.core.atomic import atomic_file
from fpgaprint.core.errors import InputError
from fpgaprint.core.grid import InputGrid
from fpgaprint.core.selftest import check_threshold

FORMAT = "fpgaprint-fingerprint/1"
DEFAULT_THRESHOLD = 0.8  # uncalibrated; a perfect match is confident above it from N = 17
REQUIRED = ("format", "inputs", "inputs_int", "labels", "margins", "algorithm", "params", "seed",
            "source_sha256", "input_shape", "grid_bits", "threshold", "calibration")
MAX_CLASSES = 65_536  # columns of `source_outputs`
MAX_OUTPUT = 1e30  # magnitude bound of a source output


def check_score_arrays(outputs, threshold, n: int, where: str
                       ) -> tuple[np.ndarray | None, float | None]:
    """Validate a score check's source outputs (finite floats, shape (n, C), 2 <= C) and
    threshold (a number in [-1, 1]), both or neither; InputError naming `where`."""
    if outputs is None and threshold is None:
        return None, None
    if outputs is None or threshold is None:
        raise InputError(f"{where}: the score check needs both source_outputs and "
                         "score_threshold")
    a = np.asarray(outputs)
    if a.dtype.kind != "f":
        raise InputError(f"{where}: source_outputs must be floats, got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[0] != n or not 2 <= a.shape[1] <= MAX_CLASSES:
        raise InputError(f"{where}: source_outputs must have shape ({n}, classes), got "
                         f"{a.shape}")
    if not np.isfinite(a).all() or (a.size and float(np.abs(a).max()) > MAX_OUTPUT):
        raise InputError(f"{where}: source_outputs holds values that are not finite numbers "
                         f"of magnitude <= {MAX_OUTPUT:g}")
    t = np.asarray(threshold)
    if t.shape != () or t.dtype.kind not in "fiu" or not -1.0 <= float(t) <= 1.0:
        raise InputError(f"{where}: score_threshold must be a number in [-1, 1], got "
                         f"{threshold!r}")
    return a.astype(np.float32), float(t)


@dataclass
class FingerprintSet:
    """Examples (float, on the grid, and as grid integers), labels and how they were made."""

    inputs_int: np.ndarray  # int64 (N, *input_shape), grid integers
    labels: np.ndarray  # int64 (N,), the source model's labels
    margins: np.ndarray  # float32 (N,), target logit minus best other on the source
    algorithm: str
    params: dict
    seed: int
    source_sha256: str
    input_shape: tuple[int, ...]
    grid: InputGrid = field(default_factory=InputGrid)  # an int means InputGrid(bits)
    threshold: float = DEFAULT_THRESHOLD
    calibration: dict = field(default_factory=lambda: {"method": "default, not calibrated"})
    source_outputs: np.ndarray | None = None  # float32 (N, C): the score check's reference
    score_threshold: float | None = None  # the score check's threshold (with source_outputs)

    def __post_init__(self) -> None:
        if not isinstance(self.grid, InputGrid):
            self.grid = InputGrid(int(self.grid))
        self.inputs_int = np.asarray(self.inputs_int, dtype=np.int64)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.margins = np.asarray(self.margins, dtype=np.float32).reshape(-1)
        self.input_shape = tuple(int(s) for s in self.input_shape)
        n = len(self.labels)
        if self.inputs_int.shape != (n, *self.input_shape) or len(self.margins) != n:
            raise InputError(
                f"inconsistent fingerprint set: inputs {self.inputs_int.shape}, "
                f"{n} labels, {len(self.margins)} margins, input shape {self.input_shape}"
            )
        self.source_outputs, self.score_threshold = check_score_arrays(
            self.source_outputs, self.score_threshold, n, "fingerprint set")

    @property
    def has_score(self) -> bool:
        """Whether the set carries the score check."""
        return self.source_outputs is not None

    @property
    def grid_bits(self) -> int:
        return self.grid.bits

    @property
    def inputs(self) -> np.ndarray:
        """Float inputs, exactly on the grid."""
        return self.grid.to_float(self.inputs_int)

    def __len__(self) -> int:
        return len(self.labels)

    def sha256(self) -> str:
        """Hash of what a check depends on: integer inputs, labels, threshold, source hash."""
        h = hashlib.sha256()
        h.update(self.inputs_int.tobytes())
        h.update(self.labels.tobytes())
        grid = "" if self.grid.same_integers(InputGrid(self.grid.bits)) else \
            json.dumps(self.grid.to_dict(), sort_keys=True)
        h.update(f"{self.threshold:.6f}{self.source_sha256}{self.grid_bits}{grid}".encode())
        if self.has_score:
            h.update(np.ascontiguousarray(self.source_outputs, "<f4").tobytes())
            h.update(f"score{self.score_threshold:.6f}".encode())
        return h.hexdigest()

    def with_threshold(self, threshold: float, calibration: dict) -> "FingerprintSet":
        return replace(self, threshold=float(threshold), calibration=dict(calibration))

    def with_score(self, source_outputs: np.ndarray | None, threshold: float | None
                   ) -> "FingerprintSet":
        """A copy carrying the score check (None, None: without it)."""
        return replace(self, source_outputs=source_outputs, score_threshold=threshold)

    def subset(self, idx: np.ndarray) -> "FingerprintSet":
        return replace(self, inputs_int=self.inputs_int[idx], labels=self.labels[idx],
                       margins=self.margins[idx],
                       source_outputs=None if self.source_outputs is None
                       else self.source_outputs[idx])

    def save(self, path: str | Path) -> Path:
        """Write the set atomically (temporary file in the same folder, then rename)."""
        arrays = {
            "format": np.array(FORMAT),
            "inputs": self.inputs,
            "inputs_int": self.inputs_int,
            "labels": self.labels,
            "margins": self.margins,
            "algorithm": np.array(self.algorithm),
            "params": np.array(json.dumps(self.params, sort_keys=True)),
            "seed": np.array(int(self.seed)),
            "source_sha256": np.array(self.source_sha256),
            "input_shape": np.array(self.input_shape, dtype=np.int64),
            "grid_bits": np.array(int(self.grid_bits)),
            "grid": np.array(json.dumps(self.grid.to_dict(), sort_keys=True)),
            "threshold": np.array(float(self.threshold)),
            "calibration": np.array(json.dumps(self.calibration, sort_keys=True)),
        }
        if self.has_score:
            arrays["source_outputs"] = self.source_outputs
            arrays["score_threshold"] = np.array(float(self.score_threshold))
        with atomic_file(path) as f:
            np.savez(f, **arrays)
        return Path(path)


def _rows(x: np.ndarray) -> list[bytes]:
    """Each input of `x` as the bytes of its int64 values: inputs compared as integers."""
    x = np.ascontiguousarray(x, dtype="<i8")
    return [r.tobytes() for r in x.reshape(len(x), math.prod(x.shape[1:]))]


def shared_rows(held: np.ndarray, probe: np.ndarray) -> list[tuple[int, int]]:
    """(i, j) for every input i of `probe` that equals an input j of `held` (the last such
    one), both compared as int64 values: the inputs two sets have in common."""
    index = {r: j for j, r in enumerate(_rows(held))}
    return [(i, index[r]) for i, r in enumerate(_rows(probe)) if r in index]


def first_repeat(inputs: np.ndarray) -> tuple[int, int] | None:
    """(i, j), i < j, for the first input j that repeats an earlier input i; None when all
    inputs differ."""
    seen: dict[bytes, int] = {}
    for j, r in enumerate(_rows(inputs)):
        if r in seen:
            return seen[r], j
        seen[r] = j
    return None


def load_set(path: str | Path) -> FingerprintSet:
    """Read a fingerprint set; anything else (missing, foreign .npz, corrupt) is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such fingerprint set")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{path}: not a fingerprint set (.npz): {e}") from e
    if str(data.get("format", "")) != FORMAT:
        raise InputError(
            f"{path}: not a fingerprint set (format {str(data.get('format', 'missing'))!r}, "
            f"expected {FORMAT!r}; arrays: {', '.join(sorted(data)) or 'none'})"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InputError(f"{path}: fingerprint set lacks {', '.join(missing)}")
    for key, ndim in (("inputs_int", None), ("labels", 1)):
        a = data[key]
        if a.dtype.kind not in "iu" or (ndim is not None and a.ndim != ndim):
            raise InputError(f"{path}: {key} must be {'a 1-D array of ' if ndim else ''}"
                             f"integers, got {a.dtype} of shape {a.shape}")
    try:
        fs = FingerprintSet(
            inputs_int=data["inputs_int"],
            labels=data["labels"],
            margins=data["margins"],
            algorithm=str(data["algorithm"]),
            params=json.loads(str(data["params"])),
            seed=int(data["seed"]),
            source_sha256=str(data["source_sha256"]),
            input_shape=tuple(int(s) for s in data["input_shape"]),
            grid=(InputGrid.from_dict(json.loads(str(data["grid"])), f"{path}: grid")
                  if "grid" in data else InputGrid(int(data["grid_bits"]))),
            threshold=float(data["threshold"]),
            calibration=json.loads(str(data["calibration"])),
        )
        fs.source_outputs, fs.score_threshold = check_score_arrays(
            data.get("source_outputs"), data.get("score_threshold"), len(fs), str(path))
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: malformed fingerprint set: {e}") from e
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    check_threshold(fs.threshold, str(path))
    if not fs.grid.contains(fs.inputs_int):
        raise InputError(f"{path}: inputs outside the {fs.grid.datatype} grid")
    repeat = first_repeat(fs.inputs_int)
    if repeat is not None:
        raise InputError(f"{path}: input {repeat[1]} repeats input {repeat[0]}: a set's inputs "
                         "must differ (its match rate counts them as independent vectors)")
    return fs
