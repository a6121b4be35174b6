"""`fpgaprint board serve` end to end: a real digits package (FINN+ build), the virtual board in
a subprocess on a real pty / TCP port and the host client against it (the MLPerf Tiny mode is
in test_protocol_mlperf.py). The boards here start as new interpreters (`launch="exec"`), as
`make demo`'s do; the other test files fork theirs from a forkserver."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from fpgaprint.core.errors import InputError, LinkError
from fpgaprint.harness.client import BoardClient
from fpgaprint.hw_targets.served import ServedBoard


@pytest.fixture(scope="module")
def package(digits_package, keypair):
    """The shared signed digits package and its public key."""
    return digits_package, keypair[1]


def vectors(pkg: Path) -> dict:
    from fpgaprint.core.package import load_vectors

    return load_vectors(pkg)


def test_serve_on_a_pty_answers_bit_exactly_and_stops_on_sigterm(package, tmp_path):
    pkg, pub = package
    from fpgaprint.core.package import verify_package

    with verify_package(pkg, trusted_key=pub) as p:
        package_id = p.package_id
    log = tmp_path / "board.log"
    v = vectors(pkg)
    with ServedBoard(pkg, "--pty", "--trusted-key", pub, "--serial", "SN-42",
                     "--log", log, launch="exec") as board:
        assert re.fullmatch(r"/dev/pts/\d+", board.port), board.proc.stderr.read()
        with BoardClient(board.port, timeout=2.0) as client:
            hello = client.hello()
            info = client.info()
            raw, labels = client.infer(v["inputs"])
        assert board.stop() == 0
    assert hello["package_id"] == package_id and hello["serial"] == "SN-42"
    assert hello["board"] == "Pynq-Z1" and hello["backend"] == "virtual"
    assert info["selftest"]["passed"] is True
    assert info["selftest"]["count"] == len(v["inputs"])
    np.testing.assert_array_equal(raw, v["golden_raw"])
    np.testing.assert_array_equal(labels, v["golden_labels"])
    text = log.read_text()
    assert "serving" in text and "self-test passed" in text and "stopped" in text


def test_serve_on_tcp_with_model_and_link_faults(package):
    pkg, pub = package
    v = vectors(pkg)
    with ServedBoard(pkg, "--tcp", "127.0.0.1:0", "--trusted-key", pub, "--flip-bits", "400",
                     "--seed", "3", "--noise-ber", "1e-4", launch="exec") as board:
        assert re.fullmatch(r"socket://127\.0\.0\.1:\d+", board.port), board.proc.stderr.read()
        with BoardClient(board.port, timeout=2.0, retries=6) as client:
            client.hello()
            info = client.info()
            raw, _ = client.infer(v["inputs"])
            stats = dict(client.stats)
    assert info["selftest"]["passed"] is False and info["selftest"]["exact_mismatches"] > 0
    assert (raw != v["golden_raw"]).any()
    assert stats["bad_frames"] > 0  # the noisy line was recovered by retries


def test_serve_hang_fault_gives_link_error(package):
    pkg, pub = package
    with ServedBoard(pkg, "--pty", "--trusted-key", pub, "--hang-after", "1") as board:
        with BoardClient(board.port, timeout=0.5, retries=1) as client:
            client.hello()
            with pytest.raises(LinkError, match="no valid answer after 2 attempts"):
                client.info()


def test_serve_refuses_a_tampered_package(package, tmp_path):
    pkg, pub = package
    bad = tmp_path / "bad"
    shutil.copytree(pkg, bad)
    policy = bad / "selftest" / "policy.json"
    doc = json.loads(policy.read_text())
    doc["fingerprint_threshold"] = 0.1
    policy.write_text(json.dumps(doc))
    board = ServedBoard(bad, "--pty", "--trusted-key", pub, launch="exec")
    try:
        with pytest.raises(LinkError, match="selftest/policy.json"):
            board.wait_ready()
    finally:
        board.stop()
    assert board.proc.returncode == 2


@pytest.mark.parametrize("args, message", [
    (["--pty", "--tcp", "127.0.0.1:0"], "exactly one of --port URL, --pty and --tcp"),
    ([], "exactly one of --port URL, --pty and --tcp"),
    (["--port", ""], "--port '': empty"),
    (["--port", "foo://bar"], "--port 'foo://bar': a board serves on pty://, socket://"),
    (["--port", "socket://127.0.0.1"], "expected socket://HOST:PORT"),
    (["--tcp", "127.0.0.1"], "--tcp expects HOST:PORT"),
    (["--pty", "--baud", "5"], "--baud: expected an integer from 10 to"),
    (["--pty", "--noise-ber", "nan"], "--noise-ber: expected a number at least 0, got 'nan'"),
    (["--pty", "--seed", "-1"], "--seed: expected an integer from 0 to"),
    (["--pty", "--hang-after", "x"], "--hang-after: expected an integer at least 0, got 'x'"),
    (["--pty", "--serial", ""], "--serial '': expected 1 to 64 printable"),
    (["--pty", "--log", "/etc/passwd/board.log"], "--log /etc/passwd/board.log: /etc/passwd "
                                                  "is a file"),
    (["--pty", "--flip", "fc0:3"], "--flip 'fc0:3': expected LAYER:INDEX:BIT"),
    (["--pty", "--stuck-at", "fc0:3:1"], "expected LAYER:INDEX:BIT:0|1"),
    (["--pty", "--noise-ber", "2"], "--noise-ber must be in [0, 1)"),
    (["--pty", "--mlperf-model-id", "ic01"], "--mlperf-model-id: only with --protocol "
                                             "mlperf-tiny"),
    (["--pty", "--protocol", "mlperf-tiny", "--mlperf-model-id", "a b"],
     "MLPerf Tiny model id 'a b'"),
])
def test_serve_checks_its_options_before_anything_else(run_cli, tmp_path, args, message):
    code, out, err = run_cli("board", "serve", tmp_path / "no-package", *args)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1, err


def test_boards_lists_every_board(run_cli):
    from fpgaprint.core.boards import BOARDS

    code, out, _ = run_cli("boards")
    assert code == 0
    for b in BOARDS.values():
        assert b.name in out and b.part in out
    assert "100 MHz" in out


def test_an_unknown_launch_is_refused():
    from fpgaprint.hw_targets.served import set_default_launch

    with pytest.raises(InputError, match="unknown launch 'thread'; valid: exec, forkserver"):
        ServedBoard("pkg", launch="thread")
    with pytest.raises(InputError, match="unknown launch"):
        set_default_launch("thread")
