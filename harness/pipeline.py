"""Requests in flight: pipelining, matching answers by sequence number, retries and timeouts
that adapt to what the line does, and one overall deadline.

A request fails when its deadline passes, when a damaged chunk arrives in its place (answers
come in order), when a later request is answered first, when BOOT announces a reboot, or on
a retryable ERROR. A failed request is sent again under a new sequence number; a batch is
halved after a failure so that frames shrink until they cross a noisy line.

How many times a request may be sent, and how long silence may last, follow the line
(`LinkHealth`): on a line that answers but damages frames the budget grows with the observed
loss, so that a request is lost with probability below `TARGET_LOSS`; silence alone (a hung
board) gets only the configured retries. The silence allowance shrinks to a few times the
slowest recent answer, never below `MIN_SILENCE`; it doubles on each timeout (as TCP backs off
its retransmission timer), and an answer that arrives after its request timed out counts as a
recent answer, so the allowance grows to what a slow board needs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fpgaprint.core.errors import LinkError
from fpgaprint.harness.port import BoardPort
from fpgaprint.hw_targets import protocol as P

log = logging.getLogger("fpgaprint.client")

TARGET_LOSS = 1e-6  # accepted probability that a request is lost for good on a live line
MAX_ATTEMPTS = 64  # sends of one request, whatever the line
MIN_SILENCE = 0.1  # seconds: the shortest silence that counts as a lost answer
SILENCE_FACTOR = 4.0  # times the slowest recent answer
MAX_MALFORMED = 3  # well-framed answers that break the protocol before the board is blamed


@dataclass
class Job:
    """One request of a pipelined exchange."""

    type: P.MsgType
    payload: bytes
    parse: Callable[[bytes], Any]
    start: int = 0
    vectors: int = 0
    attempts: int = 0
    silent: int = 0  # attempts that got no byte of answer
    malformed: int = 0  # answers that passed the CRC but not the protocol
    seq: int = 0
    heard: int = 0  # frames (whole or damaged) heard from the board when it was sent
    sent_at: float = 0.0
    wire: int = 0
    reasons: list[str] = field(default_factory=list)


class Batcher:
    """Cuts a batch into request jobs; the chunk size halves on a failure and grows by one
    vector on each success, so frames shrink until they get through a noisy line."""

    def __init__(self, x: np.ndarray, build: Callable[[np.ndarray], tuple[P.MsgType, bytes]],
                 parse: Callable[[np.ndarray, bytes], Any], chunk: int):
        self.x, self.build, self.parse = x, build, parse
        self.chunk = self.max_chunk = max(1, chunk)
        self.cursor = 0

    def take(self) -> Job | None:
        if self.cursor >= len(self.x):
            return None
        start, self.cursor = self.cursor, min(self.cursor + self.chunk, len(self.x))
        return self._job(start, self.cursor)

    def _job(self, start: int, stop: int) -> Job:
        part = self.x[start:stop]
        mtype, payload = self.build(part)
        return Job(mtype, payload, lambda p: self.parse(part, p), start=start,
                   vectors=stop - start)

    def split(self, job: Job) -> list[Job]:
        self.chunk = max(1, min(self.chunk, job.vectors) // 2)
        stop = job.start + job.vectors
        return [self._job(s, min(s + self.chunk, stop))
                for s in range(job.start, stop, self.chunk)]

    def succeeded(self) -> None:
        self.chunk = min(self.max_chunk, self.chunk + 1)


class LinkHealth:
    """What the line has shown so far: how often a send fails, how late answers come."""

    def __init__(self, timeout: float, retries: int):
        self.timeout, self.retries = timeout, retries
        self.sent = self.failed = 0
        self.delays: deque[float] = deque(maxlen=32)
        self.silence = timeout

    def loss(self) -> float:
        """Estimated probability that one send fails (Laplace's rule)."""
        return (self.failed + 1) / (self.sent + 2)

    def attempts_allowed(self, job: Job) -> int:
        """Sends allowed for `job`: the configured retries while the board stays silent, more
        on a line that answers but damages, enough to lose a request with p < TARGET_LOSS."""
        base = self.retries + 1
        if job.silent >= base:
            return base
        p = min(self.loss(), 0.99)
        need = math.ceil(math.log(TARGET_LOSS) / math.log(p))
        return int(min(max(base, need), MAX_ATTEMPTS))

    def timed_out(self) -> None:
        """No answer within the allowance: back off (double the silence, as TCP does)."""
        self.silence = min(self.timeout, self.silence * 2)

    def answered(self, delay: float) -> None:
        """An answer came `delay` s after its allowance started (line and compute excluded),
        in time or after its request timed out."""
        self.delays.append(max(delay, 0.0))
        if len(self.delays) >= 3:
            self.silence = min(self.timeout, max(MIN_SILENCE, SILENCE_FACTOR * max(self.delays)))



class Pipeline:
    """Runs jobs over a BoardPort with up to `window` frames in flight."""

    def __init__(self, port: BoardPort, health: LinkHealth, stats: dict[str, int]):
        self.port, self.health, self.stats = port, health, stats
        self.window = 1
        self.deadline = math.inf  # monotonic time no wait may pass
        self.vector_s = 0.0  # the board's compute time per vector (bounded)
        self.boot: int | None = None
        self._seq = int.from_bytes(os.urandom(2), "little") % 0xFFFF  # unlike an earlier host
        # requests given up after a timeout: seq -> (allowance start, line and compute part)
        self._timed_out: dict[int, tuple[float, float]] = {}

    # -- sequence, boot -----------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1  # 1..65535; 0 marks unsolicited frames
        return self._seq

    def rebooted(self, frame: P.Frame) -> bool:
        """Whether a BOOT frame announces a reboot not seen before (it loses every request)."""
        try:
            boot = P.unpack_json(frame.payload).get("boot", 0)
            boot = boot if isinstance(boot, int) and not isinstance(boot, bool) else 0
        except P.ProtocolError:
            boot = 0
        if self.boot is not None and boot <= self.boot:
            return False
        self.boot = boot
        self.stats["reboots_seen"] += 1
        log.warning("board rebooted (boot %d)", boot)
        return True

    def heard(self) -> int:
        """Answer frames and damaged chunks received so far: signs of a live board."""
        return self.stats["frames_received"] + self.stats["bad_frames"]

    def wait_until(self, allowance: float) -> float:
        """`now + allowance`, never beyond the overall deadline."""
        return min(time.monotonic() + allowance, self.deadline)

    def check_deadline(self, what: str) -> None:
        if time.monotonic() >= self.deadline:
            raise LinkError(f"{what}: overall deadline reached on {self.port.url}"
                            f"{self.line_note()}")

    def line_note(self) -> str:
        """What a failure message adds when text, not frames, arrives on the line."""
        text = self.port.foreign_text()
        return (f"; the line carries non-protocol text: {text!r} — is a console on this "
                "port?") if text else ""

    def line_time(self, nbytes: int) -> float:
        return nbytes * 10.0 / self.port.baud

    def allowance(self, job: Job, compute: float | None = None) -> float:
        work = compute if compute is not None else 4.0 * self.vector_s * job.vectors
        return self.health.silence + 2.0 * self.line_time(job.wire + 64) + work

    # -- the exchange ---------------------------------------------------------------------

    def run(self, jobs: list[Job], compute: float | None = None,
            batcher: Batcher | None = None, max_attempts: int | None = None
            ) -> list[tuple[Job, Any]]:
        """Run `jobs` and then the batcher's jobs pipelined; (job, parsed answer) for every
        piece, in completion order. `max_attempts` caps the sends of one request."""
        return _Exchange(self, jobs, compute, batcher, max_attempts).run()


class _Exchange:
    """One pipelined exchange: pending jobs, jobs in flight, and what is done."""

    def __init__(self, pipe: Pipeline, jobs: list[Job], compute: float | None,
                 batcher: Batcher | None, max_attempts: int | None):
        self.pipe, self.compute, self.batcher = pipe, compute, batcher
        self.max_attempts = max_attempts or MAX_ATTEMPTS
        self.pending: deque[Job] = deque(jobs)
        self.outstanding: deque[Job] = deque()
        self.done: list[tuple[Job, Any]] = []
        self.progress = time.monotonic()

    def run(self) -> list[tuple[Job, Any]]:
        while self._refill() or self.outstanding:
            self._send_ready()
            head = self.outstanding[0]
            started = max(head.sent_at, self.progress)
            allowance = self.pipe.allowance(head, self.compute)
            frame = self.pipe.port.next_frame(min(started + allowance, self.pipe.deadline))
            if frame is None:
                self.pipe.check_deadline(f"{head.type.name} ({'; '.join(head.reasons[-2:])})"
                                         if head.reasons else head.type.name)
                self.pipe.stats["timeouts"] += 1
                silent = self.pipe.heard() == head.heard
                if len(self.pipe._timed_out) > 4096:
                    self.pipe._timed_out.clear()
                self.pipe._timed_out[head.seq] = (started, allowance - self.pipe.health.silence)
                self.pipe.health.timed_out()
                self.progress = time.monotonic()  # the next request's allowance starts now
                self._fail(head, "timeout", silent=silent)
            elif isinstance(frame, P.ProtocolError):  # answers come in order: the head's is lost
                self._fail(head, f"damaged answer ({frame})", damaged=True)
            else:
                self._answer(frame, started, allowance)
        return self.done

    def _refill(self) -> bool:
        if not self.pending and self.batcher is not None and (job := self.batcher.take()):
            self.pending.append(job)
        return bool(self.pending)

    def _send_ready(self) -> None:
        pipe = self.pipe
        while len(self.outstanding) < pipe.window and self._refill():
            pipe.check_deadline(self.pending[0].type.name)
            job = self.pending.popleft()
            job.seq = pipe.next_seq()
            wire = P.encode_frame(P.Frame(job.type, job.seq, job.payload))
            job.wire, job.sent_at = len(wire), time.monotonic()
            job.heard = pipe.heard()
            pipe.port.write(wire, pipe.deadline)
            pipe.stats["frames_sent"] += 1
            pipe.health.sent += 1
            self.outstanding.append(job)

    def _answer(self, frame: P.Frame, started: float, allowance: float) -> None:
        pipe = self.pipe
        if frame.type == P.MsgType.BOOT:
            if pipe.rebooted(frame):
                for job in reversed(list(self.outstanding)):
                    self._fail(job, "board rebooted", counts=False)
            return
        job = next((j for j in self.outstanding if j.seq == frame.seq), None)
        if job is None:
            late = pipe._timed_out.pop(frame.seq, None)
            if late is not None:  # the board was slower than allowed: a delay sample
                pipe.health.answered(time.monotonic() - late[0] - late[1])
            if frame.type == P.MsgType.ERROR:
                pipe.stats["board_errors"] += 1
                code, msg = P.unpack_error(frame.payload)
                log.info("board error without a request: %s %s", P.error_name(code), msg)
            else:
                pipe.stats["stale"] += 1
            return
        while self.outstanding[0] is not job:  # answers come in order: earlier ones are lost
            self._fail(self.outstanding[0], "answer lost")
        now = time.monotonic()
        self.progress = now
        if frame.type == P.MsgType.ERROR:
            pipe.stats["board_errors"] += 1
            code, msg = P.unpack_error(frame.payload)
            if code not in P.RETRYABLE_ERRORS:
                raise LinkError(f"board at {pipe.port.url} refused {job.type.name}: "
                                f"{P.error_name(code)}: {msg}")
            self._fail(job, f"board error {P.error_name(code)}: {msg}")
            return
        # past the CRC, a wrong answer is a stale one (an earlier host's request with the
        # same number) or the board's doing: retried, but not past MAX_MALFORMED
        if frame.type != job.type:
            self._malformed(job, f"answer of type 0x{frame.type:02x} to {job.type.name}")
            return
        try:
            result = job.parse(frame.payload)
        except P.ProtocolError as e:
            self._malformed(job, f"{job.type.name} answer: {e}")
            return
        pipe.health.answered(now - started - (allowance - pipe.health.silence))
        self.outstanding.popleft()
        self.done.append((job, result))
        if self.batcher is not None:
            self.batcher.succeeded()

    def _malformed(self, job: Job, reason: str) -> None:
        job.malformed += 1
        if job.malformed >= MAX_MALFORMED:
            raise LinkError(f"board at {self.pipe.port.url} broke the protocol: {reason}")
        self._fail(job, f"malformed answer: {reason}")

    def _fail(self, job: Job, reason: str, damaged: bool = False, silent: bool = False,
              counts: bool = True) -> None:
        """Requeue `job` or give up. A damaged answer to a batch that can still shrink costs
        no attempt (the batch is halved), so a vector is sent at most the allowed attempts
        plus log2(chunk) times."""
        pipe = self.pipe
        self.outstanding.remove(job)
        job.reasons.append(reason)
        if counts:
            pipe.health.failed += 1
        shrink = self.batcher is not None and job.vectors > 1
        if not (damaged and shrink):
            job.attempts += 1
        job.silent += silent
        allowed = min(pipe.health.attempts_allowed(job), self.max_attempts)
        if job.attempts >= allowed:
            raise LinkError(f"{job.type.name} to {pipe.port.url}: no valid answer after "
                            f"{len(job.reasons)} attempts ({'; '.join(job.reasons[-4:])})"
                            f"{pipe.line_note()}")
        pipe.stats["retries"] += 1
        log.info("retrying %s (%s)", job.type.name, reason)
        pieces = self.batcher.split(job) if shrink else [job]
        for piece in pieces:
            piece.attempts, piece.silent, piece.malformed = job.attempts, job.silent, \
                job.malformed
            piece.reasons = list(job.reasons)
        self.pending.extendleft(reversed(pieces))
