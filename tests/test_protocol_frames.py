"""Wire protocol: framing, CRC, array packing, payloads, decoder resynchronisation, fuzzing."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from cobs import cobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpgaprint.hw_targets import protocol as P


def frame(mtype=P.MsgType.INFER, seq=7, payload=b"abc\x00def", flags=0):
    return P.Frame(mtype, seq, payload, flags)


def test_frame_round_trip_and_layout():
    f = frame(flags=P.Flag.RESPONSE)
    wire = P.encode_frame(f)
    assert wire.endswith(b"\x00") and wire.count(b"\x00") == 1  # COBS removes every zero
    body = cobs.decode(wire[:-1])
    version, mtype, flags, seq, length = P.HEADER.unpack_from(body)
    assert (version, mtype, flags, seq, length) == (1, 0x03, 0x01, 7, 7)
    assert int.from_bytes(body[-4:], "little") == zlib.crc32(body[:-4])
    assert P.decode_frame(wire[:-1]) == f


@pytest.mark.parametrize("position", [0, 3, 9, 12, -1])
def test_any_flipped_byte_is_detected(position):
    wire = bytearray(P.encode_frame(frame(payload=bytes(range(1, 40)))))
    body = bytearray(cobs.decode(bytes(wire[:-1])))
    body[position] ^= 0x10
    with pytest.raises(P.ProtocolError) as e:
        P.decode_frame(cobs.encode(bytes(body)))
    assert e.value.code == P.ErrorCode.BAD_CRC


def test_length_field_must_match_payload():
    body = P.HEADER.pack(1, 3, 0, 1, 5) + b"abc"
    with pytest.raises(P.ProtocolError, match="header says 5 B of payload, frame holds 3 B"):
        P.decode_frame(cobs.encode(body + P.CRC.pack(zlib.crc32(body))))


def test_short_and_bad_cobs_chunks_are_named():
    with pytest.raises(P.ProtocolError, match="shorter than header and CRC"):
        P.decode_frame(cobs.encode(b"\x01\x02"))
    with pytest.raises(P.ProtocolError, match="bad COBS encoding"):
        P.decode_frame(b"\x05\x01")


@pytest.mark.parametrize("values, dtype", [
    ([0, 255], "<u1"), ([-128, 127], "<i1"), ([0, 256], "<u2"), ([-1, 200], "<i2"),
    ([0, 65536], "<u4"), ([-40000, 5], "<i4"), ([0, 2**32], "<i8"), ([-(2**63), 2**63 - 1], "<i8"),
])
def test_arrays_use_the_narrowest_type(values, dtype):
    a = np.array(values, dtype=np.int64).reshape(1, 2)
    packed = P.pack_array(a)
    assert len(packed) == 2 + 4 * 2 + 2 * np.dtype(dtype).itemsize
    out, end = P.unpack_array(packed)
    assert end == len(packed) and out.dtype == np.int64 and out.shape == (1, 2)
    np.testing.assert_array_equal(out, a)


def test_big_array_round_trip_is_exact():
    rng = np.random.default_rng(0)
    a = rng.integers(-(2**40), 2**40, size=(100, 3, 32, 32))
    out, _ = P.unpack_array(P.pack_array(a))
    np.testing.assert_array_equal(out, a)


def test_float_arrays_are_refused():
    with pytest.raises(P.ProtocolError, match="only integer arrays"):
        P.pack_array(np.zeros((1, 4), dtype=np.float32))


def test_truncated_array_names_the_size():
    packed = P.pack_array(np.arange(10).reshape(2, 5))
    with pytest.raises(P.ProtocolError, match=r"array of shape \(2, 5\) needs 10 B, 9 B left"):
        P.unpack_array(packed[:-1])


def test_infer_and_challenge_payloads():
    x = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(P.unpack_infer_request(P.pack_infer_request(x)), x)
    with pytest.raises(P.ProtocolError, match="needs a batch"):
        P.unpack_infer_request(P.pack_infer_request(np.arange(4)))
    raw, labels = x * -300, np.array([1, 2, 3])
    r2, l2 = P.unpack_infer_response(P.pack_outputs(raw, labels), batch=3)
    np.testing.assert_array_equal(r2, raw)
    np.testing.assert_array_equal(l2, labels)
    with pytest.raises(P.ProtocolError, match="3 outputs for a batch of 4"):
        P.unpack_infer_response(P.pack_outputs(raw, labels), batch=4)
    nonce = bytes(range(16))
    n2, x2 = P.unpack_challenge_request(P.pack_challenge_request(nonce, x))
    assert n2 == nonce
    np.testing.assert_array_equal(x2, x)
    digest = P.challenge_digest(nonce, x, raw, labels)
    assert P.unpack_challenge_response(P.pack_challenge_response(raw, labels, digest))[2] == digest
    # the digest binds nonce, inputs and outputs
    assert digest != P.challenge_digest(bytes(16), x, raw, labels)
    assert digest != P.challenge_digest(nonce, x + 1, raw, labels)
    assert digest != P.challenge_digest(nonce, x, raw, labels[::-1])
    with pytest.raises(P.ProtocolError, match="nonce must be 8..64 B"):
        P.pack_challenge_request(b"1234", x)


def test_version_negotiation():
    assert P.negotiate(*P.unpack_hello(P.pack_hello())) == 1
    assert P.negotiate(2, 5) is None
    with pytest.raises(P.ProtocolError, match="HELLO carries 2 B"):
        P.unpack_hello(b"\x01")


def test_error_payload():
    code, msg = P.unpack_error(P.pack_error(P.ErrorCode.BUSY, "later"))
    assert (code, msg) == (P.ErrorCode.BUSY, "later")
    assert P.error_name(code) == "BUSY" and P.error_name(99) == "code 99"


def test_decoder_handles_split_input_and_resyncs_after_garbage():
    frames = [frame(seq=i, payload=bytes([i]) * (i * 37)) for i in range(1, 6)]
    wire = b"".join(P.encode_frame(f) for f in frames)
    # garbage (no delimiter) glued to the front of frame 1, bad bytes between 3 and 4
    cut = wire.index(P.encode_frame(frames[3]))
    stream = b"\x13\x37garbage" + wire[:cut] + b"\xff\xfe\x00" + wire[cut:]
    dec = P.FrameDecoder()
    out = []
    for i in range(0, len(stream), 7):  # byte-dribbled delivery
        out += dec.feed(stream[i:i + 7])
    good = [o for o in out if isinstance(o, P.Frame)]
    bad = [o for o in out if isinstance(o, P.ProtocolError)]
    assert good == frames[1:]  # frame 1 is lost to the garbage glued onto it
    assert len(bad) == 2 and dec.buffered == 0


def test_decoder_drops_overlong_runs_without_buffering_them():
    dec = P.FrameDecoder(max_payload=100)
    out = dec.feed(b"\x01" * 10_000)
    assert out == [] and dec.buffered == 0
    out = dec.feed(b"\x01" * 10 + b"\x00" + P.encode_frame(frame(payload=b"ok")))
    assert isinstance(out[0], P.ProtocolError) and "longer than" in str(out[0])
    assert out[1] == frame(payload=b"ok")


def test_empty_chunks_are_ignored():
    assert P.FrameDecoder().feed(b"\x00\x00\x00") == []


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck),
          database=None, derandomize=True)
@given(st.binary(max_size=300), st.integers(0, 299))
def test_fuzz_decoder_never_crashes_and_keeps_frames_intact(garbage, cut):
    """Random garbage before a good frame: no crash, no hang, the good frame comes out."""
    dec = P.FrameDecoder(max_payload=256)
    good = frame(payload=garbage[:64])
    out = dec.feed(garbage[:cut])
    out += dec.feed(garbage[cut:] + b"\x00" + P.encode_frame(good))
    for item in out:
        assert isinstance(item, (P.Frame, P.ProtocolError))
    assert out[-1] == good
    # anything decoded from garbage passed its CRC, so it is internally consistent
    for item in out[:-1]:
        if isinstance(item, P.Frame):
            assert P.decode_frame(P.encode_frame(item)[:-1]) == item
