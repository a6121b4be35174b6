"""The fpgaprint wire protocol, shared by the board agent and the host client.

A frame on the wire is ``COBS(header ‖ payload ‖ CRC-32) ‖ 0x00``. The header is
``<BBBHI``: protocol version, message type, flags, sequence number, payload length.
The CRC-32 (zlib, IEEE 802.3) covers header and payload and is stored little-endian.
Integer arrays travel as ``dtype code ‖ ndim ‖ dims (u32 each) ‖ little-endian data`` in the
smallest integer type that holds every element. docs/protocol.md is the specification.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum, IntFlag

import numpy as np
from cobs import cobs

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
DELIMITER = b"\x00"
HEADER = struct.Struct("<BBBHI")
CRC = struct.Struct("<I")
MAX_PAYLOAD = 1 << 20
MAX_NDIM = 8
NONCE_MIN, NONCE_MAX = 8, 64
DIGEST_SIZE = 32
CHALLENGE_DOMAIN = b"fpgaprint-challenge/1\x00"


class MsgType(IntEnum):
    """Message types; a response carries its request's type (or ERROR) and Flag.RESPONSE."""

    HELLO = 0x01
    INFO = 0x02
    INFER = 0x03
    SELFTEST = 0x04
    CHALLENGE = 0x05
    RESET = 0x06
    READ = 0x07
    BOOT = 0x10
    ERROR = 0x7F


REQUEST_TYPES = frozenset(
    {MsgType.HELLO, MsgType.INFO, MsgType.INFER, MsgType.SELFTEST, MsgType.CHALLENGE,
     MsgType.RESET, MsgType.READ}
)


class Flag(IntFlag):
    RESPONSE = 0x01
    UNSOLICITED = 0x02


class ErrorCode(IntEnum):
    BAD_CRC = 1
    BAD_FRAME = 2
    UNKNOWN_COMMAND = 3
    BAD_PAYLOAD = 4
    BUSY = 5
    INTERNAL = 6
    BAD_VERSION = 7


# Errors worth a retry: the request (or its answer) was damaged in transit or the board was busy.
RETRYABLE_ERRORS = frozenset({ErrorCode.BAD_CRC, ErrorCode.BAD_FRAME, ErrorCode.BUSY})


class ProtocolError(ValueError):
    """A frame or payload that does not follow the protocol; `code` is the ERROR code to answer."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    flags: int = 0
    version: int = PROTOCOL_VERSION

    @property
    def is_response(self) -> bool:
        return bool(self.flags & Flag.RESPONSE)

    def describe(self) -> str:
        try:
            name = MsgType(self.type).name
        except ValueError:
            name = f"0x{self.type:02x}"
        kind = "response" if self.is_response else "request"
        return f"{name} {kind} seq={self.seq} ({len(self.payload)} B)"


# ---------------------------------------------------------------------------------------------
# framing


def encode_frame(frame: Frame) -> bytes:
    """The bytes on the wire for `frame`, delimiter included."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"payload of {len(frame.payload)} B exceeds "
                            f"the protocol maximum of {MAX_PAYLOAD} B")
    body = HEADER.pack(frame.version, frame.type, frame.flags, frame.seq & 0xFFFF,
                       len(frame.payload)) + frame.payload
    return cobs.encode(body + CRC.pack(zlib.crc32(body))) + DELIMITER


def decode_frame(chunk: bytes) -> Frame:
    """Decode one COBS chunk (between delimiters); ProtocolError names what is wrong."""
    try:
        body = cobs.decode(chunk)
    except cobs.DecodeError as e:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"bad COBS encoding: {e}") from None
    if len(body) < HEADER.size + CRC.size:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame of {len(body)} B is shorter than "
                            f"header and CRC ({HEADER.size + CRC.size} B)")
    (crc,) = CRC.unpack_from(body, len(body) - CRC.size)
    body = body[: -CRC.size]
    if zlib.crc32(body) != crc:
        raise ProtocolError(ErrorCode.BAD_CRC, "CRC-32 mismatch")
    version, mtype, flags, seq, length = HEADER.unpack_from(body)
    payload = body[HEADER.size:]
    if length != len(payload):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"header says {length} B of payload, "
                            f"frame holds {len(payload)} B")
    return Frame(type=mtype, seq=seq, payload=bytes(payload), flags=flags, version=version)


def max_encoded_size(max_payload: int) -> int:
    """Upper bound of a COBS chunk carrying `max_payload` bytes (delimiter excluded)."""
    raw = HEADER.size + max_payload + CRC.size
    return raw + raw // 254 + 1


class FrameDecoder:
    """Streaming decoder: feed bytes, get frames and errors in arrival order.

    A damaged chunk yields a ProtocolError and decoding resumes at the next delimiter, so the
    decoder resynchronises after any garbage. A run longer than the largest legal frame is
    dropped (one error) without buffering it.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_chunk = max_encoded_size(max_payload)
        self._buf = bytearray()
        self._overflow = False

    def reset(self) -> None:
        self._buf.clear()
        self._overflow = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | ProtocolError]:
        out: list[Frame | ProtocolError] = []
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            if end < 0:
                self._append(data[start:])
                return out
            self._append(data[start:end])
            if self._overflow:
                out.append(ProtocolError(ErrorCode.BAD_FRAME, f"frame longer than "
                                         f"{self.max_chunk} B"))
            elif self._buf:
                try:
                    out.append(decode_frame(bytes(self._buf)))
                except ProtocolError as e:
                    out.append(e)
            self._buf.clear()
            self._overflow = False
            start = end + 1

    def _append(self, part: bytes) -> None:
        if self._overflow or not part:
            return
        if len(self._buf) + len(part) > self.max_chunk:
            self._buf.clear()
            self._overflow = True
        else:
            self._buf += part


# ---------------------------------------------------------------------------------------------
# integer arrays

_CODES: dict[int, np.dtype] = {
    0x01: np.dtype("<i1"), 0x02: np.dtype("<i2"), 0x03: np.dtype("<i4"), 0x04: np.dtype("<i8"),
    0x11: np.dtype("<u1"), 0x12: np.dtype("<u2"), 0x13: np.dtype("<u4"),
}
# candidates from narrowest to widest; unsigned first at each width
_ORDER = (0x11, 0x01, 0x12, 0x02, 0x13, 0x03, 0x04)
_ARRAY_HEAD = struct.Struct("<BB")


def wire_dtype(lo: int, hi: int) -> tuple[int, np.dtype]:
    """The narrowest wire type (code, dtype) that holds every value in [lo, hi]."""
    for code in _ORDER:
        info = np.iinfo(_CODES[code])
        if info.min <= lo and hi <= info.max:
            return code, _CODES[code]
    raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"values in [{lo}, {hi}] do not fit in int64")


def pack_array(a: np.ndarray) -> bytes:
    """Encode an integer array in the narrowest little-endian integer type that holds it."""
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"only integer arrays travel on the wire, "
                            f"got dtype {a.dtype}")
    if a.ndim > MAX_NDIM:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"array has {a.ndim} dimensions, "
                            f"at most {MAX_NDIM} travel")
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    code, dtype = wire_dtype(lo, hi)
    head = _ARRAY_HEAD.pack(code, a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
    return head + np.ascontiguousarray(a, dtype=dtype).tobytes()


def unpack_array(buf: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """Decode one array at `offset`: (int64 array, offset after it)."""
    buf = memoryview(buf)
    if len(buf) - offset < _ARRAY_HEAD.size:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, "truncated array header")
    code, ndim = _ARRAY_HEAD.unpack_from(buf, offset)
    offset += _ARRAY_HEAD.size
    if code not in _CODES:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"unknown array dtype code 0x{code:02x}")
    if ndim > MAX_NDIM:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"array claims {ndim} dimensions")
    if len(buf) - offset < 4 * ndim:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, "truncated array shape")
    shape = struct.unpack_from(f"<{ndim}I", buf, offset)
    offset += 4 * ndim
    if 0 in shape:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"array of shape {tuple(shape)} has a zero "
                            "dimension (every dimension must be >= 1)")
    dtype = _CODES[code]
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if len(buf) - offset < nbytes:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"array of shape {tuple(shape)} needs "
                            f"{nbytes} B, {len(buf) - offset} B left")
    data = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).astype(np.int64)
    return data.reshape(shape), offset + nbytes


def _expect_end(buf: bytes, offset: int, what: str) -> None:
    if offset != len(buf):
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"{len(buf) - offset} B of trailing data "
                            f"after {what}")


# ---------------------------------------------------------------------------------------------
# payloads


def pack_json(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def unpack_json(payload: bytes) -> dict:
    """A JSON object (nesting deeper than the parser's stack is refused). Numbers may be
    NaN or infinite: whoever uses a field checks it."""
    try:
        obj = json.loads(payload.decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"bad JSON payload: {str(e)[:200]}") \
            from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, "JSON payload is not an object")
    return obj


def pack_hello(min_version: int = SUPPORTED_VERSIONS[0],
               max_version: int = SUPPORTED_VERSIONS[-1]) -> bytes:
    return bytes((min_version, max_version))


def unpack_hello(payload: bytes) -> tuple[int, int]:
    if len(payload) != 2:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"HELLO carries 2 B (min, max version), "
                            f"got {len(payload)} B")
    return payload[0], payload[1]


def negotiate(min_version: int, max_version: int) -> int | None:
    """The highest version both sides speak, or None."""
    common = [v for v in SUPPORTED_VERSIONS if min_version <= v <= max_version]
    return max(common) if common else None


def _batch(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim < 2 or x.shape[0] < 1:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"{what} needs a batch (B, *input_shape) "
                            f"with B >= 1, got shape {tuple(x.shape)}")
    return x


def pack_infer_request(x: np.ndarray) -> bytes:
    return pack_array(x)


def unpack_infer_request(payload: bytes) -> np.ndarray:
    x, end = unpack_array(payload)
    _expect_end(payload, end, "INFER inputs")
    return _batch(x, "INFER")


def pack_outputs(raw: np.ndarray, labels: np.ndarray) -> bytes:
    return pack_array(raw) + pack_array(labels)


def unpack_outputs(payload: bytes, offset: int = 0,
                   batch: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(raw (B, R), labels (B,), end offset); checks the shapes agree (and match `batch`)."""
    raw, offset = unpack_array(payload, offset)
    labels, offset = unpack_array(payload, offset)
    if raw.ndim != 2 or labels.ndim != 1 or raw.shape[0] != labels.shape[0]:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"outputs have shapes raw {raw.shape} and "
                            f"labels {labels.shape}; expected (B, R) and (B,)")
    if batch is not None and labels.shape[0] != batch:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"{labels.shape[0]} outputs for a batch of "
                            f"{batch}")
    return raw, labels, offset


def unpack_infer_response(payload: bytes, batch: int | None = None):
    raw, labels, end = unpack_outputs(payload, batch=batch)
    _expect_end(payload, end, "INFER outputs")
    return raw, labels


def check_nonce(nonce: bytes) -> bytes:
    nonce = bytes(nonce)
    if not NONCE_MIN <= len(nonce) <= NONCE_MAX:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"nonce must be {NONCE_MIN}..{NONCE_MAX} B, "
                            f"got {len(nonce)} B")
    return nonce


def pack_challenge_request(nonce: bytes, x: np.ndarray) -> bytes:
    nonce = check_nonce(nonce)
    return bytes((len(nonce),)) + nonce + pack_array(x)


def unpack_challenge_request(payload: bytes) -> tuple[bytes, np.ndarray]:
    if not payload:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, "empty CHALLENGE payload")
    n = payload[0]
    nonce = check_nonce(payload[1:1 + n])
    x, end = unpack_array(payload, 1 + n)
    _expect_end(payload, end, "CHALLENGE inputs")
    return nonce, _batch(x, "CHALLENGE")


def challenge_digest(nonce: bytes, x: np.ndarray, raw: np.ndarray, labels: np.ndarray) -> bytes:
    """SHA-256 binding an answer to its nonce and inputs: H(domain ‖ nonce ‖ x ‖ raw ‖ labels)."""
    h = hashlib.sha256(CHALLENGE_DOMAIN)
    h.update(nonce)
    for a in (x, raw, labels):
        h.update(pack_array(np.asarray(a, dtype=np.int64)))
    return h.digest()


def pack_challenge_response(raw: np.ndarray, labels: np.ndarray, digest: bytes) -> bytes:
    return pack_outputs(raw, labels) + digest


def unpack_challenge_response(payload: bytes, batch: int | None = None):
    """(raw, labels, digest)."""
    raw, labels, end = unpack_outputs(payload, batch=batch)
    digest = payload[end:]
    if len(digest) != DIGEST_SIZE:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"CHALLENGE digest is {len(digest)} B, "
                            f"expected {DIGEST_SIZE} B")
    return raw, labels, bytes(digest)


def check_bist_registers(value: object) -> dict[str, int] | None:
    """The on-chip self-test registers in a SELFTEST or INFO answer (`"bist"`): null, or an
    object holding every read-only register of `core.bist.REGISTERS` (lower-case names) as an
    integer in 0..2^32-1, nothing else. ProtocolError otherwise."""
    from fpgaprint.core.bist import RECORD_FIELDS, record_values

    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(RECORD_FIELDS):
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, "BIST registers: expected an object with "
                            f"exactly {', '.join(RECORD_FIELDS)}")
    return record_values(value, lambda key, v: ProtocolError(
        ErrorCode.BAD_PAYLOAD, f"BIST register {key} is {printable(repr(v))[:40]}, expected "
        "0..0xFFFFFFFF"))


# READ: a long single-shot answer (HELLO, INFO, SELFTEST) fetched in short slices, so that it
# crosses a lossy line where a whole long frame rarely survives.
READABLE = frozenset({MsgType.HELLO, MsgType.INFO, MsgType.SELFTEST})
_READ_REQ = struct.Struct("<BIH")  # answer type, offset, length; then (offset 0) the request
_READ_ANS = struct.Struct("<II")  # total length, CRC-32 of the whole answer; then the slice


def pack_read_request(mtype: MsgType, offset: int, length: int, request: bytes = b"") -> bytes:
    return _READ_REQ.pack(int(mtype), offset, length) + request


def unpack_read_request(payload: bytes) -> tuple[MsgType, int, int, bytes]:
    if len(payload) < _READ_REQ.size:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"READ request of {len(payload)} B")
    mtype, offset, length = _READ_REQ.unpack_from(payload)
    if mtype not in READABLE:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"READ of type 0x{mtype:02x}: only "
                            f"{', '.join(t.name for t in sorted(READABLE))} answers are readable")
    return MsgType(mtype), offset, length, bytes(payload[_READ_REQ.size:])


def pack_read_answer(answer: bytes, offset: int, length: int) -> bytes:
    return _READ_ANS.pack(len(answer), zlib.crc32(answer)) + answer[offset:offset + length]


def unpack_read_answer(payload: bytes) -> tuple[int, int, bytes]:
    if len(payload) < _READ_ANS.size:
        raise ProtocolError(ErrorCode.BAD_PAYLOAD, f"READ answer of {len(payload)} B")
    total, crc = _READ_ANS.unpack_from(payload)
    return total, crc, bytes(payload[_READ_ANS.size:])


def pack_error(code: ErrorCode, message: str) -> bytes:
    return bytes((int(code),)) + message.encode()[:240]


def printable(text: str, limit: int = 240) -> str:
    """`text` cut to `limit` characters with anything unprintable (terminal escapes, control
    characters) replaced by '?': what a host shows of text a board sent."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])


def unpack_error(payload: bytes) -> tuple[int, str]:
    if not payload:
        return int(ErrorCode.INTERNAL), "empty ERROR payload"
    return payload[0], printable(payload[1:].decode(errors="replace"))


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"code {code}"
