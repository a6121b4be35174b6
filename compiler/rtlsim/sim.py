"""A built Verilator model, driven through the C harness with ctypes.

Signals are set and read by name as integers or little-endian bytes of any width. AXI
streams are fed and collected by the harness in C++ (`VerilatedSim.stream`), many cycles
per call, with a cycle budget and an output liveness watchdog, so a stalled design raises
SimulationError instead of hanging.
"""

from __future__ import annotations

import ctypes
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from fpgaprint.compiler.rtlsim.errors import SimulationError, runtime_error

_c_u64 = ctypes.c_uint64
_c_size = ctypes.c_size_t
_c_ptr = ctypes.c_void_p
_c_buf = ctypes.c_char_p

_SIGNATURES = {
    "fp_create": ([], _c_ptr),
    "fp_destroy": ([_c_ptr], None),
    "fp_error": ([_c_ptr], ctypes.c_char_p),
    "fp_finished": ([_c_ptr], ctypes.c_int),
    "fp_num_ports": ([_c_ptr], ctypes.c_int),
    "fp_port_name": ([_c_ptr, ctypes.c_int], ctypes.c_char_p),
    "fp_port_width": ([_c_ptr, ctypes.c_int], ctypes.c_int),
    "fp_port_dir": ([_c_ptr, ctypes.c_int], ctypes.c_int),
    "fp_cycles": ([_c_ptr], _c_u64),
    "fp_set": ([_c_ptr, ctypes.c_int, _c_buf, _c_size], None),
    "fp_get": ([_c_ptr, ctypes.c_int, _c_ptr, _c_size], None),
    "fp_eval": ([_c_ptr], ctypes.c_int),
    "fp_schedule": ([_c_ptr, ctypes.c_int, _c_buf, _c_size], None),
    "fp_step": ([_c_ptr, _c_u64], ctypes.c_int),
    "fp_add_input": ([_c_ptr, ctypes.c_int, ctypes.c_int, ctypes.c_int, _c_buf, _c_u64, _c_size],
                     ctypes.c_int),
    "fp_add_output": ([_c_ptr, ctypes.c_int, ctypes.c_int, ctypes.c_int, _c_u64, _c_size],
                      ctypes.c_int),
    "fp_output_count": ([_c_ptr, ctypes.c_int], _c_u64),
    "fp_input_count": ([_c_ptr, ctypes.c_int], _c_u64),
    "fp_read_output": ([_c_ptr, ctypes.c_int, _c_ptr], None),
    "fp_clear_streams": ([_c_ptr], None),
    "fp_timed_out": ([_c_ptr], ctypes.c_int),
    "fp_run": ([_c_ptr, _c_u64, _c_u64], ctypes.c_int),
    "fp_set_stalls": ([_c_ptr, _c_u64, ctypes.c_uint32, ctypes.c_uint32], None),
}

_libs: dict[str, ctypes.CDLL] = {}

# Cycles per harness call in `stream`; between calls Python can be interrupted.
CHUNK_CYCLES = 1 << 20


def _load(library: Path) -> ctypes.CDLL:
    key = str(Path(library).resolve())
    lib = _libs.get(key)
    if lib is None:
        lib = ctypes.CDLL(key, mode=os.RTLD_NOW | os.RTLD_LOCAL)
        for name, (args, res) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes = args
            fn.restype = res
        _libs[key] = lib
    return lib


@contextmanager
def _cwd(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@dataclass(frozen=True)
class SignalInfo:
    """A port of the simulated design."""

    index: int
    name: str
    width: int
    direction: str

    @property
    def nbytes(self) -> int:
        return (self.width + 7) // 8


@dataclass(frozen=True)
class Stalls:
    """Seeded random stalls of a stream run: each cycle an input withholds its next value
    with chance `input`, an output drops tready with chance `output` (AXI-Stream allows any
    such pattern; valid is never withdrawn mid-handshake)."""

    seed: int = 0
    input: float = 0.25
    output: float = 0.25

    def __post_init__(self) -> None:
        for p in (self.input, self.output):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"stall probability {p} is not in [0, 1)")

    @staticmethod
    def q16(p: float) -> int:
        return round(p * 65536)


@dataclass
class StreamResult:
    """Values collected per output stream and the cycles the run took."""

    outputs: dict[str, list[int]]
    cycles: int


class VerilatedSim:
    """One instance of a design built by `verilator.build_library`.

    `run_dir` is the working directory during start-up, where `$readmemh` finds its files;
    `name` names the design (the layer) in errors.
    """

    def __init__(self, library: str | Path, *, run_dir: str | Path | None = None,
                 name: str | None = None):
        self.library = Path(library)
        self.name = name or self.library.parent.name
        self._lib = _load(self.library)
        with _cwd(Path(run_dir) if run_dir is not None else None):
            self._h = self._lib.fp_create()
        if not self._h:
            raise SimulationError(f"{self.name}: could not create the simulation model")
        self.signals: dict[str, SignalInfo] = {}
        dirs = ("in", "out", "inout")
        for i in range(self._lib.fp_num_ports(self._h)):
            nm = self._lib.fp_port_name(self._h, i).decode()
            self.signals[nm] = SignalInfo(i, nm, self._lib.fp_port_width(self._h, i),
                                          dirs[self._lib.fp_port_dir(self._h, i)])
        self._check("start-up")
        self._needs_reset = False  # a stream was aborted mid-transfer

    # -- life cycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Run final blocks and free the model (idempotent)."""
        if self._h:
            self._lib.fp_destroy(self._h)
            self._h = None

    def is_open(self) -> bool:
        return bool(self._h)

    def __enter__(self) -> "VerilatedSim":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- signals ----------------------------------------------------------------------------
    def signal(self, name: str) -> SignalInfo:
        """The port `name`; SimulationError naming the design when it has none."""
        try:
            return self.signals[name]
        except KeyError:
            raise SimulationError(f"{self.name}: no port {name!r} "
                                  f"(ports: {', '.join(self.signals)})") from None

    def has(self, name: str) -> bool:
        return name in self.signals

    def _encode(self, s: SignalInfo, value: int | bytes) -> bytes:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        return (int(value) & ((1 << (8 * s.nbytes)) - 1)).to_bytes(s.nbytes, "little")

    def set(self, name: str, value: int | bytes) -> None:
        """Drive input `name` now (an int, or little-endian bytes); `eval` settles it."""
        s = self.signal(name)
        data = self._encode(s, value)
        self._lib.fp_set(self._live(), s.index, data, len(data))

    def set_after_edge(self, name: str, value: int | bytes) -> None:
        """Drive input `name` right after the next rising clock edge (inside the next step)."""
        s = self.signal(name)
        data = self._encode(s, value)
        self._lib.fp_schedule(self._live(), s.index, data, len(data))

    def get_bytes(self, name: str) -> bytes:
        """Current value of `name` as little-endian bytes."""
        s = self.signal(name)
        buf = ctypes.create_string_buffer(s.nbytes)
        self._lib.fp_get(self._live(), s.index, buf, s.nbytes)
        return buf.raw

    def get(self, name: str) -> int:
        """Current value of `name` as an unsigned int."""
        return int.from_bytes(self.get_bytes(name), "little")

    def eval(self) -> None:
        """Settle combinational logic after `set`."""
        if self._lib.fp_eval(self._live()) != 0:
            self._check("eval")

    @property
    def finished(self) -> bool:
        """True once the design has called $finish."""
        return bool(self._lib.fp_finished(self._live()))

    @property
    def cycles(self) -> int:
        """Clock cycles simulated so far."""
        return int(self._lib.fp_cycles(self._live()))

    def step(self, n: int = 1) -> None:
        """Advance `n` clock cycles (ap_clk, and ap_clk2x when the design has it)."""
        rc = self._lib.fp_step(self._live(), int(n))
        if rc == -2:
            raise SimulationError(f"{self.name}: no ap_clk port to clock")
        if rc != 0:
            self._check("step")

    def reset(self, rst: str = "ap_rst_n", active_low: bool = True, cycles: int = 16) -> None:
        """Assert reset after the next rising edge, hold it `cycles` cycles, release it.

        Takes cycles + 2 cycles, with the edges placed as FINN's xsim testbench places
        them (which matters for designs with a double-rate clock).
        """
        self.set_after_edge(rst, 0 if active_low else 1)
        self.step(cycles)
        self.set_after_edge(rst, 1 if active_low else 0)
        self.step(2)
        self._needs_reset = False

    # -- streams ----------------------------------------------------------------------------
    def stream_ports(self, stream: str) -> tuple[SignalInfo, SignalInfo, SignalInfo]:
        """(tdata, tvalid, tready) of the AXI stream `stream` (`_tdata` or `_TDATA` names)."""
        found = []
        for suffix in ("tdata", "tvalid", "tready"):
            for nm in (f"{stream}_{suffix}", f"{stream}_{suffix.upper()}"):
                if nm in self.signals:
                    found.append(self.signals[nm])
                    break
            else:
                raise SimulationError(f"{self.name}: no AXI stream {stream!r} "
                                      f"(missing {stream}_{suffix.upper()})")
        return found[0], found[1], found[2]

    def stream(self, inputs: Mapping[str, Sequence[int]], outputs: Mapping[str, int], *,
               liveness: int = 10000, max_cycles: int | None = None,
               timeout_message: str | None = None, as_bytes: bool = False,
               stalls: Stalls | None = None) -> StreamResult:
        """Feed `inputs` (stream -> values) and collect `outputs` (stream -> count).

        Values are ints, or a uint8 array (n, bytes per word) of little-endian words; with
        `as_bytes` the outputs come back as such arrays. `stalls`: seeded random gaps on the
        inputs' tvalid and the outputs' tready (default: full rate).

        Runs until every input is consumed and every output collected. Raises
        SimulationError naming the design and the stream when an output sees no value for
        `liveness` cycles (or nothing moves at all once outputs are complete), when
        `max_cycles` pass, or on a runtime error in the design. After such an error the
        streams' handshakes are dropped and the design must be `reset` before streaming again.
        """
        h = self._live()
        lib = self._lib
        if self._needs_reset:
            raise SimulationError(f"{self.name}: a previous stream was aborted; reset first")
        lib.fp_clear_streams(h)
        order: list[tuple[str, SignalInfo]] = []
        driven: list[SignalInfo] = []
        in_names = list(inputs)
        for nm, values in inputs.items():
            data, valid, ready = self.stream_ports(nm)
            nb = data.nbytes
            buf = _pack(values, nb)
            lib.fp_add_input(h, data.index, valid.index, ready.index, buf, len(values), nb)
            driven.append(valid)
        for nm, count in outputs.items():
            data, valid, ready = self.stream_ports(nm)
            lib.fp_add_output(h, data.index, valid.index, ready.index, int(count), data.nbytes)
            order.append((nm, data))
            driven.append(ready)
        start = self.cycles
        done = False
        if stalls is not None:
            lib.fp_set_stalls(h, int(stalls.seed) & (2**64 - 1), stalls.q16(stalls.input),
                              stalls.q16(stalls.output))
        try:
            while True:
                budget = CHUNK_CYCLES
                if max_cycles is not None:
                    budget = min(budget, max_cycles - (self.cycles - start))
                    if budget <= 0:
                        raise SimulationError(
                            f"{self.name}: RTL simulation did not finish within {max_cycles} "
                            f"cycles ({self._progress(order, outputs)})")
                rc = lib.fp_run(h, budget, max(1, int(liveness)))
                if rc == 0:
                    break
                if rc == 1:
                    continue
                if rc == 2:
                    idx = lib.fp_timed_out(h)
                    stalled = order[idx][0] if idx < len(order) else \
                        in_names[idx - len(order)] if idx >= 0 else "?"
                    what = timeout_message or \
                        f"RTL simulation timed out after {int(liveness)} cycles without progress."
                    raise SimulationError(f"{self.name}: {what} Stalled stream: {stalled} "
                                          f"({self._progress(order, outputs)}).")
                if rc == 3:
                    raise SimulationError(f"{self.name}: the design called $finish after "
                                          f"{self.cycles - start} cycles "
                                          f"({self._progress(order, outputs)})")
                if rc == -2:
                    raise SimulationError(f"{self.name}: no ap_clk port to clock")
                self._check("simulation")
                raise SimulationError(f"{self.name}: simulation failed (code {rc})")
            result: dict[str, list[int]] = {}
            for i, (nm, data) in enumerate(order):
                n = int(lib.fp_output_count(h, i))
                buf = ctypes.create_string_buffer(max(1, n * data.nbytes))
                lib.fp_read_output(h, i, buf)
                raw = buf.raw[:n * data.nbytes]
                result[nm] = (np.frombuffer(raw, np.uint8).reshape(n, data.nbytes) if as_bytes
                              else _unpack(raw, data.nbytes))
            done = True
            return StreamResult(result, self.cycles - start)
        finally:
            lib.fp_clear_streams(h)
            if stalls is not None and self._h:
                lib.fp_set_stalls(self._h, 0, 0, 0)
            if not done and self._h:
                self._needs_reset = True
                for sig in driven:
                    self._lib.fp_set(self._h, sig.index, b"\0", 1)

    # -- internals --------------------------------------------------------------------------
    def _progress(self, order: list[tuple[str, SignalInfo]], outputs: Mapping[str, int]) -> str:
        parts = [f"{nm}: {int(self._lib.fp_output_count(self._h, i))} of {int(outputs[nm])} values"
                 for i, (nm, _) in enumerate(order)]
        return ", ".join(parts) if parts else "no outputs"

    def _live(self) -> int:
        if not self._h:
            raise SimulationError(f"{self.name}: simulation is closed")
        return self._h

    def _check(self, when: str) -> None:
        msg = self._lib.fp_error(self._h).decode(errors="replace") if self._h else ""
        if msg:
            raise runtime_error(self.name, when, msg, int(self._lib.fp_cycles(self._h)))


def _pack(values: Sequence[int], nb: int) -> bytes:
    """Values as `nb` little-endian bytes each (wider values are truncated); a uint8 array
    (n, nb) is taken as it is."""
    if isinstance(values, np.ndarray) and values.dtype == np.uint8 and values.ndim == 2:
        if values.shape[1] != nb:
            raise SimulationError(f"stream words of {values.shape[1]} bytes for a port of "
                                  f"{nb} bytes")
        return np.ascontiguousarray(values).tobytes()
    if nb <= 8:
        try:
            words = np.asarray(values, dtype=np.uint64).astype("<u8", copy=False)
        except (OverflowError, TypeError, ValueError):
            words = None
        if words is not None and words.ndim == 1:
            return words.view(np.uint8).reshape(-1, 8)[:, :nb].tobytes()
    mask = (1 << (8 * nb)) - 1
    return b"".join((int(v) & mask).to_bytes(nb, "little") for v in values)


def _unpack(raw: bytes, nb: int) -> list[int]:
    """Little-endian words of `nb` bytes as Python ints."""
    n = len(raw) // nb if nb else 0
    if nb <= 8:
        b = np.zeros((n, 8), dtype=np.uint8)
        b[:, :nb] = np.frombuffer(raw, dtype=np.uint8).reshape(n, nb)
        return b.view("<u8").ravel().tolist()
    return [int.from_bytes(raw[k * nb:(k + 1) * nb], "little") for k in range(n)]


def load_ports(library: str | Path) -> list[dict]:
    """Ports recorded next to a built library (ports.json), without loading it."""
    return json.loads((Path(library).parent / "ports.json").read_text())
