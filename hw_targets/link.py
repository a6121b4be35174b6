"""The board's serial line: serve a byte-stream handler on a transport chosen by URL
(`pty://`, `socket://HOST:PORT`) or on a serial device (`/dev/ttyGS0`), with link faults.

Three threads model a UART with DMA: the receiver reads the port at line rate into a queue,
the processor feeds the handler and queues its answers, the transmitter sends them at line
rate through the fault model (bit noise, dropped bytes). Both queues are bounded: a host that
sends faster than the board answers, or never reads, is held back instead of growing the
board's memory. Message-level faults (`hang_after`, `reset_after`) count the handler's answers.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import select
import socket
import threading
import time
import tty
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from fpgaprint.core.errors import InputError, LinkError

log = logging.getLogger("fpgaprint.link")

_POLL = 0.05
RX_CHUNKS = 4  # reads waiting for the processor (each at most 64 KiB)
TX_MESSAGES = 32  # answers waiting for the line


class StreamHandler(Protocol):
    """What a link serves: the binary agent or the MLPerf Tiny text mode."""

    reboot_pending: bool

    def banner(self) -> list[bytes]:
        """Messages sent when the board comes up."""

    def feed(self, data: bytes) -> list[bytes]:
        """Answer the requests completed by `data`; one element per answer."""

    def reboot(self) -> list[bytes]:
        """Drop all state, come up again and return the boot banner."""


@dataclass(frozen=True)
class LinkFaults:
    """Faults of the board's side of the line; every random choice comes from `seed`."""

    baud: int | None = None
    noise_ber: float = 0.0
    drop_rate: float = 0.0
    hang_after: int | None = None
    reset_after: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.baud is not None and self.baud < 10:
            raise InputError(f"--baud must be at least 10, got {self.baud}")
        for name in ("noise_ber", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise InputError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
        for name in ("hang_after", "reset_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {value}")

    @property
    def bytes_per_s(self) -> float | None:
        """8N1 line rate: 10 bit times per byte."""
        return None if self.baud is None else self.baud / 10.0


class ByteFaults:
    """Flips bits with probability `ber` each and drops bytes with probability `drop_rate`."""

    def __init__(self, ber: float, drop_rate: float, seed: int):
        self.ber, self.drop_rate = ber, drop_rate
        self.rng = np.random.default_rng(seed)
        self.flipped = 0
        self.dropped = 0

    def apply(self, data: bytes) -> bytes:
        if not data or (self.ber == 0 and self.drop_rate == 0):
            return data
        a = np.frombuffer(data, dtype=np.uint8).copy()
        if self.ber > 0:
            bits = self.rng.random(a.size * 8) < self.ber
            if bits.any():
                self.flipped += int(bits.sum())
                a ^= np.packbits(bits)
        if self.drop_rate > 0:
            keep = self.rng.random(a.size) >= self.drop_rate
            self.dropped += int(a.size - keep.sum())
            a = a[keep]
        return a.tobytes()


class LineClock:
    """Paces bytes at the line rate: `take(n)` returns when n more bytes have crossed.

    `busy` says the bytes followed the previous ones back to back (a full read, the rest of a
    message): a UART keeps shifting bits while its thread wakes up late, so a lateness of up
    to `catch_up` seconds is made up instead of lost; after a longer gap the line was idle.
    """

    catch_up = 0.05

    def __init__(self, bytes_per_s: float | None):
        self.rate = bytes_per_s
        self._t = 0.0

    @property
    def chunk(self) -> int:
        """Bytes per 10 ms slot (the pacing granularity)."""
        return 65536 if self.rate is None else max(1, int(self.rate / 100))

    def take(self, n: int, stop: threading.Event | None = None, busy: bool = False) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        late = now - self._t
        start = self._t if busy and 0 < late <= self.catch_up else max(self._t, now)
        self._t = start + n / self.rate
        delay = self._t - now
        if delay > 0:
            if stop is None:
                time.sleep(delay)
            else:
                stop.wait(delay)


# ---------------------------------------------------------------------------------------------
# transports


class Transport(Protocol):
    url: str

    def read(self, n: int, timeout: float) -> bytes: ...

    def write(self, data: bytes, stop: threading.Event) -> bool: ...

    def close(self) -> None: ...


class PtyTransport:
    """A pseudo-terminal: the board holds the master, the host opens `url` (/dev/pts/N)."""

    def __init__(self):
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo or line editing before the host configures the port
        os.set_blocking(self._master, False)
        self.url = os.ttyname(self._slave)

    def read(self, n: int, timeout: float) -> bytes:
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self._master, n)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:  # no host side open
                time.sleep(timeout)
                return b""
            raise

    def write(self, data: bytes, stop: threading.Event, patience: float = 1.0) -> bool:
        """Write all of `data`; False when the host stops reading for `patience` seconds."""
        return _write_fd(self._master, data, stop, patience)

    def close(self) -> None:
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class TcpTransport:
    """A TCP listener; one host at a time, as on a serial line. `url` is socket://host:port."""

    def __init__(self, host: str, port: int):
        try:
            self._server = socket.create_server((host, port))
        except OSError as e:
            raise LinkError(f"cannot listen on {host}:{port}: {e}") from None
        self._server.setblocking(False)
        self._conn: socket.socket | None = None
        self.url = f"socket://{host}:{self._server.getsockname()[1]}"

    def read(self, n: int, timeout: float) -> bytes:
        conn = self._conn
        if conn is None:
            ready, _, _ = select.select([self._server], [], [], timeout)
            if ready:
                try:
                    conn, peer = self._server.accept()
                except BlockingIOError:
                    return b""
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.settimeout(1.0)
                self._conn = conn
                log.info("host connected from %s:%s", *peer[:2])
            return b""
        ready, _, _ = select.select([conn], [], [], timeout)
        if not ready:
            return b""
        try:
            data = conn.recv(n)
        except OSError:
            data = b""
        if not data:
            log.info("host disconnected")
            self._drop(conn)
        return data

    def write(self, data: bytes, stop: threading.Event) -> bool:
        conn = self._conn
        if conn is None:
            return False  # nobody on the line: the bytes are lost, as on a UART
        try:
            conn.sendall(data)
            return True
        except OSError:
            self._drop(conn)
            return False

    def _drop(self, conn: socket.socket) -> None:
        if self._conn is conn:
            self._conn = None
        try:
            conn.close()
        except OSError:
            pass

    def close(self) -> None:
        if self._conn is not None:
            self._drop(self._conn)
        self._server.close()


class SerialTransport:
    """A serial device (a UART, a USB gadget's /dev/ttyGS0, one end of a null-modem pair),
    opened with pyserial in raw mode (8N1, no echo, no flow control) and exclusively: a second
    board on the same device is refused. The device paces the bytes; `url` is its path."""

    def __init__(self, path: str, baud: int):
        import serial

        try:
            self._ser = serial.Serial(path, baudrate=baud, timeout=0, write_timeout=0,
                                      exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open serial device {path}: {_device_reason(e)}") from None
        self._fd = self._ser.fileno()
        self.url = path

    def read(self, n: int, timeout: float) -> bytes:
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self._fd, n)
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno == errno.EIO:  # the far side hung up (a pty pair's other end closed)
                time.sleep(timeout)
                return b""
            raise

    def write(self, data: bytes, stop: threading.Event, patience: float = 1.0) -> bool:
        """Write all of `data`; False when the line takes nothing for `patience` seconds."""
        return _write_fd(self._fd, data, stop, patience)

    def close(self) -> None:
        try:
            self._ser.close()
        except OSError:
            pass


def _device_reason(e: BaseException) -> str:
    """pyserial's open error in a few words (it repeats the path and the errno in its text)."""
    if "exclusively lock" in str(e):
        return "in use by another program (it holds the device's lock)"
    code = getattr(e, "errno", None)
    return os.strerror(code) if isinstance(code, int) else str(e)


def _write_fd(fd: int, data: bytes, stop: threading.Event, patience: float) -> bool:
    """Write all of `data` to the non-blocking `fd`; False when it takes nothing for
    `patience` seconds."""
    view = memoryview(data)
    while view and not stop.is_set():
        _, ready, _ = select.select([], [fd], [], patience)
        if not ready:
            return False
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue
    return not view


def no_delay(port) -> None:
    """TCP_NODELAY on an open pyserial `socket://` port (its client leaves Nagle's algorithm
    on, so a short command written apart from its terminator waits for the peer's delayed
    ACK, about 40 ms a line). Other ports are left as they are."""
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _parse_pty(url: str) -> tuple:
    if url.rstrip("/") != "pty:":
        raise InputError(f"--port {url!r}: a pty takes no address, give pty://")
    return ()


def _parse_socket(url: str) -> tuple:
    from fpgaprint.core.cliopts import check_host_port

    host, port = check_host_port(url, "--port")
    try:  # a name that resolves to no address is a usage error; an address not here, a link's
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InputError(f"--port {url!r}: {host!r} is not an address ({e.strerror})") from None
    return host, port


# Transports by URL scheme, as pyserial's serial_for_url picks its handlers: `pty://` (a new
# pseudo-terminal; the host opens the /dev/pts/N path printed) and `socket://HOST:PORT`.
# Each entry: (parse the URL into constructor arguments, the transport class). A plain path
# (no scheme) is a serial device.
TRANSPORTS: dict[str, tuple[Callable[[str], tuple], Callable[..., Transport]]] = {
    "pty": (_parse_pty, PtyTransport),
    "socket": (_parse_socket, TcpTransport),
}
DEVICE_BAUD = 115200  # a serial device's line rate unless --baud says otherwise


def _lookup(url: str) -> tuple[Callable[..., Transport], tuple]:
    scheme, sep, _ = url.partition("://")
    if not sep:
        if "\x00" in url or not url.strip():
            raise InputError(f"--port {url!r}: not a device path")
        return SerialTransport, (url,)
    if scheme not in TRANSPORTS:
        raise InputError(f"--port {url!r}: a board serves on "
                         f"{', '.join(s + '://' for s in TRANSPORTS)} or a serial device path "
                         "(/dev/ttyGS0)")
    parse, cls = TRANSPORTS[scheme]
    return cls, parse(url)


def is_device(url: str) -> bool:
    """`url` names a serial device (a path, no scheme): the device paces the line."""
    return "://" not in url


def serve_url(pty: bool = False, tcp: str | None = None, port: str | None = None) -> str:
    """The transport URL from `--port URL` or its shorthands `--pty` and `--tcp HOST:PORT`."""
    given = [g for g in (pty, tcp is not None, port is not None) if g]
    if len(given) != 1:
        raise InputError("give exactly one of --port URL, --pty and --tcp HOST:PORT")
    if pty:
        return "pty://"
    if tcp is not None:
        host, sep, num = tcp.rpartition(":")
        if not sep or not host or not num.isdigit() or int(num) > 65535:
            raise InputError(f"--tcp expects HOST:PORT, got {tcp!r}")
        return f"socket://{tcp}"
    return port


def check_serve_url(url: str) -> str:
    """`url` if a board can serve on it; InputError naming --port otherwise (opens nothing)."""
    _lookup(url)
    return url


def open_transport(url: str, baud: int | None = None) -> Transport:
    """The transport for `url` (`pty://`, `socket://HOST:PORT`, port 0 picks a free port; a
    device path, opened at `baud` or DEVICE_BAUD)."""
    cls, args = _lookup(url)
    if cls is SerialTransport:
        args = (*args, baud or DEVICE_BAUD)
    return cls(*args)


# ---------------------------------------------------------------------------------------------
# the link


class BoardLink:
    """Serves `handler` on `transport` until `stop()`; `stats` counts bytes and events."""

    def __init__(self, transport: Transport, handler: StreamHandler,
                 faults: LinkFaults | None = None):
        self.transport = transport
        self.handler = handler
        self.faults = faults or LinkFaults()
        self.stats = {"bytes_in": 0, "bytes_out": 0, "answers": 0, "reboots": 0,
                      "tx_lost": 0, "hung": False}
        self._bytes = ByteFaults(self.faults.noise_ber, self.faults.drop_rate, self.faults.seed)
        self._rx_clock = LineClock(self.faults.bytes_per_s)
        self._tx_clock = LineClock(self.faults.bytes_per_s)
        # bounded: a host that floods and never reads holds the board still (as a full UART
        # FIFO does), it cannot grow the board's memory
        self._rx: queue.Queue[bytes] = queue.Queue(RX_CHUNKS)
        self._tx: queue.Queue[bytes] = queue.Queue(TX_MESSAGES)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reset_done = False

    @property
    def url(self) -> str:
        return self.transport.url

    def start(self) -> "BoardLink":
        """Send the boot banner, then serve in background threads."""
        for msg in self.handler.banner():
            self._send(msg)
        for target in (self._receive, self._process, self._transmit):
            t = threading.Thread(target=target, name=f"link-{target.__name__[1:]}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.transport.close()

    def __enter__(self) -> "BoardLink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self, stop: threading.Event,
                      ready: Callable[[str], None] | None = None) -> None:
        """Serve until `stop` is set (e.g. by a signal handler); `ready(url)` once serving."""
        self.start()
        try:
            if ready is not None:
                ready(self.url)
            while not stop.wait(0.2):
                if not all(t.is_alive() for t in self._threads):
                    raise LinkError("the board link stopped unexpectedly")
        finally:
            self.stop()

    # -- threads --------------------------------------------------------------------------

    def _receive(self) -> None:
        chunk = self._rx_clock.chunk
        was_full = False
        while not self._stop.is_set():
            data = self.transport.read(chunk, _POLL)
            full = len(data) == chunk
            if data:  # back to back only after a full read: the host had bytes waiting
                self._rx_clock.take(len(data), self._stop, busy=full and was_full)
                self.stats["bytes_in"] += len(data)
                self._put(self._rx, data)
            was_full = full

    def _process(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._rx.get(timeout=_POLL)
            except queue.Empty:
                continue
            parts = [data, *_drain(self._rx)]
            if self.stats["hung"]:
                continue
            try:
                answers = self.handler.feed(b"".join(parts))
            except Exception:
                log.exception("handler failed; rebooting")
                self._reboot()
                continue
            for msg in answers:
                if self.faults.hang_after is not None and \
                        self.stats["answers"] >= self.faults.hang_after:
                    self.stats["hung"] = True
                    log.warning("link fault: hung after %d answers", self.stats["answers"])
                    break
                self.stats["answers"] += 1
                self._put(self._tx, msg)
                if (self.faults.reset_after is not None and not self._reset_done
                        and self.stats["answers"] == self.faults.reset_after):
                    self._reset_done = True
                    log.warning("link fault: reboot after %d answers", self.stats["answers"])
                    self._reboot()
                    break
            else:
                if self.handler.reboot_pending:
                    self._reboot()

    def _reboot(self) -> None:
        """Lose everything not yet processed, come up again and announce it."""
        _drain(self._rx)
        self.stats["reboots"] += 1
        for msg in self.handler.reboot():
            self._put(self._tx, msg)

    def _put(self, q: queue.Queue, item: bytes) -> None:
        """Queue `item`, waiting while the queue is full (until the link stops)."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _transmit(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self._tx.get(timeout=_POLL)
            except queue.Empty:
                continue
            self._send(msg)

    def _send(self, msg: bytes) -> None:
        """One message through the fault model onto the line, paced at the line rate."""
        data = self._bytes.apply(msg)
        chunk = self._tx_clock.chunk
        for i in range(0, len(data), chunk):
            part = data[i:i + chunk]
            self._tx_clock.take(len(part), self._stop, busy=i > 0)
            if self._stop.is_set():
                return
            if self.transport.write(part, self._stop):
                self.stats["bytes_out"] += len(part)
            else:
                self.stats["tx_lost"] += len(data) - i
                return


def _drain(q: queue.Queue) -> list:
    """Everything waiting in `q` now, without blocking."""
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items
