"""Host side of the fpgaprint wire protocol on any pyserial URL.

`BoardClient` pipelines requests (several frames in flight), matches answers by sequence
number, retries a request a bounded number of times when its answer is lost, damaged (CRC)
or refused with a retryable ERROR, halves the batch size after a failure so short frames
get through a noisy line, and raises LinkError when no answer can be had. It never returns part
of a batch.
"""

from __future__ import annotations

import itertools
import logging
import select
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import serial

from fpgaprint.core.errors import InputError, LinkError, VerdictFail
from fpgaprint.hw_targets import protocol as P

log = logging.getLogger("fpgaprint.client")

DEFAULT_MAX_REQUEST = 16 * 1024
READ_SLICE = 48  # bytes of a long answer per READ frame on a lossy line


class BindingError(VerdictFail):
    """A CHALLENGE answer is not bound to the nonce and inputs that were sent."""


@dataclass
class _Job:
    """One request of a pipelined exchange."""

    type: P.MsgType
    payload: bytes
    parse: Callable[[bytes], Any]
    start: int = 0
    vectors: int = 0
    attempts: int = 0
    seq: int = 0
    sent_at: float = 0.0
    wire: int = 0
    reasons: list[str] = field(default_factory=list)


class _Batcher:
    """Cuts a batch into request jobs; the chunk size halves on a failure and grows by one
    vector on each success, so frames shrink until they get through a noisy line."""

    def __init__(self, x: np.ndarray, build: Callable[[np.ndarray], tuple[P.MsgType, bytes]],
                 parse: Callable[[np.ndarray, bytes], Any], chunk: int):
        self.x, self.build, self.parse = x, build, parse
        self.chunk = self.max_chunk = max(1, chunk)
        self.cursor = 0

    def take(self) -> _Job | None:
        if self.cursor >= len(self.x):
            return None
        start, self.cursor = self.cursor, min(self.cursor + self.chunk, len(self.x))
        return self._job(start, self.cursor)

    def _job(self, start: int, stop: int) -> _Job:
        part = self.x[start:stop]
        mtype, payload = self.build(part)
        return _Job(mtype, payload, lambda p: self.parse(part, p), start=start,
                    vectors=stop - start)

    def split(self, job: _Job) -> list[_Job]:
        self.chunk = max(1, min(self.chunk, job.vectors) // 2)
        stop = job.start + job.vectors
        return [self._job(s, min(s + self.chunk, stop))
                for s in range(job.start, stop, self.chunk)]

    def succeeded(self) -> None:
        self.chunk = min(self.max_chunk, self.chunk + 1)


class BoardClient:
    """Talk to a board agent at a pyserial URL (device path, socket://, loop://, rfc2217://).

    `timeout` is the silence allowed for an answer beyond its line and compute time; a
    request is sent at most `retries` + 1 times. `baud` sets the port speed and the line-time
    allowance (8N1: baud/10 bytes/s).
    """

    def __init__(self, url: str, timeout: float = 2.0, retries: int = 3, baud: int = 115200, *,
                 window: int = 4, max_request: int = DEFAULT_MAX_REQUEST,
                 chunk_bytes: int | None = None, long_timeout: float = 120.0):
        if timeout <= 0 or retries < 0 or baud <= 0 or window < 1:
            raise InputError(f"bad client settings: timeout={timeout}, retries={retries}, "
                             f"baud={baud}, window={window}")
        self.url, self.timeout, self.retries, self.baud = url, timeout, retries, baud
        self.window = window
        self.max_request = max_request
        self.chunk_bytes = chunk_bytes or int(min(max(baud / 10 * 0.1, 1024), max_request))
        self.long_timeout = long_timeout
        self.identity: dict | None = None
        self.stats = {"frames_sent": 0, "frames_received": 0, "bad_frames": 0, "retries": 0,
                      "timeouts": 0, "board_errors": 0, "reboots_seen": 0, "stale": 0,
                      "bytes_sent": 0, "bytes_received": 0, "slice_reads": 0}
        self._ser: serial.SerialBase | None = None
        self._fd: int | None = None
        self._decoder = P.FrameDecoder(P.MAX_PAYLOAD)
        self._frames: deque[P.Frame | P.ProtocolError] = deque()
        self._seq = 0
        self._vector_s = 0.0
        self._board_window = window
        self._boot: int | None = None

    # -- connection -----------------------------------------------------------------------

    def __enter__(self) -> "BoardClient":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        try:
            self._ser = serial.serial_for_url(self.url, baudrate=self.baud, timeout=0,
                                              write_timeout=None)
        except (serial.SerialException, ValueError, OSError) as e:
            raise LinkError(f"cannot open board port {self.url}: {e}") from None
        try:
            self._fd = self._ser.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self._ser.reset_input_buffer()
        self._decoder.reset()
        self._frames.clear()
        self._write(P.DELIMITER)  # ends any partial frame the board may hold

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            finally:
                self._ser = None

    def _port(self) -> serial.SerialBase:
        if self._ser is None:
            raise LinkError(f"board port {self.url} is not open (use BoardClient as a context "
                            f"manager or call open())")
        return self._ser

    def _write(self, data: bytes) -> None:
        port = self._port()
        port.write_timeout = self.timeout + self._line_time(len(data))
        try:
            port.write(data)
        except serial.SerialTimeoutException:
            raise LinkError(f"board port {self.url}: write of {len(data)} B timed out") from None
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"board port {self.url}: write failed: {e}") from None
        self.stats["bytes_sent"] += len(data)

    def _line_time(self, nbytes: int) -> float:
        return nbytes * 10.0 / self.baud

    def _next_frame(self, deadline: float) -> P.Frame | P.ProtocolError | None:
        """The next answer frame or damaged chunk from the board, or None at `deadline`."""
        port = self._port()
        idle = 0.0005
        while not self._frames:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data = port.read(65536)
                if not data:
                    if self._fd is not None:
                        select.select([self._fd], [], [], min(left, 0.1))
                    else:
                        time.sleep(min(left, idle))
                        idle = min(idle * 2, 0.005)
                    continue
            except (serial.SerialException, OSError) as e:
                raise LinkError(f"board port {self.url}: read failed: {e}") from None
            idle = 0.0005
            self.stats["bytes_received"] += len(data)
            for item in self._decoder.feed(data):
                if isinstance(item, P.ProtocolError):
                    self.stats["bad_frames"] += 1
                    log.debug("damaged frame: %s", item)
                    self._frames.append(item)
                elif item.is_response:
                    self.stats["frames_received"] += 1
                    self._frames.append(item)
        return self._frames.popleft()

    def _next_good_frame(self, deadline: float) -> P.Frame | None:
        while True:
            item = self._next_frame(deadline)
            if not isinstance(item, P.ProtocolError):
                return item

    def _rebooted(self, frame: P.Frame) -> bool:
        """Whether a BOOT frame announces a reboot not seen before (it loses every request)."""
        try:
            boot = int(P.unpack_json(frame.payload).get("boot", 0))
        except (P.ProtocolError, TypeError, ValueError):
            boot = 0
        if self._boot is not None and boot <= self._boot:
            return False
        self._boot = boot
        self.stats["reboots_seen"] += 1
        log.warning("board rebooted (boot %d)", boot)
        return True

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1  # 1..65535; 0 marks unsolicited frames
        return self._seq

    # -- the pipelined exchange -------------------------------------------------------------

    def _allowance(self, job: _Job, compute: float | None = None) -> float:
        work = compute if compute is not None else 4.0 * self._vector_s * job.vectors
        return self.timeout + 2.0 * self._line_time(job.wire + 64) + work

    def _exchange(self, jobs: list[_Job], compute: float | None = None,
                  batcher: _Batcher | None = None) -> list[tuple[_Job, Any]]:
        """Run `jobs` and then the batcher's jobs pipelined; (job, parsed answer) for every
        piece, in completion order."""
        pending: deque[_Job] = deque(jobs)
        outstanding: deque[_Job] = deque()
        done: list[tuple[_Job, Any]] = []
        progress = time.monotonic()
        window = max(1, min(self.window, self._board_window))

        def fail(job: _Job, reason: str, damaged: bool = False) -> None:
            """Requeue `job` or give up; a damaged answer to a batch that can still shrink
            costs no attempt (the batch is halved), so at most retries + 1 + log2(chunk)
            frames are sent per vector."""
            outstanding.remove(job)
            job.reasons.append(reason)
            shrink = batcher is not None and job.vectors > 1
            if not (damaged and shrink):
                job.attempts += 1
            if job.attempts > self.retries:
                raise LinkError(f"{job.type.name} to {self.url}: no valid answer after "
                                f"{len(job.reasons)} attempts ({'; '.join(job.reasons[-4:])})")
            self.stats["retries"] += 1
            log.info("retrying %s (%s)", job.type.name, reason)
            pieces = batcher.split(job) if shrink else [job]
            for piece in pieces:
                piece.attempts, piece.reasons = job.attempts, list(job.reasons)
            pending.extendleft(reversed(pieces))

        def refill() -> bool:
            if not pending and batcher is not None and (job := batcher.take()) is not None:
                pending.append(job)
            return bool(pending)

        while refill() or outstanding:
            while len(outstanding) < window and refill():
                job = pending.popleft()
                job.seq = self._next_seq()
                wire = P.encode_frame(P.Frame(job.type, job.seq, job.payload))
                job.wire, job.sent_at = len(wire), time.monotonic()
                self._write(wire)
                self.stats["frames_sent"] += 1
                outstanding.append(job)
            head = outstanding[0]
            deadline = max(head.sent_at, progress) + self._allowance(head, compute)
            frame = self._next_frame(deadline)
            if frame is None:
                self.stats["timeouts"] += 1
                fail(head, "timeout")
                continue
            if isinstance(frame, P.ProtocolError):  # answers come in order: the head's is lost
                fail(head, f"damaged answer ({frame})", damaged=True)
                continue
            if frame.type == P.MsgType.BOOT:
                if not self._rebooted(frame):
                    continue
                for job in reversed(list(outstanding)):
                    fail(job, "board rebooted")
                continue
            job = next((j for j in outstanding if j.seq == frame.seq), None)
            if job is None:
                if frame.type == P.MsgType.ERROR:
                    self.stats["board_errors"] += 1
                    code, msg = P.unpack_error(frame.payload)
                    log.info("board error without a request: %s %s", P.error_name(code), msg)
                else:
                    self.stats["stale"] += 1
                continue
            lost = list(itertools.takewhile(lambda j: j is not job, outstanding))
            for earlier in reversed(lost):  # answers come in order: earlier ones are lost
                fail(earlier, "answer lost")
            progress = time.monotonic()
            if frame.type == P.MsgType.ERROR:
                self.stats["board_errors"] += 1
                code, msg = P.unpack_error(frame.payload)
                if code not in P.RETRYABLE_ERRORS:
                    raise LinkError(f"board at {self.url} refused {job.type.name}: "
                                    f"{P.error_name(code)}: {msg}")
                fail(job, f"board error {P.error_name(code)}: {msg}")
                continue
            if frame.type != job.type:
                fail(job, f"answer of type 0x{frame.type:02x} to {job.type.name}")
                continue
            try:
                result = job.parse(frame.payload)
            except P.ProtocolError as e:
                fail(job, f"malformed answer: {e}")
                continue
            outstanding.popleft()
            done.append((job, result))
            if batcher is not None:
                batcher.succeeded()
        return done

    def _single(self, mtype: P.MsgType, payload: bytes, parse: Callable[[bytes], Any],
                compute: float | None = None) -> Any:
        """One request; when only damaged answers came back (a lossy line), the answer is
        fetched again in short READ slices, each of which crosses the line far more often."""
        damaged = self.stats["bad_frames"]
        try:
            ((_, result),) = self._exchange([_Job(mtype, payload, parse)], compute)
            return result
        except LinkError:
            if mtype not in P.READABLE or self.stats["bad_frames"] == damaged:
                raise  # no answer at all (hung board): do not spend more time
        return parse(self._read(mtype, payload, compute))

    def _read(self, mtype: P.MsgType, payload: bytes, compute: float | None) -> bytes:
        """The whole answer to `mtype`, READ_SLICE bytes per frame, checked by its CRC-32."""
        def read(offset: int, request: bytes = b"") -> tuple[int, int, bytes]:
            job = _Job(P.MsgType.READ, P.pack_read_request(mtype, offset, READ_SLICE, request),
                       P.unpack_read_answer)
            ((_, got),) = self._exchange([job], compute if offset == 0 else None)
            return got

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

    # -- commands -------------------------------------------------------------------------

    def hello(self) -> dict:
        """Negotiate the protocol version; the board's identity plus "protocol"."""
        ident = self._single(P.MsgType.HELLO, P.pack_hello(), P.unpack_json)
        version = ident.get("protocol")
        if version not in P.SUPPORTED_VERSIONS:
            raise LinkError(f"board at {self.url} chose protocol version {version}; this host "
                            f"speaks {list(P.SUPPORTED_VERSIONS)}")
        self._vector_s = float(ident.get("infer_s_per_vector") or 0.0)
        self._board_window = int(ident.get("window") or self.window)
        board_max = int(ident.get("max_payload") or self.max_request)
        self.max_request = min(self.max_request, board_max - 64)
        self.chunk_bytes = min(self.chunk_bytes, self.max_request)
        self.identity = ident
        self._boot = max(self._boot or 0, int(ident.get("boot") or 0))
        return dict(ident)

    def info(self) -> dict:
        """Identity, protocol version, power-on self-test result and board counters."""
        return self._single(P.MsgType.INFO, b"", P.unpack_json)

    def selftest(self) -> dict:
        """Run the embedded self-test on the board now."""
        return self._single(P.MsgType.SELFTEST, b"", P.unpack_json, compute=self.long_timeout)

    def reset(self) -> dict:
        """Reboot the board; returns its BOOT announcement once it is up again."""
        for attempt in range(self.retries + 1):
            seq = self._next_seq()
            frame = P.encode_frame(P.Frame(P.MsgType.RESET, seq, b""))
            self._write(frame)
            self.stats["frames_sent"] += 1
            deadline = time.monotonic() + self.timeout + self.long_timeout
            while (answer := self._next_good_frame(deadline)) is not None:
                if answer.type == P.MsgType.BOOT and self._rebooted(answer):
                    self.identity = None
                    return P.unpack_json(answer.payload)
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
        return self._assemble(x.shape[0], self._exchange([], batcher=batcher))

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
        return self._assemble(x.shape[0], self._exchange([], batcher=batcher))

    # -- batching -------------------------------------------------------------------------

    @staticmethod
    def _inputs(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise InputError(f"board inputs must be integers on the accelerator's input grid, "
                             f"got dtype {x.dtype}")
        if x.ndim < 2 or x.shape[0] < 1:
            raise InputError(f"board inputs must be a batch (B, *input_shape) with B >= 1, "
                             f"got shape {x.shape}")
        return x.astype(np.int64, copy=False)

    def _batcher(self, x: np.ndarray, build, parse) -> _Batcher:
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        per_vector = max(1, x[0].size * P.wire_dtype(lo, hi)[1].itemsize)
        if per_vector + 64 > self.max_request:
            raise InputError(f"one input vector is {per_vector} B on the wire; the board "
                             f"accepts frames of at most {self.max_request} B")
        return _Batcher(x, build, parse, self.chunk_bytes // per_vector)

    def _assemble(self, batch: int, done: list[tuple[_Job, Any]]):
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

