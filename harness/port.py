"""The host's end of the line: any pyserial URL opened with the timeouts its backend accepts,
bytes written and answer frames read until a deadline.

pyserial's backends differ: a device or `socket://` takes a `write_timeout`, RFC 2217
(`rfc2217://`, labgrid's network serial ports over ser2net) refuses one (its socket bounds a
write at 5 s instead), and only some have a file descriptor to wait on. `BoardPort` asks each
backend for what it supports and otherwise polls, so every URL works the same way above it.

The first frame after a write that did not finish starts with a delimiter: the partial frame
left in the board's decoder ends there instead of swallowing the request (BoardClient writes
one on opening, for what a previous host left).

Bytes that never form a frame are kept (the first `TEXT_SAMPLE` after the last frame): when
they are text, `foreign_text()` quotes them, so a console on the port (a boot loader, a login
prompt) is named as such instead of only timing out.
"""

from __future__ import annotations

import logging
import os
import select
import time
from collections import deque

import serial

from fpgaprint.core.errors import LinkError, PortUnavailable
from fpgaprint.hw_targets import protocol as P
from fpgaprint.hw_targets.link import no_delay

log = logging.getLogger("fpgaprint.client")

READ_SIZE = 65536
TEXT_SAMPLE = 64  # bytes kept of what arrived since the last frame
TEXT_MIN = 8  # fewer stray bytes than this say nothing


class BoardPort:
    """An open pyserial port that writes whole frames and yields decoded answer frames."""

    def __init__(self, url: str, baud: int, write_timeout: float, stats: dict[str, int]):
        self.url, self.baud = url, baud
        self.write_timeout = write_timeout
        self.stats = stats
        self.write_timeout_applied = False
        self._ser: serial.SerialBase | None = None
        self._fd: int | None = None
        self._decoder = P.FrameDecoder(P.MAX_PAYLOAD)
        self._frames: deque[P.Frame | P.ProtocolError] = deque()
        self._resync = False  # the next write starts with a delimiter
        self._stray = bytearray()  # the first bytes since the last frame
        self._stray_delimited = False  # a delimiter came among them: framed, if damaged

    # -- opening ------------------------------------------------------------------------

    def open(self) -> None:
        """Open the port; a write timeout is set where the backend takes one (asked on the
        open port: a refusal costs no second connection)."""
        self._ser = self._open()
        try:
            self._apply_write_timeout()
        except (serial.SerialException, ValueError, OSError) as e:
            self.close()
            raise PortUnavailable(f"cannot open board port {self.url}: {os_reason(e)}") from None
        try:
            self._fd = self._ser.fileno()
        except (AttributeError, OSError, ValueError, NotImplementedError):
            self._fd = None
        try:
            self._ser.reset_input_buffer()
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"board port {self.url}: {e}") from None
        self._decoder.reset()
        self._frames.clear()
        self._resync = False
        self._stray.clear()
        self._stray_delimited = False

    def _apply_write_timeout(self) -> None:
        """The write timeout on the open port, where its backend takes one."""
        port = self._port()
        try:
            port.write_timeout = self.write_timeout
            self.write_timeout_applied = True
        except NotImplementedError:  # e.g. rfc2217: "write_timeout is currently not supported"
            log.info("%s: no write timeout on this backend; its own bounds apply", self.url)
            port.write_timeout = None  # the refused value stays set otherwise

    def _open(self) -> serial.SerialBase:
        try:
            port = serial.serial_for_url(self.url, do_not_open=True)
            port.baudrate = self.baud
            port.timeout = 0
            port.open()
            no_delay(port)
            return port
        except (serial.SerialException, ValueError, OSError) as e:
            raise PortUnavailable(f"cannot open board port {self.url}: {os_reason(e)}") from None

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            finally:
                self._ser = None

    def _port(self) -> serial.SerialBase:
        if self._ser is None:
            raise LinkError(f"board port {self.url} is not open (use BoardClient as a context "
                            f"manager or call open())")
        return self._ser

    # -- bytes ----------------------------------------------------------------------------

    def write(self, data: bytes, deadline: float = float("inf")) -> None:
        """Write all of `data`; where the backend takes a write timeout, never past
        `deadline` (monotonic). The first write after a failed one starts with a delimiter
        (module docstring)."""
        port = self._port()
        if self._resync:
            data = P.DELIMITER + data
        self._resync = True  # until this write is whole
        left = deadline - time.monotonic()
        if self.write_timeout_applied and left < (port.write_timeout or float("inf")):
            port.write_timeout = max(left, 0.01)  # the last writes before the deadline
        try:
            port.write(data)
        except serial.SerialTimeoutException:
            raise LinkError(f"board port {self.url}: write of {len(data)} B timed out") from None
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"board port {self.url}: write failed: {e}") from None
        self._resync = False
        self.stats["bytes_sent"] += len(data)

    def _receive(self) -> bool:
        """Read what the board has sent into the frame queue; whether any byte came."""
        try:
            data = self._port().read(READ_SIZE)
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"board port {self.url}: read failed: {e}") from None
        if not data:
            return False
        self.stats["bytes_received"] += len(data)
        if len(self._stray) < TEXT_SAMPLE:
            self._stray += data[:TEXT_SAMPLE - len(self._stray)]
        self._stray_delimited = self._stray_delimited or P.DELIMITER in data
        for item in self._decoder.feed(data):
            if isinstance(item, P.ProtocolError):
                self.stats["bad_frames"] += 1
                log.debug("damaged frame: %s", item)
                self._frames.append(item)
            elif item.is_response:
                self.stats["frames_received"] += 1
                self._frames.append(item)
                self._stray.clear()
                self._stray_delimited = False
        return True

    def foreign_text(self) -> str | None:
        """The start of what arrived since the last frame, when it is text that no frame
        delimits (a console on the port, not a damaged answer); else None."""
        sample = bytes(self._stray)
        if self._stray_delimited or len(sample) < TEXT_MIN:
            return None
        text = sample.decode("ascii", errors="replace")
        if sum(c.isprintable() or c in "\r\n\t" for c in text) < 0.9 * len(text):
            return None
        return " ".join(text.split())[:48] + "…"

    def next_frame(self, deadline: float) -> P.Frame | P.ProtocolError | None:
        """The next answer frame or damaged chunk from the board, or None at `deadline`."""
        idle = 0.0005
        while not self._frames:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self._receive():
                if self._fd is not None:
                    select.select([self._fd], [], [], min(left, 0.1))
                else:
                    time.sleep(min(left, idle))
                    idle = min(idle * 2, 0.005)
                continue
            idle = 0.0005
        return self._frames.popleft()

    def next_good_frame(self, deadline: float) -> P.Frame | None:
        while True:
            item = self.next_frame(deadline)
            if not isinstance(item, P.ProtocolError):
                return item


def os_reason(e: BaseException) -> str:
    """The operating system's reason behind a pyserial error, said once: pyserial wraps the
    OSError and repeats the port in its own text."""
    seen, last = e, e
    while seen is not None:
        if isinstance(seen, OSError) and isinstance(seen.errno, int):
            return os.strerror(seen.errno)
        last, seen = seen, seen.__cause__ or seen.__context__
    return str(last) or type(last).__name__
