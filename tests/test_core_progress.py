"""Progress: timestamped lines with a heartbeat off a terminal, nothing without a console."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from fpgaprint.core.progress import Progress


def test_lines_off_a_terminal_never_go_quiet():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    with Progress(console, heartbeat=0.2) as p:
        with p.task("build", total=3) as t:
            t.advance(detail="step streamline")
            time.sleep(0.9)
            t.advance(2)
        p.log("summary line")
    lines = buf.getvalue().splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines), lines
    assert lines[0].endswith("build …")
    assert any("build 1/3: step streamline" in line for line in lines)
    beats = [line for line in lines if re.search(r"build 1/3: step streamline … \d+ s$", line)]
    assert len(beats) >= 2  # at least one line per heartbeat while the step runs
    assert re.search(r"build 3/3: step streamline \(done in \d+\.\d s\)$", lines[-2])
    assert lines[-1].endswith("summary line")


def test_no_console_shows_nothing_and_costs_no_thread():
    with Progress(None) as p:
        assert p._beat is None
        with p.task("x", total=1) as t:
            t.advance()


def test_terminal_gets_bars_not_lines():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with Progress(console, heartbeat=0.05) as p:
        assert p._rich is not None and p._beat is None
        with p.task("train", total=2) as t:
            t.advance(detail="epoch 1")
    assert not re.search(r"^\d\d:\d\d:\d\d ", buf.getvalue(), re.M)


class _Clocked(io.StringIO):
    """Records when each line was written."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def write(self, s: str) -> int:
        self.times += [time.monotonic()] * s.count("\n")
        return super().write(s)


def test_silence_never_reaches_the_heartbeat():
    out = _Clocked()
    console = Console(file=out, force_terminal=False, width=200)
    with Progress(console, heartbeat=1.0) as p, p.task("long step"):
        time.sleep(3.5)
    gaps = [b - a for a, b in zip(out.times, out.times[1:])]
    # a beat is due a poll (0.25 s) before the silence reaches 1 s; 0.5 s of slack for a
    # loaded machine's thread scheduling
    assert len(gaps) >= 3 and max(gaps) < 1.0 + 0.5, gaps


def test_heartbeat_from_the_environment(monkeypatch):
    monkeypatch.setenv("FPGAPRINT_HEARTBEAT_S", "2.5")
    assert Progress(None).heartbeat == 2.5
    monkeypatch.setenv("FPGAPRINT_HEARTBEAT_S", "nonsense")
    assert Progress(None).heartbeat == 10.0


def test_the_console_off_a_terminal_never_wraps_or_cuts(monkeypatch, capsys):
    """A pipe (capsys here): a 300-character line stays one line, a table cell stays whole."""
    from rich.table import Table

    from fpgaprint.core.progress import console

    monkeypatch.delenv("COLUMNS", raising=False)
    c = console()
    assert not c.is_terminal
    long = "reason " * 43  # 301 characters
    c.print(long.strip())
    table = Table("check", "detail")
    table.add_row("exact", long.strip())
    c.print(table)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == long.strip()
    row = next(line for line in out if "exact" in line)
    assert long.strip() in row and "…" not in "".join(out)
    console(stderr=True).print(long.strip())
    assert capsys.readouterr().err == long.strip() + "\n"
