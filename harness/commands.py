"""The host's commands to a board: HELLO, INFO, SELFTEST, RESET, INFER, CHALLENGE.

`BoardClient` opens a `BoardPort`, runs requests through a `Pipeline` and checks every value
the board sends before using it: identity fields are printable strings of bounded length,
limits are integers in range, timings are finite and clamped to sane maxima. A board that
breaks these rules raises LinkError naming the field (no verdict, exit 3). It never returns
part of a batch.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from typing import Any, Callable

import numpy as np

from fpgaprint.core.errors import InputError, LinkError, VerdictFail
from fpgaprint.harness.pipeline import Batcher, Job, LinkHealth, Pipeline
from fpgaprint.harness.port import BoardPort
from fpgaprint.hw_targets import protocol as P

DEFAULT_MAX_REQUEST = 16 * 1024
READ_SLICE = 48  # bytes of a long answer per READ frame on a lossy line
WHOLE_ATTEMPTS = 3  # a long answer is fetched whole this often before READ slices take over
MAX_READ_TOTAL = 64 * 1024  # longest answer fetched by READ
MAX_VECTOR_S = 1.0  # largest compute time per vector a board may claim (clamped)
MAX_WINDOW = 64
MIN_BOARD_PAYLOAD = 256
# What the host accepts of a board's identity; the results database's columns for these
# fields take their lengths from here (harness/db.py), so whatever passes the check is stored.
MAX_TEXT = 256  # characters of each IDENTITY_TEXT field
HASH_HEX = 64  # hex digits of a SHA-256: package_id, bitstream_sha256
HEX64 = re.compile(rf"[0-9a-f]{{{HASH_HEX}}}")
IDENTITY_TEXT = ("board", "serial", "backend", "name")
BIST_SOURCES = ("rtl", "mmio", "emulated")  # where a board's BIST registers come from
SELFTEST_FIELDS = ("passed", "count", "exact_mismatches", "label_matches", "checks", "seconds")


class BindingError(VerdictFail):
    """A CHALLENGE answer is not bound to the nonce and inputs that were sent."""


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class BoardClient:
    """Talk to a board agent at a pyserial URL (device path, socket://, rfc2217://, loop://).

    `timeout` is the longest silence allowed for an answer beyond its line and compute time
    (the pipeline shortens it to what the line shows); a request is sent at least `retries`
    + 1 times before giving up, more on a line that answers but damages frames. `baud` sets
    the port speed and the line-time allowance (8N1: baud/10 bytes/s). `deadline` (seconds
    from open) bounds everything the client does.
    """

    def __init__(self, url: str, timeout: float = 2.0, retries: int = 3, baud: int = 115200, *,
                 window: int = 4, max_request: int = DEFAULT_MAX_REQUEST,
                 chunk_bytes: int | None = None, long_timeout: float = 120.0,
                 deadline: float | None = None):
        for name, value, ok in (
            ("timeout", timeout, isinstance(timeout, (int, float)) and math.isfinite(timeout)
             and timeout > 0),
            ("retries", retries, _int(retries) and 0 <= retries <= 100),
            ("baud", baud, _int(baud) and baud > 0),
            ("window", window, _int(window) and 1 <= window <= MAX_WINDOW),
            ("long_timeout", long_timeout, math.isfinite(long_timeout) and long_timeout > 0),
            ("deadline", deadline, deadline is None or (math.isfinite(deadline)
                                                        and deadline > 0)),
        ):
            if not ok:
                raise InputError(f"bad client setting {name}={value!r}")
        self.url, self.timeout, self.retries, self.baud = url, timeout, retries, baud
        self.window = window
        self.max_request = max_request
        self.chunk_bytes = chunk_bytes or int(min(max(baud / 10 * 0.1, 1024), max_request))
        self.long_timeout = long_timeout
        self.deadline_s = deadline
        self.identity: dict | None = None
        self.board_max_payload = P.MAX_PAYLOAD
        self.stats = {"frames_sent": 0, "frames_received": 0, "bad_frames": 0, "retries": 0,
                      "timeouts": 0, "board_errors": 0, "reboots_seen": 0, "stale": 0,
                      "bytes_sent": 0, "bytes_received": 0, "slice_reads": 0}
        write_timeout = timeout + 2 * (P.max_encoded_size(max_request) + 1) * 10.0 / baud
        self.port = BoardPort(url, baud, write_timeout, self.stats)
        self.health = LinkHealth(timeout, retries)
        self.pipe = Pipeline(self.port, self.health, self.stats)
        self.pipe.window = window

    # -- connection -----------------------------------------------------------------------

    def __enter__(self) -> "BoardClient":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if self.deadline_s is not None:
            self.pipe.deadline = time.monotonic() + self.deadline_s
        self.port.open()
        self.port.write(P.DELIMITER, self.pipe.deadline)  # ends a partial frame the board holds

    def close(self) -> None:
        self.port.close()

    # -- single requests ------------------------------------------------------------------

    def _single(self, mtype: P.MsgType, payload: bytes, parse: Callable[[bytes], Any],
                compute: float | None = None) -> Any:
        """One request. A long answer (HELLO, INFO, SELFTEST) that comes back damaged a few
        times is fetched again in short READ slices, each of which crosses a lossy line far
        more often."""
        damaged = self.stats["bad_frames"]
        whole = WHOLE_ATTEMPTS if mtype in P.READABLE else None
        try:
            ((_, result),) = self.pipe.run([Job(mtype, payload, parse)], compute,
                                           max_attempts=whole)
            return result
        except LinkError:
            if mtype not in P.READABLE or self.stats["bad_frames"] == damaged:
                raise  # no answer at all (hung board): do not spend more time
        answer = self._read(mtype, payload, compute)
        try:
            return parse(answer)
        except P.ProtocolError as e:
            raise LinkError(f"board at {self.url} broke the protocol: {mtype.name} answer read "
                            f"in slices: {e}") from None

    def _read(self, mtype: P.MsgType, payload: bytes, compute: float | None) -> bytes:
        """The whole answer to `mtype`, READ_SLICE bytes per frame, checked by its CRC-32."""
        def read(offset: int, request: bytes = b"") -> tuple[int, int, bytes]:
            job = Job(P.MsgType.READ, P.pack_read_request(mtype, offset, READ_SLICE, request),
                      P.unpack_read_answer)
            ((_, (total, crc, part)),) = self.pipe.run([job], compute if offset == 0 else None)
            if not 0 < total <= MAX_READ_TOTAL:
                raise LinkError(f"board at {self.url}: READ total {total} B outside "
                                f"1..{MAX_READ_TOTAL} B")
            if len(part) > READ_SLICE or offset + len(part) > total:
                raise LinkError(f"board at {self.url}: READ slice of {len(part)} B at offset "
                                f"{offset} exceeds what was asked")
            return total, crc, part

        total, crc, data = read(0, payload)
        parts = [data]
        while sum(map(len, parts)) < total:
            t, c, part = read(sum(map(len, parts)))
            if (t, c) != (total, crc) or not part:
                raise LinkError(f"{mtype.name} answer changed while it was read in slices")
            parts.append(part)
        answer = b"".join(parts)
        if len(answer) != total or zlib.crc32(answer) != crc:
            raise LinkError(f"{mtype.name} answer read in slices does not match its CRC-32")
        self.stats["slice_reads"] += 1
        return answer

    # -- checking what the board says ----------------------------------------------------

    def _bad(self, what: str, field: str, value: Any, expected: str) -> LinkError:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return LinkError(f"board at {self.url} broke the protocol: {what} field {field!r} is "
                         f"{P.printable(shown)}, expected {expected}")

    def _check_identity(self, ident: dict, what: str) -> dict:
        """The identity fields, checked: package id and bitstream hash as hex, names as short
        printable text. Unknown fields are dropped."""
        out: dict[str, Any] = {}
        pid = ident.get("package_id")
        if not isinstance(pid, str) or not HEX64.fullmatch(pid):
            raise self._bad(what, "package_id", pid, f"{HASH_HEX} lowercase hex digits")
        out["package_id"] = pid
        bit = ident.get("bitstream_sha256")
        if bit is not None and (not isinstance(bit, str) or not HEX64.fullmatch(bit)):
            raise self._bad(what, "bitstream_sha256", bit,
                           f"null or {HASH_HEX} lowercase hex digits")
        out["bitstream_sha256"] = bit
        for key in IDENTITY_TEXT:
            v = ident.get(key)
            if v is None:
                continue
            if not isinstance(v, str) or len(v) > MAX_TEXT or not v.isprintable():
                raise self._bad(what, key, v, f"printable text of at most {MAX_TEXT} characters")
            out[key] = v
        return out

    def _check_hello(self, ident: dict) -> dict:
        version = ident.get("protocol")
        if version not in P.SUPPORTED_VERSIONS or not _int(version):
            raise LinkError(f"board at {self.url} chose protocol version "
                            f"{P.printable(repr(version))[:40]}; this host speaks "
                            f"{list(P.SUPPORTED_VERSIONS)}")
        out = self._check_identity(ident, "HELLO")
        boot = ident.get("boot", 0)
        if not _int(boot) or not 0 <= boot < 2**63:
            raise self._bad("HELLO", "boot", boot, "an integer >= 0")
        window = ident.get("window", self.window)
        if not _int(window) or not 1 <= window <= MAX_WINDOW:
            raise self._bad("HELLO", "window", window, f"an integer in 1..{MAX_WINDOW}")
        max_payload = ident.get("max_payload", P.MAX_PAYLOAD)
        if not _int(max_payload) or not MIN_BOARD_PAYLOAD <= max_payload <= P.MAX_PAYLOAD:
            raise self._bad("HELLO", "max_payload", max_payload,
                            f"an integer in {MIN_BOARD_PAYLOAD}..{P.MAX_PAYLOAD}")
        vector_s = ident.get("infer_s_per_vector", 0.0)
        if (isinstance(vector_s, bool) or not isinstance(vector_s, (int, float))
                or not math.isfinite(vector_s) or vector_s < 0):
            raise self._bad("HELLO", "infer_s_per_vector", vector_s, "a finite number >= 0")
        out.update(protocol=version, boot=boot, window=window, max_payload=max_payload,
                   infer_s_per_vector=float(vector_s))
        return out

    def _check_selftest(self, st: Any) -> dict | None:
        """The board's own self-test claim (informational): known scalar fields only."""
        if st is None:
            return None
        if not isinstance(st, dict):
            return {"unavailable": "malformed self-test record"}
        out = {}
        try:
            out["bist"] = P.check_bist_registers(st.get("bist"))
        except P.ProtocolError as e:
            raise LinkError(f"board at {self.url} broke the protocol: self-test {e}") from None
        src = st.get("bist_source")
        if isinstance(src, str) and src in BIST_SOURCES:
            out["bist_source"] = src
        for key in SELFTEST_FIELDS:
            v = st.get(key)
            if isinstance(v, bool) or (_int(v) and abs(v) < 2**53) or (
                    isinstance(v, float) and math.isfinite(v)):
                out[key] = v
            elif isinstance(v, list) and all(isinstance(c, str) and len(c) < 32
                                             and c.isprintable() for c in v[:8]):
                out[key] = v[:8]
        return out

    # -- commands -------------------------------------------------------------------------

    def hello(self) -> dict:
        """Negotiate the protocol version; the board's identity plus "protocol" (checked)."""
        ident = self._check_hello(self._single(P.MsgType.HELLO, P.pack_hello(), P.unpack_json))
        self.pipe.vector_s = min(ident["infer_s_per_vector"], MAX_VECTOR_S)
        self.pipe.window = min(self.window, ident["window"])
        self.board_max_payload = ident["max_payload"]
        self.max_request = min(self.max_request, self.board_max_payload - 64)
        self.chunk_bytes = min(self.chunk_bytes, self.max_request)
        self.identity = ident
        self.pipe.boot = max(self.pipe.boot or 0, ident["boot"])
        return dict(ident)

    def info(self) -> dict:
        """Identity, protocol version, power-on self-test result and board counters."""
        info = self._single(P.MsgType.INFO, b"", P.unpack_json)
        out = self._check_identity(info, "INFO")
        out["selftest"] = self._check_selftest(info.get("selftest"))
        for key in ("boot", "protocol", "requests", "errors", "dropped", "window",
                    "max_payload"):
            if _int(info.get(key)):
                out[key] = info[key]
        uptime = info.get("uptime_s")
        if isinstance(uptime, (int, float)) and not isinstance(uptime, bool) \
                and math.isfinite(uptime):
            out["uptime_s"] = uptime
        return out

    def selftest(self) -> dict:
        """Run the embedded self-test on the board now."""
        st = self._single(P.MsgType.SELFTEST, b"", P.unpack_json, compute=self.long_timeout)
        return self._check_selftest(st)

    def reset(self) -> dict:
        """Reboot the board; returns its BOOT announcement once it is up again."""
        pipe = self.pipe
        for _ in range(self.retries + 1):
            pipe.check_deadline("RESET")
            seq = pipe.next_seq()
            self.port.write(P.encode_frame(P.Frame(P.MsgType.RESET, seq, b"")), pipe.deadline)
            self.stats["frames_sent"] += 1
            deadline = pipe.wait_until(self.timeout + self.long_timeout)
            while (answer := self.port.next_good_frame(deadline)) is not None:
                if answer.type == P.MsgType.BOOT and pipe.rebooted(answer):
                    self.identity = None
                    try:
                        return P.unpack_json(answer.payload)
                    except P.ProtocolError as e:
                        raise LinkError(f"board at {self.url} broke the protocol: BOOT: "
                                        f"{e}") from None
                if answer.type == P.MsgType.ERROR and answer.seq == seq:
                    code, msg = P.unpack_error(answer.payload)
                    if code not in P.RETRYABLE_ERRORS:
                        raise LinkError(f"board at {self.url} refused RESET: "
                                        f"{P.error_name(code)}: {msg}")
                    break
            self.stats["timeouts" if answer is None else "retries"] += 1
        raise LinkError(f"RESET to {self.url}: the board did not come back up after "
                        f"{self.retries + 1} attempts")

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs (B, R) and labels (B,) for inputs x (B, *input_shape).

        Call hello() first: it tells the client the board's frame limits and compute time.
        """
        x = self._inputs(x)
        batcher = self._batcher(
            x, lambda part: (P.MsgType.INFER, P.pack_infer_request(part)),
            lambda part, payload: P.unpack_infer_response(payload, len(part)))
        return self._assemble(x.shape[0], self.pipe.run([], batcher=batcher))

    def challenge(self, nonce: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like infer, with every answer bound to `nonce` and its inputs (BindingError if not)."""
        try:
            nonce = P.check_nonce(nonce)
        except P.ProtocolError as e:
            raise InputError(f"challenge: {e}") from None
        x = self._inputs(x)

        def parse(part: np.ndarray, payload: bytes):
            raw, labels, digest = P.unpack_challenge_response(payload, len(part))
            if digest != P.challenge_digest(nonce, part, raw, labels):
                raise BindingError(f"board at {self.url} answered a challenge with a digest "
                                   f"that does not bind the nonce and inputs")
            return raw, labels

        batcher = self._batcher(
            x, lambda part: (P.MsgType.CHALLENGE, P.pack_challenge_request(nonce, part)), parse)
        return self._assemble(x.shape[0], self.pipe.run([], batcher=batcher))

    # -- batching -------------------------------------------------------------------------

    @staticmethod
    def _inputs(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise InputError(f"board inputs must be integers on the accelerator's input grid, "
                             f"got dtype {x.dtype}")
        if x.ndim < 2 or x.shape[0] < 1 or x.size == 0:
            raise InputError(f"board inputs must be a batch (B, *input_shape) with B >= 1, "
                             f"got shape {x.shape}")
        return x.astype(np.int64, copy=False)

    def _batcher(self, x: np.ndarray, build, parse) -> Batcher:
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        per_vector = max(1, x[0].size * P.wire_dtype(lo, hi)[1].itemsize)
        if per_vector + 64 > self.board_max_payload:
            raise LinkError(f"board at {self.url} accepts frames of at most "
                            f"{self.board_max_payload} B (max_payload); one input vector "
                            f"is {per_vector} B")
        request = max(self.max_request, per_vector + 64)
        chunk = max(self.chunk_bytes, per_vector)
        return Batcher(x, build, parse, min(chunk, request) // per_vector)

    def _assemble(self, batch: int, done: list[tuple[Job, Any]]):
        done = sorted(done, key=lambda item: item[0].start)
        covered = 0
        for job, _ in done:
            if job.start != covered:
                raise LinkError(f"answers cover vectors up to {covered}, next starts at "
                                f"{job.start}")
            covered += job.vectors
        if covered != batch:
            raise LinkError(f"answers cover {covered} of {batch} vectors")
        widths = {result[0].shape[1] for _, result in done}
        if len(widths) != 1:
            raise LinkError(f"board answered with raw outputs of differing widths {widths}")
        raw = np.concatenate([result[0] for _, result in done])
        labels = np.concatenate([result[1] for _, result in done])
        return raw, labels
