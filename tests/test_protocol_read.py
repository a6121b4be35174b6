"""READ: long single-shot answers fetched in short slices across a lossy line."""

from __future__ import annotations

import zlib

import pytest
from test_protocol_link import MatBackend, serve  # noqa: F401  (fixture)

from fpgaprint.core.errors import LinkError
from fpgaprint.harness.client import BoardClient
from fpgaprint.hw_targets import protocol as P
from fpgaprint.hw_targets.agent import BoardAgent
from fpgaprint.hw_targets.link import LinkFaults


def _ask(agent: BoardAgent, payload: bytes) -> P.Frame:
    return agent.handle(P.Frame(P.MsgType.READ, 1, payload))


def test_read_serves_slices_of_one_kept_answer():
    agent = BoardAgent(MatBackend())
    whole = agent.handle(P.Frame(P.MsgType.HELLO, 1, P.pack_hello())).payload
    first = _ask(agent, P.pack_read_request(P.MsgType.HELLO, 0, 48, P.pack_hello()))
    total, crc, part = P.unpack_read_answer(first.payload)
    assert (total, len(part)) == (len(whole), 48)
    parts = [part]
    while sum(map(len, parts)) < total:
        ans = _ask(agent, P.pack_read_request(P.MsgType.HELLO, sum(map(len, parts)), 48))
        t, c, part = P.unpack_read_answer(ans.payload)
        assert (t, c) == (total, crc)
        parts.append(part)
    joined = b"".join(parts)
    assert zlib.crc32(joined) == crc
    assert P.unpack_json(joined)["package_id"] == "ab" * 32


@pytest.mark.parametrize("payload,message", [
    (P.pack_read_request(P.MsgType.INFO, 48, 48), "no INFO answer to read: start at offset 0"),
    (P.pack_read_request(P.MsgType.INFER, 0, 48), "only HELLO, INFO, SELFTEST answers"),
    (b"\x01", "READ request of 1 B"),
])
def test_bad_reads_get_error_answers(payload, message):
    answer = _ask(BoardAgent(MatBackend()), payload)
    assert answer.type == P.MsgType.ERROR
    code, text = P.unpack_error(answer.payload)
    assert code == P.ErrorCode.BAD_PAYLOAD and message in text


def test_hello_and_info_cross_a_lossy_line(serve):  # noqa: F811
    """At 1 % dropped bytes a ~300-byte HELLO answer survives whole ~5 % of the time and a
    ~600-byte INFO answer ~0.2 %: across three boards and both, slices carry them."""
    slices = 0
    for seed in range(3):
        link, _ = serve(faults=LinkFaults(noise_ber=1e-4, drop_rate=0.01, seed=seed))
        with BoardClient(link.url, timeout=0.3, retries=12) as client:
            ident = client.hello()
            info = client.info()
            assert ident["package_id"] == "ab" * 32 and info["selftest"]["passed"]
            slices += client.stats["slice_reads"]
    assert slices >= 1


class SliceTamperingAgent(BoardAgent):
    """Serves the first slice of a long answer honestly and alters one byte of every later
    slice, keeping the whole answer's length and CRC-32 fields: each frame is intact, the
    answer is not."""

    def _read(self, payload: bytes) -> bytes:
        answer = BoardAgent._read(self, payload)
        _, offset, _, _ = P.unpack_read_request(payload)
        if offset == 0 or len(answer) <= 8:
            return answer
        return answer[:8] + bytes([answer[8] ^ 0x01]) + answer[9:]

    _handlers = {**BoardAgent._handlers, P.MsgType.READ: _read}


def test_an_answer_read_in_slices_is_checked_by_its_whole_crc(serve):  # noqa: F811
    link, _ = serve(agent_cls=SliceTamperingAgent)
    with BoardClient(link.url, timeout=1.0) as client:
        with pytest.raises(LinkError, match="HELLO answer read in slices does not match its "
                                            "CRC-32"):
            client._read(P.MsgType.HELLO, P.pack_hello(), None)
    link, _ = serve()  # the same read from an honest board
    with BoardClient(link.url, timeout=1.0) as client:
        whole = client._read(P.MsgType.HELLO, P.pack_hello(), None)
        assert P.unpack_json(whole)["package_id"] == "ab" * 32
