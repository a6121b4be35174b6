"""`fpgaprint board serve` end to end: a real digits package (FINN+ build), the virtual board in
a subprocess on a real pty / TCP port, the host client and the MLPerf Tiny host against it."""

from __future__ import annotations

import re
import selectors
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fpgaprint.core.errors import LinkError
from fpgaprint.harness.client import BoardClient


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A signed digits package; self-test vectors are random grid inputs labelled by the
    golden model itself (enough for the link; the fingerprint has its own tests)."""
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.compiler.package import finalize_package, write_selftest
    from fpgaprint.core.golden import GoldenModel
    from fpgaprint.core.keys import generate_keypair

    root = tmp_path_factory.mktemp("board")
    out = root / "pkg"
    res = build_model("zoo:digits-mlp", "Pynq-Z1", out, BuildConfig(equivalence_samples=8))
    io = res.report["io"]
    x = np.random.default_rng(0).integers(0, 256, size=(24, *io["input"]["shape"][1:]))
    raw, _, labels = GoldenModel(res.golden_path).run(x)
    write_selftest(out, x, raw, labels, labels, {"checks": ["exact", "fingerprint"],
                                                 "fingerprint_threshold": 0.9})
    priv, pub = generate_keypair(root / "keys")
    finalize_package(out, {"name": "digits-mlp", "board": "Pynq-Z1", "part": "xc7z020clg400-1",
                           "platform": "zynq", "clock_ns": 10.0, "io": io}, key_path=priv)
    return out, pub


class Board:
    """`fpgaprint board serve` as a child process; `port` is its first stdout line."""

    def __init__(self, *args: str, wait: float = 120.0):
        self.proc = subprocess.Popen([sys.executable, "-m", "fpgaprint", "board", "serve",
                                      *map(str, args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.port = self.proc.stdout.readline().strip() if sel.select(wait) else ""
        sel.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()


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
    with Board(pkg, "--pty", "--trusted-key", pub, "--serial", "SN-42", "--log", log) as board:
        assert re.fullmatch(r"/dev/pts/\d+", board.port), board.proc.stderr.read()
        with BoardClient(board.port, timeout=2.0) as client:
            hello = client.hello()
            info = client.info()
            raw, labels = client.infer(v["inputs"])
        assert board.stop() == 0
    assert hello["package_id"] == package_id and hello["serial"] == "SN-42"
    assert hello["board"] == "Pynq-Z1" and hello["backend"] == "virtual"
    assert info["selftest"]["passed"] is True and info["selftest"]["count"] == 24
    np.testing.assert_array_equal(raw, v["golden_raw"])
    np.testing.assert_array_equal(labels, v["golden_labels"])
    text = log.read_text()
    assert "serving" in text and "self-test passed" in text and "stopped" in text


def test_serve_on_tcp_with_model_and_link_faults(package):
    pkg, pub = package
    v = vectors(pkg)
    with Board(pkg, "--tcp", "127.0.0.1:0", "--trusted-key", pub, "--flip-bits", "400",
               "--seed", "3", "--noise-ber", "1e-4") as board:
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
    with Board(pkg, "--pty", "--trusted-key", pub, "--hang-after", "1") as board:
        with BoardClient(board.port, timeout=0.5, retries=1) as client:
            client.hello()
            with pytest.raises(LinkError, match="no valid answer after 2 attempts"):
                client.info()


def test_serve_mlperf_tiny_mode(package):
    from fpgaprint.hw_targets.mlperf import MlperfTinyClient

    pkg, pub = package
    v = vectors(pkg)
    with Board(pkg, "--pty", "--trusted-key", pub, "--protocol", "mlperf-tiny") as board:
        with MlperfTinyClient(board.port, timeout=10.0) as host:
            assert host.name() == "fpgaprint-Pynq-Z1"
            raw, labels = host.classify(v["inputs"][:4], "UINT8")
    np.testing.assert_array_equal(raw, v["golden_raw"][:4])


def test_serve_refuses_a_tampered_package(package, tmp_path):
    pkg, pub = package
    bad = tmp_path / "bad"
    shutil.copytree(pkg, bad)
    policy = bad / "selftest" / "policy.json"
    policy.write_text(policy.read_text().replace("0.9", "0.1"))
    board = Board(bad, "--pty", "--trusted-key", pub)
    assert board.port == ""
    assert board.proc.wait(timeout=30) == 2
    assert "selftest/policy.json" in board.proc.stderr.read()


@pytest.mark.parametrize("args, message", [
    (["--pty", "--tcp", "127.0.0.1:0"], "exactly one of --pty and --tcp"),
    ([], "exactly one of --pty and --tcp"),
    (["--pty", "--flip", "fc0:3"], "expected LAYER:INDEX:BIT, got 'fc0:3'"),
    (["--pty", "--stuck-at", "fc0:3:1"], "expected LAYER:INDEX:BIT:0|1"),
    (["--pty", "--noise-ber", "2"], "--noise-ber must be in [0, 1)"),
])
def test_serve_checks_its_options_before_anything_else(run_cli, tmp_path, args, message):
    code, out, err = run_cli("board", "serve", tmp_path / "no-package", *args)
    assert code == 2 and out == ""
    assert message in err


def test_boards_lists_every_board(run_cli):
    from fpgaprint.core.boards import BOARDS

    code, out, _ = run_cli("boards")
    assert code == 0
    for b in BOARDS.values():
        assert b.name in out and b.part in out
    assert "100 MHz" in out
