"""`fpgaprint verify` and `fpgaprint accept` (exit 0 PASS, 1 FAIL, 2 input error, 3 no verdict)."""

from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np

from fpgaprint.core.errors import LinkError, VerdictFail
from fpgaprint.harness.verdict import FAIL, NO_VERDICT, PASS

_common = [
    click.option("--package", "package", required=True, type=click.Path(path_type=Path),
                 help="deployment package (directory or .tar.gz)"),
    click.option("--timeout", type=click.FloatRange(min=0.01), default=2.0, show_default=True,
                 help="seconds to wait for each answer"),
    click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
                 help="resends per request before giving up"),
    click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True,
                 help="vectors per INFER/CHALLENGE request"),
    click.option("--challenge", type=click.Path(path_type=Path), default=None,
                 help="verifier-held fingerprint set (.npz) for a challenge instead of the "
                      "embedded vectors"),
    click.option("--trusted-key", type=click.Path(path_type=Path), default=None,
                 help="Ed25519 public key the package must be signed with"),
    click.option("--allow-unsigned", is_flag=True, help="accept an unsigned package"),
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


def _rng() -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(os.urandom(8), "little"))


@click.command()
@click.option("--port", required=True, help="pyserial URL of the board (/dev/pts/N, socket://…)")
@common
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="write the per-vector JSON report here")
@click.option("--junit", type=click.Path(path_type=Path), default=None,
              help="write a JUnit XML report here")
def verify(port, package, timeout, retries, batch, challenge, trusted_key, allow_unsigned,
           report, junit) -> None:
    """Verify one board against its deployment package and give the verdict."""
    from rich.console import Console

    from fpgaprint.core.atomic import write_json
    from fpgaprint.harness.reports import verify_report, verify_summary, write_verify_junit
    from fpgaprint.harness.verify import challenge_plan, load_package, selftest_plan, verify_board

    with load_package(package, trusted_key, allow_unsigned) as pkg:
        plan = challenge_plan(pkg, challenge, _rng()) if challenge else selftest_plan(pkg)
        outcome = verify_board(port, pkg, plan, timeout=timeout, retries=retries,
                               batch_size=batch)
    if report:
        write_json(report, verify_report(outcome), sort_keys=False)
    if junit:
        write_verify_junit(junit, outcome)
    Console(highlight=False).print(verify_summary(outcome))
    _raise_for(outcome.status, outcome.reason)


@click.command()
@click.option("--ports", required=True, help="comma-separated pyserial URLs, one per board")
@common
@click.option("--db", "db_url", default="sqlite:///accept.db", show_default=True,
              help="SQLAlchemy URL of the results database (postgresql+psycopg://… works)")
@click.option("--junit", type=click.Path(path_type=Path), default=None,
              help="write a JUnit XML report (one testsuite per board, a testcase per check)")
@click.option("--html", type=click.Path(path_type=Path), default=None,
              help="write an HTML report with plots")
@click.option("--station", default=None, help="station name recorded with the run [host name]")
def accept(ports, package, timeout, retries, batch, challenge, trusted_key, allow_unsigned,
           db_url, junit, html, station) -> None:
    """Accept several boards in parallel; every result is committed to the database."""
    from rich.console import Console

    from fpgaprint.harness.accept import accept as run_accept
    from fpgaprint.harness.accept import default_station, parse_ports
    from fpgaprint.harness.db import ResultStore
    from fpgaprint.harness.reports import accept_table, write_accept_html, write_accept_junit
    from fpgaprint.harness.verify import challenge_plan, load_package, selftest_plan

    port_list = parse_ports(ports)
    with load_package(package, trusted_key, allow_unsigned) as pkg:
        if challenge:
            challenge_plan(pkg, challenge, _rng())  # validate once before any board is touched
        station = station or default_station()

        def plan_for(_port: str):
            return challenge_plan(pkg, challenge, _rng()) if challenge else selftest_plan(pkg)

        console = Console(highlight=False)
        with ResultStore(db_url) as store:
            result = run_accept(port_list, pkg, plan_for, store, station, timeout=timeout,
                                retries=retries, batch_size=batch, console=console)
            db_shown = store.url
        if junit:
            write_accept_junit(junit, result.outcomes, station)
        if html:
            threshold = plan_for(port_list[0]).policy.fingerprint_threshold
            meta = {"station": station, "run": result.run_id, "database": db_shown,
                    "package": pkg.manifest.get("name", ""), "package_id": pkg.package_id,
                    "mode": "challenge" if challenge else "selftest", "verdict": result.status}
            write_accept_html(html, result.outcomes, meta, threshold)
    console.print(accept_table(result.outcomes))
    console.print(f"run {result.run_id} in {db_shown}: [bold]{result.status}[/]")
    failed = [o for o in result.outcomes if o.status != PASS]
    reason = "; ".join(f"{o.port}: {o.status} ({o.reason})" for o in failed)
    _raise_for(result.status, reason)
