"""What the simulated hardware prints is a log: a served rtlsim board's first stdout line is
its port, whatever Verilator says about a faulty design."""

from __future__ import annotations

import signal

import numpy as np

from fpgaprint.core.golden import GoldenModel
from fpgaprint.hw_targets.served import ServedBoard


def test_verilator_warnings_go_to_stderr_and_the_port_comes_first(digits_rtl_package, keypair):
    """A zero weight of a narrow-range layer with its sign bit flipped holds the value the
    range leaves out: finn-rtllib's MVU warns on every use of it, from the power-on self-test
    on, before the board prints its port."""
    weights = GoldenModel(digits_rtl_package / "model" / "golden.onnx").memories()[
        "MVAU_1/weights"]
    assert weights.signed
    index = int(np.flatnonzero(weights.values.ravel() == 0)[0])
    board = ServedBoard(digits_rtl_package, "--backend", "rtlsim", "--trusted-key", keypair[1],
                        "--flip", f"MVAU_1/weights:{index}:{weights.bits - 1}")
    try:
        port = board.wait_ready()
        board.proc.send_signal(signal.SIGTERM)
        rest, err = board.proc.stdout.read(), board.proc.stderr.read()
    finally:
        board.stop()
    assert port.startswith("/dev/pts/"), port
    assert rest == ""
    assert "%Warning" in err and "violates NARROW_WEIGHTS" in err, err[-2000:]
