"""Fault injection for the board backends: bit upsets and stuck-at bits in the accelerator's
weight/threshold memories, a swapped model, and a board that replays stored answers.

Memory faults act on memory images (`apply_memory_faults`): the golden model's
(`GoldenModel.memories()`) on the virtual board, the stitched RTL's on the rtlsim board, word by
word in each memory's own datatype (two's complement for signed types, BIPOLAR as one bit with
0 = -1). Every applied fault is logged with its ground truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.golden import GoldenModel, resolve_memory
from fpgaprint.core.words import MemoryImage, flip, random_flips, stick

FLIP_FORMAT = "LAYER:INDEX:BIT"
STUCK_FORMAT = "LAYER:INDEX:BIT:0|1"


@dataclass
class FaultSpec:
    """What is wrong with a virtual board.

    flip_bits: that many distinct bits flipped, uniformly over all bits of all words of all
    weight and threshold memories (drawn from `seed`). flips: chosen (memory, index, bit)
    flips. stuck_at: (memory, index, bit, value) bits that always read `value`. swap_model: a
    package directory or golden .onnx whose model answers instead. replay: the board answers
    every request with the embedded self-test's stored golden answers (vector i of a batch gets
    stored answer i mod N) instead of computing.
    """

    flip_bits: int = 0
    seed: int = 0
    flips: list[tuple[str, int, int]] = field(default_factory=list)
    stuck_at: list[tuple[str, int, int, int]] = field(default_factory=list)
    swap_model: str | None = None
    replay: bool = False
    bist_rom_flips: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.flip_bits, bool) or not isinstance(self.flip_bits, int) \
                or self.flip_bits < 0:
            raise InputError(f"flip_bits must be an integer >= 0, got {self.flip_bits!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"fault seed must be an integer >= 0, got {self.seed!r}")
        self.flips = [_check_flip(f) for f in self.flips]
        self.stuck_at = [_check_stuck(s) for s in self.stuck_at]
        self.bist_rom_flips = [_check_rom_flip(f) for f in self.bist_rom_flips]
        if self.swap_model is not None:
            self.swap_model = str(self.swap_model)
        if self.replay and (self.memory_faults or self.swap_model):
            raise InputError("a replaying board computes nothing: replay cannot be combined "
                             "with memory faults or a swapped model")

    @classmethod
    def from_strings(
        cls,
        flip_bits: int = 0,
        seed: int = 0,
        flips: Iterable[str] = (),
        stuck_at: Iterable[str] = (),
        swap_model: str | Path | None = None,
        replay: bool = False,
        bist_rom_flips: Iterable[str] = (),
    ) -> "FaultSpec":
        """A spec from command-line strings (`LAYER:INDEX:BIT`, `LAYER:INDEX:BIT:0|1`,
        `WORD:BIT` for the BIST ROM)."""
        return cls(flip_bits, seed, [parse_flip(f) for f in flips],
                   [parse_stuck_at(s) for s in stuck_at],
                   None if swap_model is None else str(swap_model), replay,
                   [parse_rom_flip(f) for f in bist_rom_flips])

    @property
    def memory_faults(self) -> bool:
        return bool(self.flip_bits or self.flips or self.stuck_at)

    @property
    def active(self) -> bool:
        """Whether the board deviates from the package at all."""
        return (self.memory_faults or self.swap_model is not None or self.replay
                or bool(self.bist_rom_flips))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flips"] = [list(f) for f in self.flips]
        d["stuck_at"] = [list(s) for s in self.stuck_at]
        d["bist_rom_flips"] = [list(f) for f in self.bist_rom_flips]
        return d

    def describe(self) -> str:
        """One line for logs and banners."""
        if not self.active:
            return "no faults"
        parts = []
        if self.flip_bits:
            parts.append(f"{self.flip_bits} random bit flip(s) (seed {self.seed})")
        parts += [f"flip {m}:{i}:{b}" for m, i, b in self.flips]
        parts += [f"stuck-at-{v} {m}:{i}:{b}" for m, i, b, v in self.stuck_at]
        if self.swap_model:
            parts.append(f"model swapped for {self.swap_model}")
        if self.replay:
            parts.append("replays stored self-test answers")
        parts += [f"BIST ROM flip {w}:{b}" for w, b in self.bist_rom_flips]
        return ", ".join(parts)


# ---------------------------------------------------------------- parsing


def _int_field(part: str, what: str, where: str) -> int:
    try:
        value = int(part)
    except ValueError:
        raise InputError(f"fault {where!r}: {what} {part!r} is not an integer") from None
    if value < 0:
        raise InputError(f"fault {where!r}: {what} must be >= 0, got {value}")
    return value


def _split(text: str, n: int, fmt: str) -> list[str]:
    if not isinstance(text, str):
        raise InputError(f"fault {text!r}: expected a string {fmt}")
    parts = text.strip().rsplit(":", n - 1)
    if len(parts) != n or not parts[0]:
        raise InputError(f"fault {text!r}: expected {fmt} (e.g. MVAU_2/weights:5:3)")
    return parts


def parse_flip(text: str) -> tuple[str, int, int]:
    """`LAYER:INDEX:BIT` -> (layer, index, bit); LAYER is a memory key or a layer name."""
    layer, index, bit = _split(text, 3, FLIP_FORMAT)
    return layer, _int_field(index, "index", text), _int_field(bit, "bit", text)


def parse_stuck_at(text: str) -> tuple[str, int, int, int]:
    """`LAYER:INDEX:BIT:0|1` -> (layer, index, bit, value)."""
    layer, index, bit, value = _split(text, 4, STUCK_FORMAT)
    if value.strip() not in ("0", "1"):
        raise InputError(f"fault {text!r}: stuck-at value must be 0 or 1, got {value!r}")
    return (layer, _int_field(index, "index", text), _int_field(bit, "bit", text),
            int(value))


ROM_FLIP_FORMAT = "WORD:BIT"


def parse_rom_flip(text: str) -> tuple[int, int]:
    """`WORD:BIT` -> (input ROM word, bit) of the on-chip self-test's ROM."""
    word, bit = _split(text, 2, ROM_FLIP_FORMAT)
    return _int_field(word, "word", text), _int_field(bit, "bit", text)


def _check_rom_flip(f: Any) -> tuple[int, int]:
    if not isinstance(f, (list, tuple)) or len(f) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in f):
        raise InputError(f"BIST ROM flip {f!r}: expected (word, bit), integers >= 0")
    return int(f[0]), int(f[1])


def flip_rom_image(path: Path, word: int, bit: int, width: int) -> None:
    """Flip `bit` of line `word` of a $readmemh image (hex words of `width` bits)."""
    lines = Path(path).read_text().split()
    if not 0 <= word < len(lines):
        raise InputError(f"BIST ROM flip {word}:{bit}: the ROM has words 0..{len(lines) - 1}")
    if not 0 <= bit < width:
        raise InputError(f"BIST ROM flip {word}:{bit}: a ROM word has bits 0..{width - 1}")
    lines[word] = f"{int(lines[word], 16) ^ (1 << bit):0{len(lines[word])}x}"
    Path(path).write_text("\n".join(lines) + "\n")


def _check_flip(f: Any) -> tuple[str, int, int]:
    if isinstance(f, str):
        return parse_flip(f)
    try:
        layer, index, bit = f
    except (TypeError, ValueError):
        raise InputError(f"flip {f!r}: expected (layer, index, bit)") from None
    return _check_fields(f, layer, index, bit)


def _check_stuck(s: Any) -> tuple[str, int, int, int]:
    if isinstance(s, str):
        return parse_stuck_at(s)
    try:
        layer, index, bit, value = s
    except (TypeError, ValueError):
        raise InputError(f"stuck-at {s!r}: expected (layer, index, bit, 0|1)") from None
    if value not in (0, 1) or isinstance(value, bool):
        raise InputError(f"stuck-at {s!r}: value must be 0 or 1, got {value!r}")
    return (*_check_fields(s, layer, index, bit), int(value))


def _check_fields(where: Any, layer: Any, index: Any, bit: Any) -> tuple[str, int, int]:
    if not isinstance(layer, str) or not layer:
        raise InputError(f"fault {where!r}: layer must be a non-empty string")
    for what, v in (("index", index), ("bit", bit)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"fault {where!r}: {what} must be an integer >= 0, got {v!r}")
    return layer, int(index), int(bit)


# ---------------------------------------------------------------- injection


def _locate(mems: dict[str, MemoryImage], layer: str, index: int, bit: int) -> str:
    key = resolve_memory(mems, layer)
    img = mems[key]
    bits = img.format.bits
    if index >= img.values.size:
        raise InputError(f"fault {layer}:{index}:{bit}: index out of range for {key} "
                         f"({img.values.size} words)")
    if bit >= bits:
        raise InputError(f"fault {layer}:{index}:{bit}: bit out of range for {key} "
                         f"({img.datatype}, {bits}-bit words)")
    return key


def inject(golden: GoldenModel, spec: FaultSpec | None) -> tuple[GoldenModel, list[dict]]:
    """A copy of `golden` with the spec's memory faults applied, and the ground-truth log
    (see `apply_memory_faults`)."""
    if spec is None or not spec.memory_faults:
        return golden, []
    changed, log = apply_memory_faults(golden.memories(), spec)
    return golden.with_memories(changed), log


def apply_memory_faults(mems: dict[str, MemoryImage], spec: FaultSpec | None
                        ) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The spec's memory faults applied to memory images: the changed memories' new values
    (their original shapes) and the ground-truth log.

    Order: chosen flips, then random flips, then stuck-at bits (a stuck bit reads its value
    whatever was written). Log entries: kind, memory, layer, tensor, datatype, index, bit,
    old, new (and value for stuck-at; `effective` says whether the word changed).
    """
    if spec is None or not spec.memory_faults:
        return {}, []
    values = {k: m.values.copy().reshape(-1) for k, m in mems.items()}
    log: list[dict] = []

    def record(kind: str, key: str, index: int, bit: int, change, extra=None) -> None:
        img = mems[key]
        old = int(values[key][index])
        new = change(old, bit, img.datatype)
        values[key][index] = new
        log.append({"kind": kind, "memory": key, "layer": img.layer, "tensor": img.tensor,
                    "datatype": img.datatype, "index": index, "bit": bit, "old": old,
                    "new": new, "effective": new != old, **(extra or {})})

    for layer, index, bit in spec.flips:
        key = _locate(mems, layer, index, bit)
        record("flip", key, index, bit, flip)
    for key, index, bit in random_flips(mems, spec.flip_bits, spec.seed):
        record("random_flip", key, index, bit, flip, {"seed": spec.seed})
    for layer, index, bit, value in spec.stuck_at:
        key = _locate(mems, layer, index, bit)
        record("stuck_at", key, index, bit,
               lambda v, b, dt, level=value: stick(v, b, level, dt), {"value": value})
    changed = {k: v.reshape(mems[k].values.shape) for k, v in values.items()
               if any(e["memory"] == k for e in log)}
    return changed, log


def load_swap_model(path: str | Path, io: dict[str, Any]) -> GoldenModel:
    """The golden model of another package directory (or a golden .onnx) that must fit the
    package's input and raw output shapes."""
    p = Path(path)
    if p.is_dir():
        p = p / "model" / "golden.onnx"
        if not p.is_file():
            raise InputError(f"swap model {path}: no model/golden.onnx in that directory")
    elif not p.is_file():
        raise InputError(f"swap model {path}: no such package directory or .onnx file")
    other = GoldenModel(p)
    want_in = tuple(io["input"]["shape"][1:])
    want_raw = int(np.prod(io["raw_output"]["shape"][1:]))
    if tuple(other.input_shape[1:]) != want_in:
        raise InputError(f"swap model {path}: input shape {other.input_shape} does not fit the "
                         f"package's {tuple(io['input']['shape'])}")
    if int(np.prod(other.raw_shape[1:])) != want_raw:
        raise InputError(f"swap model {path}: raw output shape {other.raw_shape} does not fit "
                         f"the package's {tuple(io['raw_output']['shape'])}")
    return other
