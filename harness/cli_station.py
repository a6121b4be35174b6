"""`fpgaprint station`: the OpenHTF station (harness/openhtf_station.py) headless on one board.

Prints one line per phase and the verdict on stdout; OpenHTF's own log goes to stderr. The
verdict and exit code are `fpgaprint verify`'s for the same board (0 PASS, 1 FAIL, 2 input
error, 3 no verdict: OpenHTF outcome ERROR), by the rule of `openhtf_station.NoVerdict`.
"""

from __future__ import annotations

from pathlib import Path

import click

from fpgaprint.core.cliopts import (
    FPSET,
    PACKAGE,
    Number,
    OutputPath,
    option,
    port_option,
    seconds,
    trust_options,
)


@click.command()
@port_option
@click.option("--package", required=True, type=click.Path(path_type=Path), metavar=PACKAGE,
              help="deployment package (directory or .tar.gz) the board should run")
@click.option("--challenge", type=click.Path(path_type=Path), metavar=FPSET,
              help="verifier-held fingerprint set (.npz): adds a challenge phase")
@trust_options
@click.option("--timeout", type=seconds(), default=2.0, show_default=True, metavar="SECONDS",
              help="longest silence for one answer in seconds")
@click.option("--retries", type=Number(int, 0, 100), default=3, show_default=True,
              help="resends of a request to a silent board")
@option("--json", "json_out", type=OutputPath(), default=None, old=("--record",),
        help="write the OpenHTF test record (JSON) here")
def station(port, package, challenge, trusted_key, allow_unsigned, allow_unpinned, timeout,
            retries, json_out) -> None:
    """Run the OpenHTF station on one board: identify, power-on self-test, verify (the
    package's vectors) and, with --challenge, a challenge, each judged as `fpgaprint verify`
    judges it: the same verdict and exit code (0 PASS, 1 FAIL, 2 bad input, 3 no verdict:
    OpenHTF outcome ERROR)."""
    from fpgaprint.harness.cli import shown_verdict
    from fpgaprint.harness.openhtf_station import make_test, run, summary

    test = make_test(package, port, challenge, trusted_key, allow_unsigned, timeout, retries,
                     allow_unpinned=allow_unpinned)
    record = run(test, json_out)
    lines, status, reason = summary(record)
    for line in lines:
        click.echo(line)
    click.echo(f"verdict: {status}" + (f": {reason}" if reason else ""))
    raise shown_verdict(status)
