"""`verify` over RFC 2217 (`rfc2217://HOST:PORT`), the network serial port labgrid's
NetworkSerialPort and ser2net provide: PASS on a healthy board, FAIL on a faulty one.

The server is ser2net in miniature (a test double of the network serial server, built on
pyserial's own `serial.rfc2217.PortManager`): it bridges one TCP client to the board's pty.
"""

from __future__ import annotations

import socket
import threading

import pytest
import serial
import serial.rfc2217

from fpgaprint.hw_targets.served import ServedBoard


class _PtyPort:
    """The board's pty as the server's serial port; modem lines are accepted and ignored (a
    pty has none, a USB UART often has none wired either)."""

    def __init__(self, device: str):
        self._s = serial.serial_for_url(device, timeout=0.05)
        self.dtr = self.rts = self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False

    def __getattr__(self, name):
        return getattr(self._s, name)

    def __setattr__(self, name, value):
        if name in ("dtr", "rts", "break_condition", "cts", "dsr", "ri", "cd", "_s"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._s, name, value)


class Rfc2217Server:
    """Serves the serial device `device` as rfc2217://127.0.0.1:PORT (one client at a time)."""

    def __init__(self, device: str):
        self.device = device
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"rfc2217://127.0.0.1:{self.listener.getsockname()[1]}"
        self.alive = True
        self.connections = 0  # clients accepted
        self.threads = [threading.Thread(target=self._serve, daemon=True)]
        self.threads[0].start()

    def _serve(self) -> None:
        while self.alive:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            port = _PtyPort(self.device)
            lock = threading.Lock()

            class Out:
                @staticmethod
                def write(data: bytes) -> None:
                    with lock:
                        conn.sendall(data)

            manager = serial.rfc2217.PortManager(port, Out())
            done = threading.Event()

            def board_to_host() -> None:
                while not done.is_set():
                    try:
                        data = port.read(port.in_waiting or 1)
                        if data:
                            Out.write(b"".join(manager.escape(data)))
                    except (OSError, serial.SerialException):
                        break

            t = threading.Thread(target=board_to_host, daemon=True)
            t.start()
            try:
                while self.alive:
                    data = conn.recv(4096)
                    if not data:
                        break
                    port.write(b"".join(manager.filter(data)))
            except OSError:
                pass
            finally:
                done.set()
                t.join(2)
                conn.close()
                port.close()

    def close(self) -> None:
        self.alive = False
        self.listener.close()


@pytest.fixture
def rfc2217_board(digits_package, keypair):
    servers, boards = [], []

    def start(*faults: str) -> Rfc2217Server:
        board = ServedBoard(digits_package, "--trusted-key", keypair[1], *faults)
        boards.append(board)
        server = Rfc2217Server(board.wait_ready())
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()
    for b in boards:
        b.stop()


def test_verify_over_rfc2217_gives_pass_and_fail(rfc2217_board, run_cli, digits_package,
                                                 keypair, tmp_path):
    healthy = rfc2217_board().url
    flipped = rfc2217_board("--flip-bits", "50", "--seed", "2").url
    code, out, err = run_cli("verify", "--port", healthy, "--package", digits_package,
                             "--trusted-key", keypair[1], "--json", tmp_path / "r.json")
    assert code == 0 and "verdict: PASS" in out, out + err
    code, out, err = run_cli("verify", "--port", flipped, "--package", digits_package,
                             "--trusted-key", keypair[1])
    assert code == 1 and "verdict: FAIL" in out and "): exact:" in out, out + err


def test_the_rfc2217_backend_gets_no_write_timeout(rfc2217_board):
    """Asked on the open port: the refusal costs no second connection to the server."""
    from fpgaprint.harness.client import BoardClient

    server = rfc2217_board()
    with BoardClient(server.url, timeout=2.0) as client:
        assert client.hello()["protocol"] == 1
        assert client.port.write_timeout_applied is False
    assert server.connections == 1
