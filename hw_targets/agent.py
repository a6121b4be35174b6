"""The board agent: answers protocol requests by calling a backend.

The agent is a byte-stream handler (see hw_targets.link.StreamHandler): bytes in, encoded
answer frames out. It runs the backend's self-test at power-on and after every reboot and
reports the result in INFO. Damaged input is answered with an ERROR frame; the agent keeps
serving.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.hw_targets import protocol as P

log = logging.getLogger("fpgaprint.board")

DEFAULT_MAX_PAYLOAD = 64 * 1024
DEFAULT_WINDOW = 8


class Backend(Protocol):
    def identity(self) -> dict:
        """{"board", "serial", "package_id" (hex), "bitstream_sha256" (str|None), "backend",
        "name"}."""

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: int64 (B, *input_shape) in the accelerator's input datatype -> raw int64 (B, R)
        accelerator output, labels int64 (B,)."""

    def selftest(self) -> dict:
        """Power-on self-test: {"passed", "count", "exact_mismatches", "label_matches",
        "seconds"}."""

    def warm_up(self) -> None:
        """Optional: pay one-time costs before the timed power-on self-test."""

    def reset(self) -> None:
        """Drop all state, as a board reboot does."""


class BoardAgent:
    """Protocol server for one board: `feed` request bytes, get answer frames back."""

    def __init__(self, backend: Backend, *, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 window: int = DEFAULT_WINDOW):
        self.backend = backend
        self.max_payload = max_payload
        self.window = window
        self.boots = 0
        self.reboot_pending = False
        self.counters = {"requests": 0, "errors": 0, "dropped": 0}
        self._read_cache: dict[P.MsgType, bytes] = {}  # answers being fetched by READ
        self._decoder = P.FrameDecoder(max_payload)
        self._power_on()

    # -- lifecycle ------------------------------------------------------------------------

    def _power_on(self) -> None:
        self.boots += 1
        self._booted = time.monotonic()
        self._identity = dict(self.backend.identity())
        warm_up = getattr(self.backend, "warm_up", None)
        if warm_up is not None:
            warm_up()  # one-time costs are not the per-vector compute time HELLO claims
        t0 = time.perf_counter()
        self.selftest_result = dict(self.backend.selftest())
        seconds = time.perf_counter() - t0
        self._vector_s = seconds / max(int(self.selftest_result.get("count", 0)), 1)
        log.info("boot %d: %s self-test %s (%d vectors, %.3f s)", self.boots,
                 self._identity.get("name"), "passed" if self.selftest_result.get("passed")
                 else "FAILED", self.selftest_result.get("count", 0), seconds)

    def banner(self) -> list[bytes]:
        """The unsolicited BOOT frame a board sends when it comes up."""
        body = {"boot": self.boots, "protocol": list(P.SUPPORTED_VERSIONS),
                "board": self._identity.get("board"), "serial": self._identity.get("serial")}
        return [P.encode_frame(P.Frame(P.MsgType.BOOT, 0, P.pack_json(body),
                                       P.Flag.RESPONSE | P.Flag.UNSOLICITED))]

    def reboot(self) -> list[bytes]:
        """Drop all state (decoder, backend), run the power-on self-test, return the banner."""
        self._decoder.reset()
        self.reboot_pending = False
        self.backend.reset()
        self._power_on()
        return self.banner()

    # -- requests -------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[bytes]:
        """Answer every complete frame in `data`; one encoded frame per answer.

        After a RESET request the remaining input is dropped and `reboot_pending` is set: the
        link then calls `reboot()`. Frames beyond `window` in one delivery are answered BUSY;
        at most `window` BUSY or damaged-frame answers per delivery, the rest are dropped
        (counted in `dropped`), so a flood never earns more answers than it sends requests.
        The delivery's last frame, when it is a request, is always answered (BUSY if not
        served): it is what a host that stopped flooding waits for, and silence would leave it
        waiting for good.
        """
        out: list[bytes] = []
        pending = refused = 0
        items = self._decoder.feed(data)
        last = items[-1] if items else None

        def refuse(seq: int, code: P.ErrorCode, message: str, always: bool = False) -> None:
            nonlocal refused
            refused += 1
            if refused > self.window and not always:  # a flood: no more answers than requests
                self.counters["dropped"] += 1
                return
            out.append(self._error(seq, code, message))

        for item in items:
            if isinstance(item, P.ProtocolError):
                self.counters["errors"] += 1
                log.warning("bad frame: %s", item)
                refuse(0, item.code, str(item))
                continue
            if item.is_response:
                log.warning("ignored %s", item.describe())
                continue
            pending += 1
            if pending > self.window:
                refuse(item.seq, P.ErrorCode.BUSY, f"more than {self.window} requests pending",
                       always=item is last)
                continue
            answer = self.handle(item)
            out.append(P.encode_frame(answer))
            if item.type == P.MsgType.RESET and answer.type == P.MsgType.RESET:  # not refused
                self.reboot_pending = True
                self._decoder.reset()
                break
        return out

    def _error(self, seq: int, code: P.ErrorCode, message: str) -> bytes:
        return P.encode_frame(P.Frame(P.MsgType.ERROR, seq, P.pack_error(code, message),
                                      P.Flag.RESPONSE))

    def handle(self, frame: P.Frame) -> P.Frame:
        """The answer to one request frame (an ERROR frame when it cannot be served)."""
        self.counters["requests"] += 1
        t0 = time.perf_counter()
        try:
            if frame.version not in P.SUPPORTED_VERSIONS and frame.type != P.MsgType.HELLO:
                raise P.ProtocolError(P.ErrorCode.BAD_VERSION, f"protocol version "
                                      f"{frame.version} not supported; board speaks "
                                      f"{list(P.SUPPORTED_VERSIONS)}")
            handler = self._handlers.get(frame.type)
            if handler is None:
                raise P.ProtocolError(P.ErrorCode.UNKNOWN_COMMAND,
                                      f"unknown command 0x{frame.type:02x}")
            payload = handler(self, frame.payload)
            answer = P.Frame(frame.type, frame.seq, payload, P.Flag.RESPONSE)
        except P.ProtocolError as e:
            self.counters["errors"] += 1
            log.warning("%s: %s %s", frame.describe(), e.code.name, e)
            return P.Frame(P.MsgType.ERROR, frame.seq, P.pack_error(e.code, str(e)),
                           P.Flag.RESPONSE)
        except InputError as e:
            self.counters["errors"] += 1
            log.warning("%s: BAD_PAYLOAD %s", frame.describe(), e)
            return P.Frame(P.MsgType.ERROR, frame.seq, P.pack_error(P.ErrorCode.BAD_PAYLOAD,
                                                                     str(e)), P.Flag.RESPONSE)
        except Exception as e:  # the board must survive any backend failure
            self.counters["errors"] += 1
            log.exception("%s: internal error", frame.describe())
            return P.Frame(P.MsgType.ERROR, frame.seq,
                           P.pack_error(P.ErrorCode.INTERNAL, f"{type(e).__name__}: {e}"),
                           P.Flag.RESPONSE)
        log.debug("%s answered in %.4f s", frame.describe(), time.perf_counter() - t0)
        return answer

    def _hello(self, payload: bytes) -> bytes:
        lo, hi = P.unpack_hello(payload)
        version = P.negotiate(lo, hi)
        if version is None:
            raise P.ProtocolError(P.ErrorCode.BAD_VERSION, f"no common protocol version: host "
                                  f"speaks {lo}..{hi}, board {list(P.SUPPORTED_VERSIONS)}")
        return P.pack_json({**self._identity, "protocol": version, "boot": self.boots,
                            "max_payload": self.max_payload, "window": self.window,
                            "infer_s_per_vector": self._vector_s})

    def _info(self, payload: bytes) -> bytes:
        return P.pack_json({**self._identity, "protocol": P.PROTOCOL_VERSION,
                            "boot": self.boots, "selftest": self.selftest_result,
                            "uptime_s": round(time.monotonic() - self._booted, 3),
                            "max_payload": self.max_payload, "window": self.window,
                            "infer_s_per_vector": self._vector_s, **self.counters})

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        raw, labels = self.backend.infer(x)
        raw, labels = np.asarray(raw), np.asarray(labels)
        batch = x.shape[0]
        if raw.ndim != 2 or raw.shape[0] != batch or labels.shape != (batch,):
            raise RuntimeError(f"backend returned raw {raw.shape} and labels {labels.shape} "
                               f"for a batch of {batch}")
        self._vector_s = max(self._vector_s, (time.perf_counter() - t0) / batch)
        return raw.astype(np.int64, copy=False), labels.astype(np.int64, copy=False)

    def _infer(self, payload: bytes) -> bytes:
        raw, labels = self._run(P.unpack_infer_request(payload))
        return P.pack_outputs(raw, labels)

    def _selftest(self, payload: bytes) -> bytes:
        return P.pack_json(dict(self.backend.selftest()))

    def _challenge(self, payload: bytes) -> bytes:
        nonce, x = P.unpack_challenge_request(payload)
        raw, labels = self._run(x)
        return P.pack_challenge_response(raw, labels, P.challenge_digest(nonce, x, raw, labels))

    def _reset(self, payload: bytes) -> bytes:
        return b""

    def _read(self, payload: bytes) -> bytes:
        """A slice of a long answer: at offset 0 the request is served and its answer kept."""
        mtype, offset, length, request = P.unpack_read_request(payload)
        if offset == 0:
            self._read_cache[mtype] = self._handlers[mtype](self, request)
        answer = self._read_cache.get(mtype)
        if answer is None:
            raise P.ProtocolError(P.ErrorCode.BAD_PAYLOAD,
                                  f"no {mtype.name} answer to read: start at offset 0")
        return P.pack_read_answer(answer, offset, length)

    _handlers = {
        P.MsgType.HELLO: _hello, P.MsgType.INFO: _info, P.MsgType.INFER: _infer,
        P.MsgType.SELFTEST: _selftest, P.MsgType.CHALLENGE: _challenge,
        P.MsgType.RESET: _reset, P.MsgType.READ: _read,
    }
