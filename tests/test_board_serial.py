"""`fpgaprint board serve` on a serial device: one end of a null-modem pair of ptys made by
socat (what a UART or a USB serial gadget is to the agent: a tty device it opens), the host's
`fpgaprint verify` on the other end. The physical board is what cannot exist here; the device,
the agent, the package and the verdict are the real ones."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest
from conftest import first_changing_flip

from fpgaprint.core.errors import LinkError
from fpgaprint.hw_targets.link import SerialTransport, open_transport
from fpgaprint.hw_targets.served import ServedBoard


@pytest.fixture
def null_modem():
    """The two device paths of a socat null-modem pair of ptys (raw, no echo)."""
    if shutil.which("socat") is None:  # .ci/run installs it
        pytest.fail("socat is not installed (apt-get install socat): no null-modem pair")
    proc = subprocess.Popen(["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
                            stderr=subprocess.PIPE, text=True)
    ends: list[str] = []
    deadline = time.monotonic() + 10
    while len(ends) < 2 and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if m := re.search(r"PTY is (/dev/\S+)", line):
            ends.append(m.group(1))
    try:
        assert len(ends) == 2, "socat did not report two ptys"
        yield ends
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()


def _verify(run_cli, port: str, pkg, pub) -> tuple[int, str, str]:
    return run_cli("verify", "--port", port, "--package", pkg, "--trusted-key", pub)


def test_verify_passes_a_board_on_a_serial_device_and_fails_a_flipped_one(
        digits_package, keypair, null_modem, run_cli):
    from fpgaprint.core.golden import GoldenModel
    from fpgaprint.core.package import load_vectors

    pub = keypair[1]
    board_end, host_end = null_modem
    with ServedBoard(digits_package, "--port", board_end, "--baud", "115200",
                     "--trusted-key", pub) as board:
        assert board.port == board_end  # the first stdout line names the device served
        code, out, err = _verify(run_cli, host_end, digits_package, pub)
    assert code == 0, out + err
    assert "PASS" in out

    golden = GoldenModel(digits_package / "model" / "golden.onnx")
    key = [k for k in golden.memories() if k.endswith("/weights")][-1]
    (layer, index, bit), _ = first_changing_flip(
        golden, load_vectors(digits_package)["inputs"], key, step=7)
    with ServedBoard(digits_package, "--port", board_end, "--trusted-key", pub,
                     "--flip", f"{layer}:{index}:{bit}"):
        code, out, err = _verify(run_cli, host_end, digits_package, pub)
    assert code == 1, out + err
    assert "FAIL" in out and "exact" in out


def test_a_device_is_served_exclusively(null_modem):
    board_end, _ = null_modem
    first = open_transport(board_end, 9600)
    try:
        assert isinstance(first, SerialTransport) and first.url == board_end
        with pytest.raises(LinkError, match=f"cannot open serial device {board_end}: in use"):
            open_transport(board_end)
    finally:
        first.close()
    open_transport(board_end).close()  # free again once closed


def test_bytes_cross_the_null_modem_raw(null_modem):
    """No echo, no line editing, no CR/LF translation: every byte value arrives as sent."""
    import threading

    import serial

    board_end, host_end = null_modem
    board = open_transport(board_end)
    data = bytes(range(256)) * 4
    try:
        with serial.Serial(host_end, 115200, timeout=2) as host:
            assert board.write(data, threading.Event())
            assert host.read(len(data)) == data
            host.write(data[::-1])
            got = b""
            deadline = time.monotonic() + 5
            while len(got) < len(data) and time.monotonic() < deadline:
                got += board.read(4096, 0.1)
            assert got == data[::-1]
            assert board.read(4096, 0.05) == b""  # nothing echoed back
    finally:
        board.close()


def test_an_unopenable_device_is_a_link_error(run_cli, digits_package, keypair, tmp_path):
    missing = tmp_path / "ttyNONE"
    code, out, err = run_cli("board", "serve", digits_package, "--port", missing,
                             "--trusted-key", keypair[1])
    assert code == 3 and out == ""
    assert err.strip() == (f"error: cannot open serial device {missing}: "
                           "No such file or directory"), err


def test_serial_transport_reads_nothing_while_idle(null_modem):
    board = open_transport(null_modem[0])
    try:
        t0 = time.monotonic()
        assert board.read(64, 0.2) == b""
        assert time.monotonic() - t0 >= 0.15
    finally:
        board.close()
