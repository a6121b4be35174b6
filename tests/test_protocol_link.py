"""Board agent + link + host client in-process, over a real pty and real TCP.

The backend here is a small deterministic stand-in for the accelerator (raw = x @ W): it
tests the protocol layer; the virtual board's own tests cover the real golden model.
"""

from __future__ import annotations

import re
import time
import zlib

import numpy as np
import pytest
import serial
from cobs import cobs

from fpgaprint.core.errors import InputError, LinkError
from fpgaprint.harness.client import BindingError, BoardClient
from fpgaprint.hw_targets import protocol as P
from fpgaprint.hw_targets.agent import BoardAgent
from fpgaprint.hw_targets.link import (
    BoardLink,
    LinkFaults,
    PtyTransport,
    TcpTransport,
    open_transport,
    serve_url,
)

SHAPE = (8, 8)


class MatBackend:
    """raw = x @ W over the flattened input; labels = argmax(raw)."""

    def __init__(self, fail_with: Exception | None = None, short: bool = False):
        self.W = np.random.default_rng(1).integers(-4, 5, size=(64, 10))
        self.fail_with, self.short = fail_with, short
        self.resets = self.selftests = self.calls = 0
        self.vectors = np.random.default_rng(2).integers(0, 256, size=(5, *SHAPE))
        self.golden = self.vectors.reshape(5, -1) @ self.W

    def identity(self) -> dict:
        return {"board": "Pynq-Z1", "serial": "SN-0001", "package_id": "ab" * 32,
                "bitstream_sha256": None, "backend": "matrix", "name": "mat-8x8"}

    def infer(self, x):
        self.calls += 1
        if x.shape[1:] != SHAPE:
            raise InputError(f"expected input shape {SHAPE}, got {tuple(x.shape[1:])}")
        if self.fail_with is not None:
            raise self.fail_with
        raw = x.reshape(len(x), -1) @ self.W
        if self.short:
            raw = raw[:-1]
        return raw, raw.argmax(axis=1)

    def selftest(self) -> dict:
        self.selftests += 1
        raw = self.vectors.reshape(5, -1) @ self.W
        mismatches = int((raw != self.golden).any(axis=1).sum())
        return {"passed": mismatches == 0, "count": 5, "exact_mismatches": mismatches,
                "label_matches": 5 - mismatches, "seconds": 0.0}

    def reset(self) -> None:
        self.resets += 1


def inputs(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *SHAPE))


def expected(backend: MatBackend, x: np.ndarray):
    raw = x.reshape(len(x), -1) @ backend.W
    return raw, raw.argmax(axis=1)


@pytest.fixture
def serve():
    links = []

    def start(backend=None, faults=None, tcp=False, agent_cls=BoardAgent, **agent_kw):
        backend = backend or MatBackend()
        transport = TcpTransport("127.0.0.1", 0) if tcp else PtyTransport()
        link = BoardLink(transport, agent_cls(backend, **agent_kw), faults).start()
        links.append(link)
        return link, backend

    yield start
    for link in links:
        link.stop()


@pytest.mark.parametrize("tcp", [False, True], ids=["pty", "tcp"])
def test_infer_is_bit_exact_and_batched(serve, tcp):
    link, backend = serve(tcp=tcp)
    assert link.url.startswith("socket://127.0.0.1:" if tcp else "/dev/pts/")
    x = inputs(300)
    with BoardClient(link.url, timeout=1.0) as client:
        hello = client.hello()
        assert hello["protocol"] == 1 and hello["serial"] == "SN-0001"
        assert hello["package_id"] == "ab" * 32 and hello["board"] == "Pynq-Z1"
        raw, labels = client.infer(x)
        info = client.info()
        again = client.selftest()
    want_raw, want_labels = expected(backend, x)
    np.testing.assert_array_equal(raw, want_raw)
    np.testing.assert_array_equal(labels, want_labels)
    assert raw.dtype == np.int64 and labels.shape == (300,)
    assert client.stats["frames_sent"] > 3  # split into several pipelined frames
    assert client.stats["retries"] == 0
    assert info["selftest"]["passed"] is True and info["boot"] == 1
    assert again["count"] == 5 and backend.selftests == 2  # power-on + on request


def test_challenge_answers_are_bound_to_the_nonce(serve):
    link, backend = serve()
    x, nonce = inputs(40), bytes(range(32))
    with BoardClient(link.url, timeout=1.0) as client:
        client.hello()
        raw, labels = client.challenge(nonce, x)
        with pytest.raises(InputError, match="nonce must be 8..64 B"):
            client.challenge(b"short", x)
    np.testing.assert_array_equal(raw, expected(backend, x)[0])
    np.testing.assert_array_equal(labels, expected(backend, x)[1])


class StaleNonceAgent(BoardAgent):
    """Answers challenges with a digest made for another nonce, like a recorded session."""

    def _challenge(self, payload):
        nonce, x = P.unpack_challenge_request(payload)
        raw, labels = self._run(x)
        return P.pack_challenge_response(raw, labels,
                                         P.challenge_digest(b"old-nonce", x, raw, labels))

    _handlers = {**BoardAgent._handlers, P.MsgType.CHALLENGE: _challenge}


def test_challenge_answer_for_another_nonce_is_a_fail(serve):
    link, _ = serve(agent_cls=StaleNonceAgent)
    with BoardClient(link.url, timeout=1.0) as client:
        with pytest.raises(BindingError, match="does not bind the nonce") as e:
            client.challenge(bytes(16), inputs(3))
    assert e.value.exit_code == 1


def _raw_exchange(port: serial.SerialBase, data: bytes, count: int) -> list:
    port.write(data)
    dec, out, deadline = P.FrameDecoder(), [], time.monotonic() + 3
    while len(out) < count and time.monotonic() < deadline:
        out += dec.feed(port.read(max(1, port.in_waiting)))
    return out


def test_garbage_and_bad_frames_get_error_answers_and_the_board_keeps_serving(serve):
    link, _ = serve()
    with serial.serial_for_url(link.url, timeout=0.05) as port:
        port.reset_input_buffer()
        good = P.encode_frame(P.Frame(P.MsgType.INFO, 9))
        body = P.HEADER.pack(1, P.MsgType.INFO, 0, 8, 0)
        corrupt = cobs.encode(body + P.CRC.pack(zlib.crc32(body) ^ 0x10)) + b"\x00"
        unknown = P.encode_frame(P.Frame(0x42, 10))
        future = P.encode_frame(P.Frame(P.MsgType.INFO, 11, version=2))
        answers = _raw_exchange(port, b"\x00line noise\x00" + corrupt + unknown + future
                                + good, 5)
    errors = [P.unpack_error(a.payload) for a in answers if a.type == P.MsgType.ERROR]
    codes = [code for code, _ in errors]
    assert codes[:2] == [P.ErrorCode.BAD_FRAME, P.ErrorCode.BAD_CRC]
    assert (P.ErrorCode.UNKNOWN_COMMAND, "unknown command 0x42") in errors
    assert codes[3] == P.ErrorCode.BAD_VERSION
    assert [a.seq for a in answers] == [0, 0, 10, 11, 9]
    info = P.unpack_json(answers[-1].payload)
    assert answers[-1].type == P.MsgType.INFO and info["errors"] == 4


def test_bad_input_is_refused_with_the_boards_reason_and_not_retried(serve):
    link, backend = serve()
    with BoardClient(link.url, timeout=1.0) as client:
        with pytest.raises(LinkError, match=r"BAD_PAYLOAD: expected input shape \(8, 8\), "
                                            r"got \(4, 4\)"):
            client.infer(np.zeros((2, 4, 4), dtype=np.int64))
    assert client.stats["retries"] == 0 and backend.calls == 1


def test_backend_crash_is_an_internal_error_and_the_board_survives(serve):
    backend = MatBackend(fail_with=RuntimeError("DMA timeout"))
    link, _ = serve(backend=backend)
    with BoardClient(link.url, timeout=1.0) as client:
        with pytest.raises(LinkError, match="INTERNAL: RuntimeError: DMA timeout"):
            client.infer(inputs(2))
        backend.fail_with = None
        raw, _ = client.infer(inputs(2))
    np.testing.assert_array_equal(raw, expected(backend, inputs(2))[0])


def test_a_backend_answering_too_few_rows_never_yields_partial_data(serve):
    link, _ = serve(backend=MatBackend(short=True))
    with BoardClient(link.url, timeout=1.0) as client:
        with pytest.raises(LinkError, match="backend returned raw"):
            client.infer(inputs(10))


def test_client_input_checks():
    client = BoardClient("loop://")
    with pytest.raises(InputError, match="must be integers"):
        client.infer(np.zeros((2, 8, 8)))
    with pytest.raises(InputError, match=r"must be a batch"):
        client.infer(np.zeros(64, dtype=np.int64))


def test_no_board_on_the_line_is_a_link_error():
    with BoardClient("loop://", timeout=0.2, retries=1) as client:  # hears only itself
        with pytest.raises(LinkError, match="HELLO to loop://: no valid answer after 2 "
                                            "attempts"):
            client.hello()
    with pytest.raises(LinkError, match="cannot open board port /dev/nonexistent-tty"):
        BoardClient("/dev/nonexistent-tty").open()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_line_with_dropped_bytes_never_returns_wrong_data(serve, seed):
    link, backend = serve(faults=LinkFaults(noise_ber=1e-4, drop_rate=0.01, seed=seed))
    x = inputs(200, seed=seed)
    results = []
    for retries in (3, 12):
        with BoardClient(link.url, timeout=0.3, retries=retries) as client:
            try:
                results.append(client.infer(x))
            except LinkError as e:
                assert "no valid answer after" in str(e)
                results.append(None)
            assert client.stats["bad_frames"] > 0  # the faults did hit the answers
    want_raw, want_labels = expected(backend, x)
    for got in results:
        if got is not None:
            np.testing.assert_array_equal(got[0], want_raw)
            np.testing.assert_array_equal(got[1], want_labels)
    assert results[1] is not None  # enough retries get through a 1 % drop line


def test_bit_noise_alone_is_recovered_by_retries(serve):
    link, backend = serve(faults=LinkFaults(noise_ber=1e-4, seed=5))
    x = inputs(400)
    with BoardClient(link.url, timeout=0.3) as client:
        client.hello()
        raw, labels = client.infer(x)
    np.testing.assert_array_equal(raw, expected(backend, x)[0])
    assert client.stats["bad_frames"] > 0 and client.stats["retries"] > 0
    assert link.stats["answers"] > client.stats["frames_received"] - 1


def test_hung_board_raises_link_error_within_the_retry_budget(serve):
    link, _ = serve(faults=LinkFaults(hang_after=1))
    with BoardClient(link.url, timeout=0.3, retries=2) as client:
        client.hello()
        t0 = time.monotonic()
        with pytest.raises(LinkError, match=r"INFO to .*: no valid answer after 3 attempts "
                                            r"\(timeout; timeout; timeout\)"):
            client.info()
        assert time.monotonic() - t0 < 3 * (0.3 + 0.1) + 1.0
    assert link.stats["hung"] is True


def test_board_reboot_mid_batch_loses_nothing(serve):
    link, backend = serve(faults=LinkFaults(reset_after=3))
    x = inputs(500)
    with BoardClient(link.url, timeout=0.5, chunk_bytes=1024) as client:
        client.hello()
        raw, labels = client.infer(x)
        info = client.info()
    np.testing.assert_array_equal(raw, expected(backend, x)[0])
    np.testing.assert_array_equal(labels, expected(backend, x)[1])
    assert client.stats["reboots_seen"] == 1 and backend.resets == 1
    assert info["boot"] == 2 and backend.selftests == 2  # power-on self-test ran again


def test_reset_command_reboots_the_board(serve):
    link, backend = serve()
    with BoardClient(link.url, timeout=1.0) as client:
        assert client.hello()["boot"] == 1
        assert client.reset()["boot"] == 2
        assert client.identity is None
        assert client.hello()["boot"] == 2
        raw, _ = client.infer(inputs(3))
    assert backend.resets == 1 and link.stats["reboots"] == 1
    np.testing.assert_array_equal(raw, expected(backend, inputs(3))[0])


def test_line_rate_throttle_bounds_the_transfer_time(serve):
    link, _ = serve(faults=LinkFaults(baud=19200))
    x = inputs(40)
    with BoardClient(link.url, timeout=1.0, baud=19200) as client:
        t0 = time.monotonic()
        client.infer(x)
        elapsed = time.monotonic() - t0
    # 8N1: 1920 B/s each way; the inputs alone are 40 * 64 B
    assert elapsed >= link.stats["bytes_in"] / 1920.0 * 0.95
    assert link.stats["bytes_in"] >= 40 * 64


def test_agent_answers_busy_beyond_its_window():
    agent = BoardAgent(MatBackend(), window=3)
    wire = b"".join(P.encode_frame(P.Frame(P.MsgType.INFO, s)) for s in range(1, 6))
    answers = [P.decode_frame(a[:-1]) for a in agent.feed(wire)]
    assert [a.seq for a in answers] == [1, 2, 3, 4, 5]
    assert [a.type for a in answers] == [P.MsgType.INFO] * 3 + [P.MsgType.ERROR] * 2
    assert P.unpack_error(answers[3].payload)[0] == P.ErrorCode.BUSY


def test_a_flood_in_one_delivery_earns_at_most_window_refusals():
    agent = BoardAgent(MatBackend(), window=3)
    wire = b"".join(P.encode_frame(P.Frame(P.MsgType.INFO, s)) for s in range(1, 41))
    answers = [P.decode_frame(a[:-1]) for a in agent.feed(wire + b"junk\x00" * 10)]
    assert [a.type for a in answers] == [P.MsgType.INFO] * 3 + [P.MsgType.ERROR] * 3
    assert agent.counters["dropped"] == 37 - 3 + 10


def test_agent_reset_drops_the_rest_of_the_input_and_ignores_responses():
    backend = MatBackend()
    agent = BoardAgent(backend)
    echo = P.encode_frame(P.Frame(P.MsgType.INFO, 1, flags=P.Flag.RESPONSE))
    wire = echo + P.encode_frame(P.Frame(P.MsgType.RESET, 2)) + \
        P.encode_frame(P.Frame(P.MsgType.INFO, 3))
    answers = [P.decode_frame(a[:-1]) for a in agent.feed(wire)]
    assert [(a.type, a.seq) for a in answers] == [(P.MsgType.RESET, 2)]
    assert agent.reboot_pending and backend.resets == 0
    banner = P.decode_frame(agent.reboot()[0][:-1])
    assert banner.type == P.MsgType.BOOT and banner.flags & P.Flag.UNSOLICITED
    assert P.unpack_json(banner.payload)["boot"] == 2 and backend.resets == 1
    assert backend.selftests == 2 and not agent.reboot_pending


def test_a_reset_the_agent_refuses_reboots_nothing():
    """A RESET of another protocol version is answered BAD_VERSION: no reboot follows."""
    backend = MatBackend()
    agent = BoardAgent(backend)
    wire = P.encode_frame(P.Frame(P.MsgType.RESET, 77, version=P.PROTOCOL_VERSION + 1))
    (answer,) = [P.decode_frame(a[:-1]) for a in agent.feed(wire)]
    assert answer.type == P.MsgType.ERROR and answer.seq == 77
    assert P.unpack_error(answer.payload)[0] == P.ErrorCode.BAD_VERSION
    assert not agent.reboot_pending and backend.resets == 0


def test_hello_claims_the_compute_time_of_a_loaded_board():
    """A board whose first run loads something (FINN+'s ops, a simulation) claims in HELLO
    the time a vector takes once loaded, so that a host waits for a hung board no longer
    than a working one needs."""
    class ColdStart(MatBackend):
        def infer(self, x):
            if self.calls == 0:
                time.sleep(0.5)  # the one-time load
            return super().infer(x)

        def warm_up(self):
            self.infer(self.vectors[:1])

        def selftest(self):
            self.infer(self.vectors)
            return super().selftest()

    agent = BoardAgent(ColdStart())
    hello = P.unpack_json(agent.handle(P.Frame(P.MsgType.HELLO, 1, P.pack_hello())).payload)
    assert hello["infer_s_per_vector"] < 0.5 / 5 / 2  # half of the load spread over 5 vectors


@pytest.mark.parametrize("kwargs, message", [
    ({"noise_ber": 1.5}, "--noise-ber must be in"), ({"drop_rate": -0.1}, "--drop-rate"),
    ({"baud": 3}, "--baud must be at least 10"), ({"hang_after": -1}, "--hang-after"),
])
def test_link_fault_settings_are_checked(kwargs, message):
    with pytest.raises(InputError, match=message):
        LinkFaults(**kwargs)


def test_transports_are_chosen_by_url():
    for url, prefix in (("pty://", "/dev/pts/"), ("socket://127.0.0.1:0", "socket://127.0.0.1:")):
        t = open_transport(url)
        try:
            assert t.url.startswith(prefix) and t.url != url
        finally:
            t.close()
    assert serve_url(pty=True) == "pty://"
    assert serve_url(tcp="127.0.0.1:0") == "socket://127.0.0.1:0"
    assert serve_url(port="socket://h:1") == "socket://h:1"


@pytest.mark.parametrize("call, message", [
    (lambda: serve_url(), "exactly one of --port URL, --pty and --tcp"),
    (lambda: serve_url(pty=True, tcp="h:1"), "exactly one of"),
    (lambda: serve_url(tcp="nohost"), "--tcp expects HOST:PORT, got 'nohost'"),
    (lambda: open_transport("foo://bar"), "a board serves on pty://, socket://"),
    (lambda: open_transport("foo://bar"), "or a serial device path (/dev/ttyGS0)"),
    (lambda: open_transport(" "), "--port ' ': not a device path"),
    (lambda: open_transport("pty://x"), "a pty takes no address"),
    (lambda: open_transport("socket://127.0.0.1"), "expected socket://HOST:PORT"),
    (lambda: open_transport("socket://127.0.0.1:99999"), "Port out of range"),
])
def test_open_transport_checks_its_arguments(call, message):
    with pytest.raises(InputError, match=re.escape(message)):
        call()


def test_retries_follow_the_line_and_silence_follows_the_board():
    from fpgaprint.harness.pipeline import MAX_ATTEMPTS, MIN_SILENCE, Job, LinkHealth

    h = LinkHealth(timeout=2.0, retries=3)
    job = Job(P.MsgType.INFO, b"", P.unpack_json)
    h.sent, h.failed = 100, 0
    assert h.attempts_allowed(job) == 4  # a clean line: the configured retries
    h.sent, h.failed = 100, 50  # half the sends damaged: enough for p(lost) < 1e-6
    assert h.attempts_allowed(job) == 20
    h.failed = 99
    assert h.attempts_allowed(job) == MAX_ATTEMPTS
    job.silent = 4  # but a board that stays silent gets no more than the retries
    assert h.attempts_allowed(job) == 4
    assert h.silence == 2.0
    for _ in range(3):
        h.answered(0.001)
    assert h.silence == MIN_SILENCE
    h.answered(0.3)  # an answer after its request timed out: the board needs more
    assert h.silence == pytest.approx(1.2)
    h.answered(5.0)
    assert h.silence == 2.0  # never more than --timeout


def test_a_slow_board_is_waited_for_after_one_late_answer(serve):
    """Answers slower than the shrunken silence are timed out once, then waited for."""
    class Slow(MatBackend):
        def infer(self, x):
            if self.calls >= 4:
                time.sleep(0.35)
            return super().infer(x)

    link, backend = serve(backend=Slow())
    x = inputs(12)
    with BoardClient(link.url, timeout=2.0, chunk_bytes=64 * 8) as client:
        client.hello()
        for _ in range(4):
            client.infer(x[:1])
        assert client.health.silence == pytest.approx(0.1)
        raw, _ = client.infer(x)
        assert client.health.silence > 0.35
    np.testing.assert_array_equal(raw, expected(backend, x)[0])
