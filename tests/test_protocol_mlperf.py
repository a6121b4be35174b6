"""MLPerf Tiny text mode: the DUT command set, and a runner-style host over a real pty.

The backend is a deterministic stand-in for the accelerator (raw = x @ W).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from fpgaprint.core.errors import InputError, LinkError
from fpgaprint.hw_targets.link import BoardLink, LinkFaults, PtyTransport
from fpgaprint.hw_targets.mlperf import MlperfTinyClient, MlperfTinyHandler, container_dtype


class MatBackend:
    def __init__(self):
        self.W = np.random.default_rng(7).integers(-50, 50, size=(16, 4))
        self.calls = self.resets = 0

    def identity(self) -> dict:
        return {"board": "ZCU104", "serial": "SN-9", "package_id": "cd" * 32,
                "bitstream_sha256": None, "backend": "matrix", "name": "mat-16"}

    def infer(self, x):
        self.calls += 1
        raw = x.reshape(len(x), -1) @ self.W
        return raw, raw.argmax(axis=1)

    def selftest(self) -> dict:
        return {"passed": True, "count": 0, "exact_mismatches": 0, "label_matches": 0,
                "seconds": 0.0}

    def reset(self) -> None:
        self.resets += 1


def run(handler: MlperfTinyHandler, text: str) -> list[list[str]]:
    """Answers (lines) to the commands in `text`."""
    return [answer.decode().split("\r\n")[:-1] for answer in handler.feed(text.encode())]


@pytest.fixture
def handler():
    return MlperfTinyHandler(MatBackend(), (16,), "INT8")


def test_name_profile_and_every_answer_ends_with_ready(handler):
    name, profile, unknown = run(handler, "name%profile%\r\nbogus 1 2%")
    assert name == ["m-name-dut-[fpgaprint-ZCU104]", "m-ready"]
    assert profile[0].startswith("m-profile-[") and profile[1] == "m-model-[mat-16]"
    assert profile[-1] == "m-ready"
    assert unknown == ["e-[Unknown command 'bogus']", "m-ready"]


def test_db_load_infer_results(handler):
    x = np.arange(-8, 8, dtype=np.int8)
    hexed = x.tobytes().hex()
    answers = run(handler, f"db load 16%db {hexed[:20]}%db {hexed[20:]}%infer 3 2%results%")
    assert answers[0] == ["m-[Expecting 16 bytes]", "m-ready"]
    assert answers[1] == ["m-ready"] and answers[2] == ["m-load-done", "m-ready"]
    infer = answers[3]
    assert infer[:3] == ["m-warmup-start-2", "m-warmup-done", "m-infer-start-3"]
    assert re.fullmatch(r"m-lap-us-\d+", infer[3]) and re.fullmatch(r"m-lap-us-\d+", infer[4])
    assert int(infer[4][9:]) >= int(infer[3][9:])
    want = x.astype(np.int64) @ handler.backend.W
    assert infer[5] == "m-infer-done"
    assert infer[6] == "m-results-[" + ",".join(f"{v:.3f}" for v in want) + "]"
    assert answers[4] == [infer[6], "m-ready"]
    assert handler.backend.calls == 5  # 2 warm-ups + 3 timed


def test_commands_split_across_reads_and_default_warmups(handler):
    assert handler.feed(b"db lo") == []
    assert run(handler, "ad 16%") == [["m-[Expecting 16 bytes]", "m-ready"]]
    run(handler, "db " + "01" * 16 + "%")
    answer = run(handler, "infer%")[0]
    assert answer[:3] == ["m-warmup-start-10", "m-warmup-done", "m-infer-start-1"]


@pytest.mark.parametrize("commands, error", [
    ("infer 1 0%", "e-[Input buffer holds 0 bytes, the model takes 16]"),
    ("db 0102%", "e-[Buffer not allocated; send 'db load N' first]"),
    ("db load 0%", "e-[Command 'db load' requires a number of bytes > 0]"),
    ("db load 16%db 123%", "e-[Odd number of hex digits]"),
    ("db load 16%db zz%", "e-[Invalid hex digits 'zz']"),
    ("db load 4%db 01020304%infer 1 0%", "e-[Input buffer holds 4 bytes, the model takes 16]"),
    ("infer 0%", "e-[Inference iterations must be >0]"),
    ("infer x%", "e-[Bad infer arguments 'x']"),
    ("results%", "e-[No inference has run]"),
])
def test_errors_are_reported_and_followed_by_ready(handler, commands, error):
    last = run(handler, commands)[-1]
    assert last == [error, "m-ready"]


def test_reboot_drops_the_buffer(handler):
    run(handler, "db load 16%")
    assert handler.reboot() == [b"m-init-done\r\nm-ready\r\n"]
    assert handler.backend.resets == 1
    assert run(handler, "db 00%") == [["e-[Buffer not allocated; send 'db load N' first]",
                                       "m-ready"]]


@pytest.mark.parametrize("datatype, dtype", [
    ("UINT8", "<u1"), ("INT8", "<i1"), ("UINT4", "<u1"), ("INT16", "<i2"), ("UINT9", "<u2"),
    ("BIPOLAR", "<i1"), ("BINARY", "<u1"), ("INT32", "<i4"),
])
def test_container_dtype(datatype, dtype):
    assert container_dtype(datatype) == np.dtype(dtype)


def test_container_dtype_refuses_non_integers():
    with pytest.raises(InputError, match="needs an integer input datatype, got 'FLOAT32'"):
        container_dtype("FLOAT32")


def test_runner_style_host_over_a_pty():
    backend = MatBackend()
    handler = MlperfTinyHandler(backend, (16,), "INT8")
    x = np.random.default_rng(0).integers(-128, 128, size=(6, 16))
    with BoardLink(PtyTransport(), handler, LinkFaults()) as link:
        with MlperfTinyClient(link.url, timeout=2.0) as host:
            assert host.name() == "fpgaprint-ZCU104"
            raw, labels = host.classify(x, "INT8")
            with pytest.raises(LinkError, match=r"refused 'infer 0 0': e-\[Inference "):
                host.infer(0, 0)
    want = x @ backend.W
    np.testing.assert_array_equal(raw, want)
    np.testing.assert_array_equal(labels, want.argmax(axis=1))
    assert host.bytes_sent > 6 * 16 * 2  # hex doubles every byte
