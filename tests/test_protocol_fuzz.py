"""Fuzzing the board agent: seeded frames, well-formed and not, against the real virtual board
of the digits package. The agent must answer every request frame once, refuse every malformed
payload as BAD_PAYLOAD (never INTERNAL), never raise and never grow its state."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from conftest import in_process_board

from fpgaprint.hw_targets import protocol as P

FRAMES = 12_000
SEED = 20240611


@pytest.fixture(scope="module")
def agent(digits_package, keypair):
    with in_process_board(digits_package, keypair[1]) as agent:
        yield agent


def _array(rng: np.random.Generator) -> bytes:
    """An array encoding, often wrong: bad codes, odd ranks, zero or huge dims, short data."""
    code = int(rng.choice([0x11, 0x01, 0x12, 0x04, 0x13, 0x00, 0x7F, int(rng.integers(256))]))
    ndim = int(rng.choice([0, 1, 2, 2, 3, 9, int(rng.integers(256))]))
    pool = [0, 0xFFFFFFFF] if rng.random() < 0.3 else [0, 1, 2, 64, 8, 0xFFFFFFFF,
                                                      int(rng.integers(1 << 32))]
    dims = [int(rng.choice(pool)) for _ in range(min(ndim, 12))]
    head = bytes((code, ndim)) + b"".join(struct.pack("<I", d) for d in dims)
    return head + rng.bytes(int(rng.integers(0, 200)))


def _good_inputs(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(int(rng.integers(1, 4)), 64))


def _payload(rng: np.random.Generator, mtype: int) -> bytes:
    kind = rng.random()
    if mtype == P.MsgType.HELLO:
        return rng.bytes(int(rng.choice([0, 1, 2, 2, 3])))
    if mtype in (P.MsgType.INFER, P.MsgType.CHALLENGE):
        body = P.pack_array(_good_inputs(rng)) if kind < 0.15 else _array(rng)
        if kind > 0.9:  # a well-formed array of the wrong shape, type or values
            bad = rng.integers(-300, 300, size=tuple(int(d) for d in rng.integers(0, 5, 3)))
            body = P.pack_array(bad)
        if mtype == P.MsgType.CHALLENGE:
            n = int(rng.choice([0, 7, 8, 16, 64, 65, 255]))
            body = bytes((n,)) + rng.bytes(min(n, int(rng.integers(0, 70)))) + body
        return body
    if mtype == P.MsgType.READ:
        t = int(rng.choice([P.MsgType.HELLO, P.MsgType.INFO, P.MsgType.INFER, 0, 0xFF]))
        off = int(rng.choice([0, 1, 48, 1 << 20, 0xFFFFFFFF]))
        length = int(rng.choice([0, 1, 48, 0xFFFF]))
        return struct.pack("<BIH", t, off, length)[: int(rng.integers(0, 8))] + \
            (P.pack_hello() if rng.random() < 0.5 else rng.bytes(3))
    return rng.bytes(int(rng.integers(0, 64)))


def _frames(rng: np.random.Generator, n: int):
    """(wire bytes, whether the board must answer it as a request) for `n` frames."""
    types = [int(t) for t in P.REQUEST_TYPES if t != P.MsgType.RESET] + [0x00, 0x42, 0x7F]
    for i in range(n):
        r = rng.random()
        mtype = int(rng.choice(types))
        frame = P.Frame(mtype, i % 0xFFFF + 1, _payload(rng, mtype),
                        version=int(rng.choice([1, 1, 1, 0, 2])))
        wire = P.encode_frame(frame)
        if r < 0.08:  # garbage between delimiters
            yield rng.bytes(int(rng.integers(1, 80))).replace(b"\x00", b"\x01") + b"\x00", False
        elif r < 0.16:  # a flipped bit: CRC or COBS must catch it
            b = bytearray(wire)
            j = int(rng.integers(len(b) - 1))
            b[j] ^= 1 << int(rng.integers(8))
            yield bytes(b), None
        elif r < 0.2:  # truncated, merged with the next frame
            yield wire[: int(rng.integers(1, len(wire)))], None
        else:
            yield wire, True


def test_agent_survives_fuzzed_frames(agent):
    rng = np.random.default_rng(SEED)
    t0 = time.monotonic()
    answered = internal = requests = 0
    codes: dict[str, int] = {}
    for wire, is_request in _frames(rng, FRAMES):
        requests += bool(is_request)
        answers = agent.feed(wire)
        assert len(answers) <= agent.window + 1
        for a in answers:
            frame = P.decode_frame(a[:-1])
            assert frame.is_response
            answered += 1
            if frame.type == P.MsgType.ERROR:
                code, msg = P.unpack_error(frame.payload)
                codes[P.error_name(code)] = codes.get(P.error_name(code), 0) + 1
                if code == P.ErrorCode.INTERNAL:
                    internal += 1
                    print("INTERNAL:", msg)
        assert agent._decoder.buffered <= agent._decoder.max_chunk
        assert len(agent._read_cache) <= len(P.READABLE)
    elapsed = time.monotonic() - t0
    assert internal == 0, codes
    assert codes.get("BAD_PAYLOAD", 0) > 1000 and codes.get("BAD_CRC", 0) > 100
    assert answered >= requests
    # the board still answers correctly after the storm
    hello = P.decode_frame(agent.feed(P.encode_frame(
        P.Frame(P.MsgType.HELLO, 7, P.pack_hello())))[0][:-1])
    assert hello.type == P.MsgType.HELLO and P.unpack_json(hello.payload)["protocol"] == 1
    assert elapsed < 60, f"{FRAMES} frames took {elapsed:.1f} s"


def test_a_never_reading_flood_holds_the_board_still(digits_package, keypair):
    """The board's queues stay within their bounds while a host floods it and never reads,
    and a fresh host is answered afterwards (memory and time: bench/flood.py)."""
    import threading

    import serial

    from fpgaprint.harness.client import BoardClient
    from fpgaprint.hw_targets.link import RX_CHUNKS, TX_MESSAGES

    frame = P.encode_frame(P.Frame(P.MsgType.INFER, 1, P.pack_array(
        np.random.default_rng(0).integers(0, 256, (16, 64)))))
    with in_process_board(digits_package, keypair[1], pty=True) as link:
        stop = threading.Event()
        peak = {"rx": 0, "tx": 0}

        def watch():
            while not stop.is_set():
                peak["rx"] = max(peak["rx"], link._rx.qsize())
                peak["tx"] = max(peak["tx"], link._tx.qsize())
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            held = 0
            with serial.serial_for_url(link.url, timeout=0, write_timeout=0.05) as host:
                end = time.monotonic() + 3.0  # or until the board holds it with full queues
                while time.monotonic() < end and not (
                        held and peak["rx"] == RX_CHUNKS and peak["tx"] == TX_MESSAGES):
                    try:
                        host.write(frame * 8)
                    except serial.SerialTimeoutException:
                        held += 1
            with BoardClient(link.url, timeout=2.0, deadline=30) as client:
                assert client.hello()["protocol"] == 1
        finally:
            stop.set()
            watcher.join()
    assert held > 0  # the board held the flooding host back
    assert peak["rx"] <= RX_CHUNKS and peak["tx"] <= TX_MESSAGES
