"""A line that misbehaves in ordinary ways: a request right behind a flood nobody read, a
write cut mid-frame, a console instead of a board on the port. Real ptys throughout; the
board is the in-process agent of test_protocol_link."""

from __future__ import annotations

import os
import threading
import time
import tty

import numpy as np
import pytest
from test_protocol_link import MatBackend, serve  # noqa: F401  (fixture)

from fpgaprint.core.errors import LinkError
from fpgaprint.harness.client import BoardClient
from fpgaprint.harness.port import BoardPort
from fpgaprint.hw_targets import protocol as P
from fpgaprint.hw_targets.agent import BoardAgent

FLOOD = P.encode_frame(P.Frame(P.MsgType.INFER, 1, P.pack_array(
    np.random.default_rng(0).integers(0, 256, (16, 64)))))


def _answer_to(fd: int, seq: int, seconds: float) -> P.Frame | None:
    """Read `fd` until an answer numbered `seq` arrives (None after `seconds`)."""
    decoder, end = P.FrameDecoder(), time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        for item in decoder.feed(data):
            if isinstance(item, P.Frame) and item.seq == seq:
                return item
    return None


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            time.sleep(0.002)


def test_the_last_request_of_a_flooded_delivery_is_answered():
    """Beyond its window a delivery earns at most a window of refusals, the rest dropped;
    the request at its end, the one a host that stopped flooding waits for, is answered."""
    agent = BoardAgent(MatBackend())
    wire = b"".join(P.encode_frame(P.Frame(P.MsgType.INFO, s)) for s in range(1, 41))
    probe = P.encode_frame(P.Frame(P.MsgType.HELLO, 999, P.pack_hello()))
    answers = [P.decode_frame(a[:-1]) for a in agent.feed(wire + probe)]
    w = agent.window
    assert [a.seq for a in answers] == [*range(1, 2 * w + 1), 999]
    assert P.unpack_error(answers[-1].payload)[0] == P.ErrorCode.BUSY
    assert agent.counters["dropped"] == 40 - 2 * w


def test_a_probe_written_right_behind_a_never_read_flood_is_answered(serve):  # noqa: F811
    """A host floods a board on a pty with small requests and never reads, until the board,
    held by the full line, drops an answer; then it writes one HELLO right behind them and
    waits: the board answers it (BUSY when it came in the flood's delivery), and a resend is
    served. A window of 1 keeps a delivery's answers to 3, each of which a held board gives
    up after its write patience (1 s)."""
    link, _ = serve(window=1)
    info = P.encode_frame(P.Frame(P.MsgType.INFO, 1))
    probe = P.encode_frame(P.Frame(P.MsgType.HELLO, 999, P.pack_hello()))
    fd = os.open(link.url, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
        end = time.monotonic() + 10.0
        while not link.stats["tx_lost"] and time.monotonic() < end:  # whole frames, no read
            _write_all(fd, info * 64)
        assert link.stats["tx_lost"], "the flood never held the board"
        _write_all(fd, info * 64 + probe)
        answer = _answer_to(fd, 999, 10.0)
        assert answer is not None, "the probe was never answered"
        if answer.type == P.MsgType.ERROR:
            assert P.unpack_error(answer.payload)[0] == P.ErrorCode.BUSY
            os.write(fd, P.encode_frame(P.Frame(P.MsgType.HELLO, 1000, P.pack_hello())))
            answer = _answer_to(fd, 1000, 10.0)
        assert answer.type == P.MsgType.HELLO
    finally:
        os.close(fd)


def test_after_a_write_cut_mid_frame_the_next_frame_starts_with_a_delimiter():
    """A write that times out leaves part of a frame in the board's decoder; the next frame
    must not be read as its continuation."""
    board, host = os.openpty()
    try:
        tty.setraw(board)
        port = BoardPort(os.ttyname(host), 115200, 0.2, {"bytes_sent": 0, "bytes_received": 0,
                                                         "bad_frames": 0, "frames_received": 0})
        port.open()
        try:
            with pytest.raises(LinkError, match="write of 1000000 B timed out"):
                port.write(b"\x01" * 1_000_000)
            os.set_blocking(board, False)
            while True:  # the board side reads the cut frame
                try:
                    os.read(board, 1 << 16)
                except BlockingIOError:
                    break
            port.write(b"frame\x00")
            time.sleep(0.05)
            assert os.read(board, 64) == b"\x00frame\x00"
            port.write(b"next\x00")  # a whole write: no delimiter in front of the next
            time.sleep(0.05)
            assert os.read(board, 64) == b"next\x00"
        finally:
            port.close()
    finally:
        os.close(board)
        os.close(host)


BANNER = (b"U-Boot 2023.01 (Jan 09 2023 - 12:00:00 +0000)\r\n\r\nCPU:   Zynq 7z020\r\n"
          b"DRAM:  512 MiB\r\n", b"Starting kernel ...\r\n", b"\r\npynq login: ")


class _Console(threading.Thread):
    """A boot console on the other end of a pty: powered on by the first byte it hears, then a
    boot log and a login prompt, every 50 ms; it takes what it is sent."""

    def __init__(self, fd: int):
        super().__init__(daemon=True)  # still blocked in its first read: ends with the process
        self.fd, self.halt = fd, threading.Event()

    def run(self) -> None:
        i = 0
        os.read(self.fd, 4096)
        os.set_blocking(self.fd, False)
        while not self.halt.is_set():
            try:
                os.read(self.fd, 4096)
            except BlockingIOError:
                pass
            os.write(self.fd, BANNER[i % len(BANNER)])
            i += 1
            time.sleep(0.05)

    def stop(self) -> None:
        self.halt.set()
        self.join(2)
        os.close(self.fd)


def _console() -> tuple[_Console, int]:
    """(the console, the host's end of its pty)."""
    console_fd, host = os.openpty()
    tty.setraw(console_fd)
    console = _Console(console_fd)
    console.start()
    return console, host


def test_a_console_on_the_port_is_named_with_its_text():
    """A port that streams a boot console: the failure quotes the text and asks whether a
    console is on the port, instead of only counting timeouts."""
    console, host = _console()
    try:
        with pytest.raises(LinkError) as e:
            with BoardClient(os.ttyname(host), timeout=0.3, retries=2, deadline=15) as client:
                client.hello()
        assert str(e.value) == (
            f"HELLO to {os.ttyname(host)}: no valid answer after 3 attempts (timeout; timeout; "
            "timeout); the line carries non-protocol text: 'U-Boot 2023.01 (Jan 09 2023 - "
            "12:00:00 +0000) CP…' — is a console on this port?")
    finally:
        console.stop()
        os.close(host)


def test_verify_against_a_console_says_so_in_its_verdict(digits_package, keypair, run_cli):
    console, host = _console()
    try:
        code, out, _ = run_cli("verify", "--port", os.ttyname(host), "--package",
                               digits_package, "--trusted-key", keypair[1], "--deadline", 20,
                               "--timeout", 0.3, "--retries", 2)
    finally:
        console.stop()
        os.close(host)
    verdict = next(line for line in out.splitlines() if line.startswith("verdict: "))
    assert code == 3 and verdict.startswith("verdict: NO_VERDICT")
    assert ("the line carries non-protocol text: 'U-Boot 2023.01 (Jan 09 2023 - 12:00:00 "
            "+0000) CP…' — is a console on this port?") in verdict


def test_damaged_frames_are_not_taken_for_a_console(serve):  # noqa: F811
    """Noise on a protocol line damages frames but keeps their delimiters: no console is
    suggested."""
    from fpgaprint.hw_targets.link import LinkFaults

    link, _ = serve(faults=LinkFaults(noise_ber=0.05, seed=1))
    with pytest.raises(LinkError) as e:
        with BoardClient(link.url, timeout=0.3, retries=1, deadline=15) as client:
            client.hello()
    assert "non-protocol text" not in str(e.value), str(e.value)
