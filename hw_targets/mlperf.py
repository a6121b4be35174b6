"""MLPerf Tiny DUT text mode: lets the MLPerf Tiny runner (mlcommons/tiny) drive the board.

Commands end with ``%``; every answer ends with ``m-ready``. Supported: ``name``, ``profile``,
``help``, ``timestamp``, ``db load N``, ``db HH…``, ``db print``, ``infer N [W=10]``,
``results``. The ``db`` buffer holds one input vector: its elements in the smallest integer
container of the accelerator's input datatype, little-endian. ``profile`` reports the model id
the runner looks its test script up by (``m-model-[ic01]``). ``m-results-[…]`` carries class
probabilities as the reference firmware's does: the softmax of the dequantised output (the
golden graph's host-side tail applied to the raw accelerator output), printed with as many
decimals (at least 6) as the runner's normalise-then-argmax needs to find the board's label.
`MlperfTinyClient` is the host side, sending at most 31 bytes per ``db`` command as the
reference runner does.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Callable

import numpy as np
import serial

from fpgaprint.core.errors import InputError, LinkError
from fpgaprint.hw_targets.agent import Backend
from fpgaprint.hw_targets.link import no_delay

if TYPE_CHECKING:
    from fpgaprint.core.package import Package

TERMINATOR = b"%"
READY = "m-ready"
MAX_COMMAND = 64 * 1024
MAX_BUFFER = 1 << 20
FIRMWARE = "fpgaprint MLPerf Tiny mode 2"
# the runner reads the id with `m-model-\[([^]]+)]` and looks it up as a tests.yaml key
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
MIN_DECIMALS, MAX_DECIMALS = 6, 17

Scores = Callable[[np.ndarray], np.ndarray]
log = logging.getLogger("fpgaprint.board")

# model ids of the runner's test scripts that drive a DUT differently from a classifier
UNDRIVEN = {
    "ad01": "the runner sends its input as a stream of overlapping segments",
    "sww01": "a streaming test that needs the runner's interface board",
}
WINDOW_S = (10.0, 30.0)  # a performance window: the runner's floor and its line timeout
RATE_MIN_N = 10  # `infer N` with at least this many inferences logs the board's rate


def model_id_warning(model_id: str) -> str | None:
    """Why the runner cannot drive a classifier under `model_id`, or None."""
    why = UNDRIVEN.get(model_id.lower())
    if why is None:
        return None
    return (f"MLPerf Tiny model id {model_id!r}: {why}; the runner cannot drive this board "
            "under it (use ic01 for a classifier)")


def window_count(rate: float) -> int:
    """Inferences that fill the middle of the performance window at `rate` inferences/s."""
    return max(1, int(rate * sum(WINDOW_S) / 2))


def check_model_id(model_id: str) -> str:
    """The model id `profile` reports; InputError unless it is 1-64 of [A-Za-z0-9_.+-]."""
    if not isinstance(model_id, str) or not MODEL_ID.fullmatch(model_id):
        raise InputError(f"MLPerf Tiny model id {model_id!r}: expected 1-64 characters from "
                         "[A-Za-z0-9_.+-] starting with a letter or digit, e.g. ic01 "
                         "(set it with --mlperf-model-id)")
    return model_id


def class_scores(package: "Package") -> Scores:
    """Dequantised class scores (B, C) from raw accelerator outputs (B, R): the host-side tail
    of the package's golden graph (e.g. the final scale and bias)."""
    from fpgaprint.hw_targets.backends.pynq import HostGraph

    return HostGraph(package.golden_path, package.io["raw_output"]["name"], tail_only=True).final


def softmax(scores: np.ndarray) -> np.ndarray:
    """Class probabilities of one row of scores (float64, sums to 1, keeps the argmax)."""
    z = np.asarray(scores, dtype=np.float64).reshape(-1)
    e = np.exp(z - z.max())
    return e / e.sum()


def runner_label(results: list[float]) -> int:
    """The label the runner takes from an m-results line: scores / sum(scores), then argmax."""
    total = sum(results)
    return int(np.argmax([r / total for r in results] if len(results) > 1 else results))


def results_line(probs: np.ndarray, label: int) -> str:
    """``m-results-[p0,p1,…]`` with the fewest decimals (6…17) that keep `label` the runner's
    label; a single output is printed as it is."""
    values = np.asarray(probs, dtype=np.float64).reshape(-1)
    for decimals in range(MIN_DECIMALS, MAX_DECIMALS + 1):
        text = [f"{v:.{decimals}f}" for v in values]
        if len(values) == 1 or runner_label([float(t) for t in text]) == label:
            break
    return "m-results-[" + ",".join(text) + "]"


def container_dtype(datatype: str) -> np.dtype:
    """Smallest little-endian integer container of a FINN datatype name (UINT8, INT4, …)."""
    name = datatype.upper()
    if name == "BIPOLAR":
        return np.dtype("<i1")
    if name == "BINARY":
        return np.dtype("<u1")
    m = re.fullmatch(r"(U?)INT(\d+)", name)
    if m is None:
        raise InputError(f"MLPerf Tiny mode needs an integer input datatype, got {datatype!r}")
    bits = int(m.group(2))
    for width in (8, 16, 32, 64):
        if bits <= width:
            return np.dtype(f"<{'u' if m.group(1) else 'i'}{width // 8}")
    raise InputError(f"input datatype {datatype!r} is wider than 64 bits")


def as_dtype(spec: np.dtype | str) -> np.dtype:
    """A numpy dtype from a dtype or a FINN datatype name."""
    if isinstance(spec, str) and re.fullmatch(r"(?i)(U?INT\d+|BIPOLAR|BINARY)", spec):
        return container_dtype(spec)
    return np.dtype(spec)


class MlperfTinyHandler:
    """Board side of the MLPerf Tiny text protocol (a hw_targets.link.StreamHandler)."""

    def __init__(self, backend: Backend, input_shape: tuple[int, ...],
                 input_dtype: np.dtype | str, *, model_id: str | None = None,
                 scores: Scores | None = None):
        """`input_shape` excludes the batch; `input_dtype` is a dtype or a FINN name;
        `model_id` defaults to the backend's model name; `scores` turns raw outputs into
        dequantised class scores (default: the raw outputs are the scores)."""
        self.backend = backend
        self.input_shape = tuple(int(d) for d in input_shape)
        self.dtype = as_dtype(input_dtype)
        self.input_bytes = int(np.prod(self.input_shape)) * self.dtype.itemsize
        self.reboot_pending = False
        self._identity = dict(backend.identity())
        self.model_id = check_model_id(str(self._identity.get("name", "")) if model_id is None
                                       else model_id)
        self.scores = scores
        self._text = bytearray()
        self._boot_ns = time.monotonic_ns()
        self._buf: bytearray | None = None
        self._size = 0
        self._last: str | None = None

    def banner(self) -> list[bytes]:
        return [b"m-init-done\r\nm-ready\r\n"]

    def reboot(self) -> list[bytes]:
        self.backend.reset()
        self.reboot_pending = False
        self._text.clear()
        self._buf, self._size, self._last = None, 0, None
        self._boot_ns = time.monotonic_ns()
        return self.banner()

    def feed(self, data: bytes) -> list[bytes]:
        out = []
        self._text += data
        while (end := self._text.find(TERMINATOR)) >= 0:
            command = bytes(self._text[:end]).decode("ascii", errors="replace")
            del self._text[: end + 1]
            out.append(self._answer(self.execute(command.strip(" \t\r\n\x00"))))
        if len(self._text) > MAX_COMMAND:
            self._text.clear()
            out.append(self._answer([f"e-[Command longer than {MAX_COMMAND} characters]"]))
        return out

    @staticmethod
    def _answer(lines: list[str]) -> bytes:
        return "".join(f"{line}\r\n" for line in [*lines, READY]).encode()

    def execute(self, command: str) -> list[str]:
        """Answer lines for one command (without the closing m-ready)."""
        words = command.split()
        if not words:
            return []
        verb, args = words[0], words[1:]
        if verb == "name":
            return [f"m-name-dut-[fpgaprint-{self._identity.get('board', 'board')}]"]
        if verb == "profile":
            return [f"m-profile-[{FIRMWARE}]", f"m-model-[{self.model_id}]"]
        if verb == "help":
            return [FIRMWARE, "name : device name", "profile : firmware and model",
                    "timestamp : m-lap-us-N", "db load N : expect N bytes",
                    "db HH[HH]* : append hex bytes", "db print : show the buffer",
                    "infer N [W=10] : N inferences after W warm-ups",
                    "results : class probabilities of the last inference"]
        if verb == "timestamp":
            return [self._lap()]
        if verb == "db":
            return self._db(args)
        if verb == "infer":
            return self._infer(args)
        if verb == "results":
            if self._last is None:
                return ["e-[No inference has run]"]
            return [self._last]
        return [f"e-[Unknown command '{verb}']"]

    def _lap(self) -> str:
        return f"m-lap-us-{(time.monotonic_ns() - self._boot_ns) // 1000}"

    def _results(self, raw: np.ndarray, label: int) -> str:
        """The m-results line of one raw output row: softmax of its class scores."""
        final = raw.astype(np.float64) if self.scores is None else self.scores(raw)
        final = np.asarray(final, dtype=np.float64).reshape(-1)
        return results_line(final if final.size == 1 else softmax(final), label)

    def _db(self, args: list[str]) -> list[str]:
        if not args:
            return ["e-[Command 'db' requires a subcommand]"]
        if args[0] == "load":
            if len(args) < 2 or not args[1].isdigit() or int(args[1]) == 0:
                return ["e-[Command 'db load' requires a number of bytes > 0]"]
            size = int(args[1])
            if size > MAX_BUFFER:
                return [f"e-[Buffer of {size} bytes exceeds the maximum of {MAX_BUFFER}]"]
            self._buf, self._size = bytearray(), size
            return [f"m-[Expecting {size} bytes]"]
        if args[0] == "print":
            if self._buf is None:
                return ["e-[Buffer not allocated]"]
            return [f"m-buffer-{self._buf[i:i + 8].hex('-')}" for i in range(0, len(self._buf), 8)]
        if self._buf is None:
            return ["e-[Buffer not allocated; send 'db load N' first]"]
        digits = "".join(args)
        if len(digits) % 2:
            return ["e-[Odd number of hex digits]"]
        try:
            data = bytes.fromhex(digits)
        except ValueError:
            return [f"e-[Invalid hex digits '{digits[:16]}']"]
        room = self._size - len(self._buf)
        if room <= 0:
            return []
        self._buf += data[:room]
        return ["m-load-done"] if len(self._buf) == self._size else []

    def _infer(self, args: list[str]) -> list[str]:
        try:
            n = int(args[0]) if args else 1
            warmups = int(args[1]) if len(args) > 1 else 10
        except ValueError:
            return [f"e-[Bad infer arguments '{' '.join(args)}']"]
        if n <= 0:
            return ["e-[Inference iterations must be >0]"]
        if warmups < 0:
            return ["e-[Inference warmup must be >=0]"]
        have = 0 if self._buf is None else len(self._buf)
        if self._buf is None or have != self.input_bytes:
            return [f"e-[Input buffer holds {have} bytes, the model takes {self.input_bytes}]"]
        x = np.frombuffer(bytes(self._buf), dtype=self.dtype).astype(np.int64)
        x = x.reshape((1, *self.input_shape))
        lines = [f"m-warmup-start-{warmups}"]
        try:
            for _ in range(warmups):
                self.backend.infer(x)
            lines += ["m-warmup-done", f"m-infer-start-{n}", self._lap()]
            t0 = time.perf_counter()
            for _ in range(n):
                raw, labels = self.backend.infer(x)
            took = time.perf_counter() - t0
            lines.append(self._lap())
            rate = n / max(took, 1e-9)
            if n >= RATE_MIN_N:  # a timed run (an accuracy run's `infer 1 0` says nothing)
                log.info("infer %d: %.3f s, %.1f inferences/s; a %g-%g s performance window: "
                         "infer %d", n, took, rate, *WINDOW_S, window_count(rate))
            self._last = self._results(np.asarray(raw).reshape(1, -1),
                                       int(np.asarray(labels).reshape(-1)[0]))
        except Exception as e:  # the board keeps serving
            return lines + [f"e-[Inference failed: {type(e).__name__}: {e}]"]
        return lines + ["m-infer-done", self._last]


class MlperfTinyClient:
    """Host side of the MLPerf Tiny text protocol, as the reference runner drives a DUT."""

    def __init__(self, url: str, timeout: float = 5.0, baud: int = 115200, max_bytes: int = 31):
        self.url, self.timeout, self.baud, self.max_bytes = url, timeout, baud, max_bytes
        self._ser: serial.SerialBase | None = None
        self.bytes_sent = self.bytes_received = 0

    def __enter__(self) -> "MlperfTinyClient":
        try:
            self._ser = serial.serial_for_url(self.url, baudrate=self.baud, timeout=self.timeout)
        except (serial.SerialException, ValueError, OSError) as e:
            raise LinkError(f"cannot open board port {self.url}: {e}") from None
        no_delay(self._ser)
        self._ser.reset_input_buffer()
        return self

    def __exit__(self, *exc) -> None:
        if self._ser is not None:
            self._ser.close()
            self._ser = None

    def command(self, command: str) -> list[str]:
        """Send one command; the answer lines before m-ready. LinkError on e-[…] or silence."""
        if self._ser is None:
            raise LinkError(f"board port {self.url} is not open")
        data = command.encode() + TERMINATOR
        self._ser.write(data)
        self.bytes_sent += len(data)
        answer = self._ser.read_until(f"{READY}\r\n".encode())
        self.bytes_received += len(answer)
        if not answer.endswith(f"{READY}\r\n".encode()):
            raise LinkError(f"board at {self.url} did not answer {command[:40]!r} within "
                            f"{self.timeout} s")
        lines = [line for line in answer.decode(errors="replace").splitlines()[:-1] if line]
        errors = [line for line in lines if line.startswith("e-[")]
        if errors:
            raise LinkError(f"board at {self.url} refused {command[:40]!r}: {errors[0]}")
        return lines

    def name(self) -> str:
        for line in self.command("name"):
            if m := re.fullmatch(r"m-name-dut-\[([^]]+)]", line):
                return m.group(1)
        raise LinkError(f"board at {self.url} did not report a name")

    def load(self, data: bytes) -> None:
        self.command(f"db load {len(data)}")
        for i in range(0, len(data), self.max_bytes):
            self.command(f"db {data[i:i + self.max_bytes].hex()}")

    def infer(self, n: int = 1, warmups: int = 0) -> dict:
        """{"results": [float], "lap_us": [int, int]} of `infer n warmups`."""
        lines = self.command(f"infer {n} {warmups}")
        laps = [int(line[len("m-lap-us-"):]) for line in lines if line.startswith("m-lap-us-")]
        for line in lines:
            if m := re.fullmatch(r"m-results-\[([^]]*)]", line):
                results = [float(v) for v in m.group(1).split(",") if v]
                return {"results": results, "lap_us": laps}
        raise LinkError(f"board at {self.url} gave no m-results line for infer")

    def classify(self, x: np.ndarray, dtype: np.dtype | str) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, C) and the labels the runner takes from them
        (normalise, then argmax) of every vector of x, one `db load` + `infer 1 0` each."""
        results = []
        for vector in np.asarray(x):
            self.load(np.ascontiguousarray(vector, dtype=as_dtype(dtype)).tobytes())
            results.append(self.infer(1, 0)["results"])
        labels = np.array([runner_label(r) for r in results], dtype=np.int64)
        return np.asarray(results, dtype=np.float64), labels
