"""`fpgaprint verify` and `fpgaprint accept` (exit 0 PASS, 1 FAIL, 2 input error, 3 no verdict).

Every input is checked before a board is touched (exit 2 naming the flag); output paths too,
so that a verdict is never lost to a report that cannot be written. If writing a report still
fails, the verdict is printed, the command exits with the verdict's code, and one error line
names the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Callable

import click
import numpy as np

from fpgaprint.core.cliopts import (
    FPSET,
    PACKAGE,
    Number,
    OutputPath,
    distinct_outputs,
    option,
    port_option,
    seconds,
    stderr_console,
    trust_options,
    warn,
)
from fpgaprint.core.errors import InputError, LinkError, VerdictFail
from fpgaprint.harness.verdict import FAIL, NO_VERDICT, PASS
from fpgaprint.harness.verify import DEFAULT_BATCH, LinkSettings

_DEFAULTS = LinkSettings()
MAX_BATCH = 4096


def _path(ctx, param, value: str | None) -> Path | None:
    if value is None:
        return None
    if not value.strip():
        raise InputError(f"--{param.name.replace('_', '-')} {value!r}: empty path")
    return Path(value)


_common = [
    click.option("--package", "package", required=True, callback=_path, metavar=PACKAGE,
                 help="deployment package (directory or .tar.gz)"),
    click.option("--timeout", type=seconds(), default=_DEFAULTS.timeout, show_default=True,
                 metavar="SECONDS",
                 help="longest silence for one answer in seconds (shortened to what the line "
                      "shows)"),
    click.option("--retries", type=Number(int, 0, 100), default=_DEFAULTS.retries,
                 show_default=True,
                 help="resends of a request to a silent board (a line that answers but damages "
                      "frames gets more, from its observed error rate)"),
    click.option("--batch", type=Number(int, 1, MAX_BATCH), default=DEFAULT_BATCH,
                 show_default=True, help="vectors per INFER/CHALLENGE request"),
    click.option("--baud", type=Number(int, 50, 100_000_000), default=_DEFAULTS.baud,
                 show_default=True, metavar="BAUD", help="line rate of the board's serial port"),
    click.option("--deadline", type=seconds(), default=None, metavar="SECONDS",
                 help="seconds one board's verification may take [default: 20 + 10x the line "
                      "time of the vectors + 0.1 per vector]"),
    click.option("--challenge", default=None, callback=_path, metavar=FPSET,
                 help="verifier-held fingerprint set (.npz) for a challenge instead of the "
                      "embedded vectors; must share no input with the package; judged by "
                      "the package's policy like the self-test"),
    click.option("--allow-fingerprint-only", is_flag=True,
                 help="Verify with a package policy that has no integrity check (no exact or "
                      "boundary check): labels at a threshold do not detect weight faults "
                      "(warns on every run and is recorded in every report)."),
    trust_options,
]


def common(f):
    for opt in reversed(_common):
        f = opt(f)
    return f


def _raise_for(status: str, reason: str) -> None:
    """Map a verdict onto the exit-code contract (the CLI entry point turns these into codes)."""
    if status == FAIL:
        raise VerdictFail(f"verdict FAIL: {reason}")
    if status == NO_VERDICT:
        raise LinkError(f"no verdict: {reason}")
    if status != PASS:
        raise LinkError(f"no verdict: unknown status {status!r}")


def shown_verdict(status: str) -> click.exceptions.Exit:
    """The exit of a command that printed its verdict and reason: the verdict's code (0 PASS,
    1 FAIL, 3 anything else), no further line."""
    code = {PASS: 0, FAIL: VerdictFail.exit_code}.get(status, LinkError.exit_code)
    return click.exceptions.Exit(code)


def _rng() -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(os.urandom(8), "little"))


def _write_reports(writers: list[tuple[str, Path | None, Callable[[], None]]]) -> list[str]:
    """Write every report; one error line per report that could not be written (whatever the
    error's message: a plotting library's may run over several lines)."""
    errors = []
    for flag, path, write in writers:
        if path is None:
            continue
        try:
            write()
        except Exception as e:  # a report must never cost the verdict
            if isinstance(e, OSError) and e.strerror:
                why = e.strerror
            else:
                text = " ".join(str(e).split())
                why = f"{type(e).__name__}: {text}" if text else type(e).__name__
                why = why if len(why) <= 300 else why[:299] + "…"
            errors.append(f"{flag} {path}: the report could not be written ({why})")
    return errors


def _load(package, trusted_key, allow_unsigned, allow_unpinned):
    from fpgaprint.harness.verify import load_package

    pkg = load_package(package, trusted_key, allow_unsigned, allow_unpinned)
    if pkg.verification is not None and pkg.verification.warning:
        warn(pkg.verification.warning)
    return pkg


def _plan(pkg, challenge: Path | None, allow_fingerprint_only: bool):
    """The self-test or challenge plan; warns when a policy without integrity check is
    allowed."""
    from fpgaprint.harness.verify import challenge_plan, selftest_plan

    plan = (challenge_plan(pkg, challenge, _rng(), allow_fingerprint_only) if challenge
            else selftest_plan(pkg, allow_fingerprint_only))
    if plan.fingerprint_only:
        warn(f"package {pkg.dir}: its policy {list(plan.policy.checks)} has no integrity "
             "check: a PASS says the labels match, NOT that the weights are intact "
             "(--allow-fingerprint-only)")
    return plan


@click.command()
@port_option
@common
@option("--json", "json_out", type=OutputPath(), default=None, old=("--report",),
        help="write the per-vector JSON report here")
@click.option("--junit", type=OutputPath(), default=None,
              help="write a JUnit XML report here")
def verify(port, package, timeout, retries, batch, baud, deadline, challenge,
           allow_fingerprint_only, trusted_key, allow_unsigned, allow_unpinned, json_out,
           junit) -> None:
    """Verify one board against its deployment package and give the verdict."""
    from fpgaprint.core.atomic import write_json
    from fpgaprint.core.progress import console
    from fpgaprint.harness.reports import verify_report, verify_summary, write_verify_junit
    from fpgaprint.harness.verify import verify_board

    distinct_outputs(**{"--json": json_out, "--junit": junit})
    settings = LinkSettings(timeout, retries, batch, baud, deadline)
    with _load(package, trusted_key, allow_unsigned, allow_unpinned) as pkg:
        plan = _plan(pkg, challenge, allow_fingerprint_only)
        outcome = verify_board(port, pkg, plan, settings)
    errors = _write_reports([
        ("--json", json_out,
         lambda: write_json(json_out, verify_report(outcome), sort_keys=False)),
        ("--junit", junit, lambda: write_verify_junit(junit, outcome)),
    ])
    for line in errors:
        click.echo(f"error: {line}", err=True)
    if outcome.unreachable:  # no board reached: one line, no table of unanswered checks
        raise LinkError(outcome.reason)
    console().print(verify_summary(outcome))  # the verdict and its reason, on stdout
    raise shown_verdict(outcome.status)


def _ports(ctx, param, value: str | None) -> list[str] | None:
    from fpgaprint.harness.accept import parse_ports

    return None if value is None else parse_ports(value)


@click.command()
@click.option("--ports", callback=_ports, metavar="URL,URL,…",
              help="comma-separated pyserial URLs, one per board (with --resume: the boards "
                   "that replace the run's unfinished ones)")
@common
@click.option("--db", "db_url", default="sqlite:///accept.db", show_default=True, metavar="URL",
              help="SQLAlchemy URL of the results database (postgresql+psycopg://… works)")
@click.option("--db-wait", type=seconds(), default=30.0, show_default=True, metavar="SECONDS",
              help="seconds a locked or unreachable database is retried before results are "
                   "spooled to the journal")
@click.option("--journal", type=OutputPath(), default=None,
              help="where results the database refuses are spooled [default: beside a SQLite "
                   "file, else ~/.local/state/fpgaprint/]")
@click.option("--resume", type=Number(int, 1), default=None, metavar="RUN",
              help="finish run RUN: verify its boards without a committed result, then close it")
@click.option("--junit", type=OutputPath(), default=None,
              help="write a JUnit XML report (one testsuite per board, a testcase per check)")
@click.option("--html", type=OutputPath(), default=None,
              help="write an HTML report with plots")
@click.option("--station", default=None, metavar="NAME",
              help="station name recorded with the run [host name]")
def accept(ports, package, timeout, retries, batch, baud, deadline, challenge,
           allow_fingerprint_only, trusted_key, allow_unsigned, allow_unpinned, db_url, db_wait,
           journal, resume, junit, html, station) -> None:
    """Accept several boards in parallel; every result is committed to the database."""
    from fpgaprint.core.progress import console as make_console
    from fpgaprint.harness.accept import accept as run_accept
    from fpgaprint.harness.accept import default_station
    from fpgaprint.harness.accept import resume as resume_run
    from fpgaprint.harness.db import MAX_STATION, Journal, ResultStore
    from fpgaprint.harness.reports import (
        STYLE,
        accept_table,
        conflict_reason,
        plain,
        serial_conflicts,
        write_accept_html,
        write_accept_junit,
    )

    if ports is None and resume is None:
        raise InputError("--ports: required (a comma-separated list of port URLs) unless "
                         "--resume RUN is given")
    if station is not None and (not station.strip() or len(station) > MAX_STATION):
        raise InputError(f"--station {station!r}: expected 1 to {MAX_STATION} characters")
    distinct_outputs(**{"--junit": junit, "--html": html, "--journal": journal})
    settings = LinkSettings(timeout, retries, batch, baud, deadline)
    console = make_console()  # never wrapped or cut off a terminal
    with contextlib.ExitStack() as stack:
        pkg = stack.enter_context(_load(package, trusted_key, allow_unsigned, allow_unpinned))
        # built (and checked) once, before the database is opened or any board is touched
        base = _plan(pkg, challenge, allow_fingerprint_only)
        store = stack.enter_context(ResultStore(db_url, wait=db_wait))
        spool = Journal(journal or Journal.default_path(db_url))
        replayed = store.replay(spool)
        if replayed.committed:
            console.print(plain(f"committed {replayed.committed} spooled result(s) from "
                                f"{spool.path}"))
        if replayed.held:
            warn(f"{spool.path} keeps {replayed.held} result(s) the database refused (each "
                 "with why, under \"rejected\")")
        if replayed.rejected:
            raise InputError(f"--journal {spool.path}: " + "; ".join(replayed.rejected)
                             + ": kept in the journal, marked rejected; nothing was verified")

        def plan_for(_port: str):
            """Each board gets its own random order of the challenge set."""
            if not challenge:
                return base
            return dataclasses.replace(base, order=_rng().permutation(len(base.order)))

        run_id, earlier, earlier_serials = None, [], []
        if resume is not None:
            mode = "challenge" if challenge else "selftest"
            resumed = resume_run(store, resume, pkg.package_id, mode, ports)
            if resumed.finished:
                console.print(plain(f"run {resume} in {store.url} is finished: ")
                              + plain(resumed.finished, "bold"))
                _raise_for(resumed.finished, f"run {resume} finished as {resumed.finished}")
                return
            run_id, station = resume, station or resumed.station
            earlier, ports = resumed.earlier, resumed.ports
            earlier_serials = resumed.earlier_serials
        station = station or default_station()
        if ports:
            result = run_accept(ports, pkg, plan_for, store, station, settings,
                                console=stderr_console(), journal=spool, run_id=run_id,
                                earlier=earlier, earlier_serials=earlier_serials)
        else:  # a resumed run whose boards all have results: only close it
            from fpgaprint.harness.accept import AcceptResult, run_status

            conflicts = serial_conflicts(earlier_serials)
            status = run_status(list(earlier), conflicts)
            store.finish_run(resume, status)
            result = AcceptResult(resume, status, [], conflicts=conflicts)
        db_shown = store.url
        threshold = base.policy.fingerprint_threshold
        meta = {"station": station, "run": result.run_id, "database": db_shown,
                "package": pkg.manifest.get("name", ""), "package_id": pkg.package_id,
                "mode": "challenge" if challenge else "selftest", "verdict": result.status}
        if pkg.verification is not None and pkg.verification.warning:
            meta["trust"] = pkg.verification.warning
        why = result.conflict_of()  # port -> its serial conflict
        conflict_lines = [conflict_reason(serial, where, result.run_id) + ": none of these "
                          "boards passes on this run; give each board its own serial"
                          for serial, where in result.conflicts.items()]
        if conflict_lines:
            meta["serial conflicts"] = "; ".join(conflict_lines)
        errors = _write_reports([
            ("--junit", junit,
             lambda: write_accept_junit(junit, result.outcomes, station, why)),
            ("--html", html,
             lambda: write_accept_html(html, result.outcomes, meta, threshold, why)),
        ])
    console.print(accept_table(result.outcomes, conflicts=why))
    for line in conflict_lines:
        console.print(plain(line, STYLE[NO_VERDICT].replace("bold ", "")))
    console.print(plain(f"run {result.run_id} in {db_shown}: ")
                  + plain(result.status, "bold"))
    if result.spooled:
        errors.append(f"--db {db_shown}: {result.db_error}; {', '.join(result.spooled)} "
                      f"spooled to {spool.path}: committed at the next `fpgaprint accept` with "
                      f"this database, or `fpgaprint accept --resume {result.run_id}`")
    if result.unsaved:
        errors.append(f"--db {db_shown}: {result.db_error}; {', '.join(result.unsaved)} "
                      "could not be saved (the verdicts above are the only record)")
    for what, why in result.rejected.items():
        errors.append(f"--db {db_shown}: {what}: {why}; kept in {spool.path}, marked rejected")
    for line in errors:
        click.echo(f"error: {line}", err=True)
    if result.rejected:
        raise SystemExit(2)
    raise shown_verdict(result.status)  # each board's verdict and cause are in the table
