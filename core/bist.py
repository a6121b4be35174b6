"""The on-chip self-test (BIST), written once: its AXI-lite register map, the CRC-32 it
computes, its description in a package (`hw/rtl/bist/bist.json`) and the register record a
board reports.

The register map (`REGISTERS`, `STATUS_BITS`) is the one definition the RTL's localparams, the
firmware C header (`firmware/fpgaprint_bist.h`), the docs table and the PYNQ driver's MMIO
offsets are generated from.

CRC-32 is zlib's (IEEE 802.3, reflected, initial and final XOR 0xFFFFFFFF) over stream words,
each taken as its little-endian bytes (bits above a word's valid width zero). The controller
updates it one word per handshake; `crc32_words` is the same function on the host.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from fpgaprint.core.errors import InputError

MAGIC = 0x42495354  # "BIST"
MAP_VERSION = 1
NONE = 0xFFFFFFFF  # FIRST_FAIL when no vector failed (or, in signature mode, unknown)
MODES = ("exact", "signature")
FORMAT = "fpgaprint-bist/1"
BIST_DIR = "hw/rtl/bist"
BIST_JSON = f"{BIST_DIR}/bist.json"
MAX_VECTORS = 1 << 20
MAX_WORD_BITS = 1 << 16


@dataclass(frozen=True)
class Register:
    """One 32-bit register of the BIST's AXI-lite slave."""

    name: str
    offset: int
    access: str  # "ro" or "wo"
    doc: str


REGISTERS: tuple[Register, ...] = (
    Register("ID", 0x00, "ro", f"0x{MAGIC:08X} ('BIST')"),
    Register("VERSION", 0x04, "ro", f"register map version ({MAP_VERSION})"),
    Register("CONTROL", 0x08, "wo", "bit 0 START: writing 1 runs the self-test again"),
    Register("STATUS", 0x0C, "ro", "bit 0 DONE, 1 PASS, 2 BUSY, 3 ROM_OK, 4 SIGNATURE_MODE, "
             "5 TIMEOUT"),
    Register("VECTORS", 0x10, "ro", "vectors in the ROM"),
    Register("FAIL_COUNT", 0x14, "ro", "exact mode: vectors whose output differs; signature "
             "mode: 1 when the signature differs"),
    Register("FIRST_FAIL", 0x18, "ro", "index of the first failing vector (exact mode); "
             "0xFFFFFFFF: none, or unknown in signature mode"),
    Register("SIGNATURE", 0x1C, "ro", "CRC-32 of the output stream, vectors in ROM order"),
    Register("EXPECTED_SIGNATURE", 0x20, "ro", "CRC-32 of the golden output stream (ROM)"),
    Register("CYCLES", 0x24, "ro", "clock cycles from start to the last output word"),
    Register("ROM_CRC", 0x28, "ro", "CRC-32 of the ROM as it was read (inputs; XOR the "
             "expected-output ROM's in exact mode)"),
    Register("ROM_CRC_EXPECTED", 0x2C, "ro", "the ROM's stored CRC-32"),
)
STATUS_BITS = {"DONE": 0, "PASS": 1, "BUSY": 2, "ROM_OK": 3, "SIGNATURE_MODE": 4, "TIMEOUT": 5}
ADDR_BITS = 6  # byte address width of the AXI-lite slave
OFFSETS = {r.name: r.offset for r in REGISTERS}

# the record a board reports: every read-only register by its lower-case name (each a 32-bit
# unsigned value), here with its offset
RECORD_OFFSETS = {r.name.lower(): r.offset for r in REGISTERS if r.access == "ro"}
RECORD_FIELDS = tuple(RECORD_OFFSETS)


def crc32_words(words: np.ndarray, nbytes: int, bits: int | None = None) -> int:
    """CRC-32 of stream words: uint8 (n, nbytes), each word little-endian; bits at and above
    `bits` cleared first."""
    a = np.asarray(words)
    if a.dtype != np.uint8:
        raise TypeError(f"crc32_words: expected uint8 stream words, got {a.dtype}")
    a = a.reshape(-1, nbytes).copy()
    if bits is not None and bits < 8 * nbytes:
        mask = np.frombuffer(((1 << bits) - 1).to_bytes(nbytes, "little"), np.uint8)
        a &= mask
    return zlib.crc32(a.tobytes())


def decode_status(status: int) -> dict[str, bool]:
    return {name.lower(): bool(status >> bit & 1) for name, bit in STATUS_BITS.items()}


def record_values(rec: Mapping[str, Any],
                  bad: Callable[[str, Any], Exception]) -> dict[str, int]:
    """The RECORD_FIELDS of `rec`, each an integer in 0..2^32-1; the first that is not raises
    `bad(name, value)` (the caller's error)."""
    out: dict[str, int] = {}
    for key in RECORD_FIELDS:
        v = rec.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
            raise bad(key, v)
        out[key] = v
    return out


def check_record(rec: Any, where: str = "BIST registers") -> dict[str, int]:
    """A board's BIST register record: every read-only register as an integer in 0..2^32-1,
    ID and VERSION as this map defines them. InputError names the first bad field."""
    if not isinstance(rec, Mapping):
        raise InputError(f"{where}: expected an object of registers, got {type(rec).__name__}")
    out = record_values(rec, lambda key, v: InputError(
        f"{where}: register {key!r} is {str(v)[:40]!r}, expected an integer in 0..0xFFFFFFFF"))
    if out["id"] != MAGIC:
        raise InputError(f"{where}: ID is 0x{out['id']:08X}, not 0x{MAGIC:08X}")
    if out["version"] != MAP_VERSION:
        raise InputError(f"{where}: register map version {out['version']}, this host reads "
                         f"{MAP_VERSION}")
    return out


@dataclass(frozen=True)
class BistSpec:
    """`hw/rtl/bist/bist.json`: what the generated BIST holds and must report."""

    mode: str
    vectors: int
    in_words: int  # input words per vector
    in_width: int  # input TDATA bits
    out_words: int
    out_width: int
    out_bits: int  # valid bits of an output word
    signature: int  # CRC-32 of the golden output stream
    rom_crc: int
    stitched: bool  # generated around a stitched RTL accelerator
    predicted_cycles: int | None
    raw: dict

    @property
    def io(self):
        """The accelerator's streams (`core.streams.DriverIO`) the ROM words are packed for."""
        from fpgaprint.core.streams import DriverIO

        return DriverIO.from_io_shape_dict(self.raw.get("io") or {}, "bist.json: io")

    @classmethod
    def from_dict(cls, d: Any, where: str = BIST_JSON) -> "BistSpec":
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise InputError(f"{where}: not an {FORMAT} description")

        def num(key: str, lo: int, hi: int) -> int:
            v = d.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise InputError(f"{where}: {key!r} is {str(v)[:40]!r}, expected an integer in "
                                 f"{lo}..{hi}")
            return v

        def crc(key: str) -> int:
            v = d.get(key)
            try:
                if not isinstance(v, str) or len(v) != 10:
                    raise ValueError
                return int(v, 16)
            except ValueError:
                raise InputError(f"{where}: {key!r} is {str(v)[:40]!r}, expected 0x and 8 hex "
                                 "digits") from None

        mode = d.get("mode")
        if mode not in MODES:
            raise InputError(f"{where}: mode {str(mode)[:20]!r} is not one of {list(MODES)}")
        pred = d.get("predicted_cycles")
        if pred is not None:
            pred = num("predicted_cycles", 1, 2**40)
        out_width = num("out_width", 8, MAX_WORD_BITS)
        return cls(mode, num("vectors", 1, MAX_VECTORS), num("in_words", 1, 1 << 24),
                   num("in_width", 8, MAX_WORD_BITS), num("out_words", 1, 1 << 24), out_width,
                   num("out_bits", 1, out_width), crc("signature"), crc("rom_crc"),
                   bool(d.get("stitched")), pred, dict(d))


def load_spec(path: str | Path) -> BistSpec:
    """A `bist.json` file, bounded and validated."""
    import json

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no on-chip self-test description")
    if path.stat().st_size > 1 << 20:
        raise InputError(f"{path}: larger than 1 MiB")
    try:
        d = json.loads(path.read_bytes())
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    return BistSpec.from_dict(d, str(path))


def expected_record(spec: BistSpec, cycles: int = 0) -> dict[str, int]:
    """The registers of a healthy BIST after its run."""
    status = 1 << STATUS_BITS["DONE"] | 1 << STATUS_BITS["PASS"] | 1 << STATUS_BITS["ROM_OK"]
    if spec.mode == "signature":
        status |= 1 << STATUS_BITS["SIGNATURE_MODE"]
    return {"id": MAGIC, "version": MAP_VERSION, "status": status, "vectors": spec.vectors,
            "fail_count": 0, "first_fail": NONE, "signature": spec.signature,
            "expected_signature": spec.signature, "cycles": cycles, "rom_crc": spec.rom_crc,
            "rom_crc_expected": spec.rom_crc}


def emulate_raw(spec: BistSpec, raw: np.ndarray, golden_raw: np.ndarray,
                cycles: int = 0) -> dict[str, int]:
    """`emulate` for raw outputs (N, R) against the golden ones, packed as the accelerator
    streams them."""
    from fpgaprint.core.streams import pack_output

    io = spec.io
    nb = spec.out_width // 8
    return emulate(spec, pack_output(np.asarray(raw), io).reshape(-1, nb),
                   pack_output(np.asarray(golden_raw), io).reshape(-1, nb), cycles)


def emulate(spec: BistSpec, out_words: np.ndarray, golden_words: np.ndarray,
            cycles: int = 0) -> dict[str, int]:
    """The registers the controller reports for output words (uint8 (N*out_words, nbytes))
    against the golden ones: a behavioural model of the controller with an intact ROM (for
    boards that have no BIST of their own, e.g. the virtual board)."""
    nb = spec.out_width // 8
    n, w = spec.vectors, spec.out_words
    mask = np.frombuffer(((1 << spec.out_bits) - 1).to_bytes(nb, "little"), np.uint8)
    got = (np.asarray(out_words, np.uint8).reshape(n, w, nb) & mask)
    want = (np.asarray(golden_words, np.uint8).reshape(n, w, nb) & mask)
    bad = np.flatnonzero((got != want).reshape(n, -1).any(axis=1))
    rec = expected_record(spec, cycles)
    rec["signature"] = crc32_words(got.reshape(-1, nb), nb)
    sig_ok = rec["signature"] == spec.signature
    if spec.mode == "exact":
        rec["fail_count"] = int(len(bad))
        rec["first_fail"] = int(bad[0]) if len(bad) else NONE
    else:
        rec["fail_count"] = 0 if sig_ok else 1
    if rec["fail_count"] or not sig_ok:
        rec["status"] &= ~(1 << STATUS_BITS["PASS"])
    return rec
