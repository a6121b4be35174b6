"""`fpgaprint report`: the factory view of an acceptance database (exit 0, 2 input, 3 link)."""

from __future__ import annotations

from pathlib import Path

import click

from fpgaprint.core.cliopts import OutputDir


@click.command()
@click.option("--db", "db_url", required=True, metavar="URL",
              help="SQLAlchemy URL of the results database (postgresql+psycopg://… or "
                   "sqlite:///accept.db)")
@click.option("--since", metavar="WHEN",
              help="only results from then on: a date, a date-time (UTC unless given) or an "
                   "age like 12h, 7d, 2w")
@click.option("--out", required=True, type=OutputDir(),
              help="directory for factory.json, factory.md and factory.html")
def report(db_url: str, since: str | None, out: Path) -> None:
    """The boards that have not passed (with their cause), yield per station, package, day and
    trust, failure causes and retried boards, from every acceptance run in the database."""
    from fpgaprint.core.progress import console as make_console
    from fpgaprint.harness.factory import (
        aggregate,
        load,
        not_passed_lines,
        parse_since,
        summary_table,
        write_report,
    )

    when = parse_since(since)
    console = make_console()  # never wrapped or cut off a terminal
    with console.status(f"reading {db_url.split('@')[-1]}"):
        data = load(db_url, when)
        doc = aggregate(data)
    paths = write_report(doc, out)
    console.print(summary_table(doc))
    for line in not_passed_lines(doc):
        console.print(line, markup=False, soft_wrap=True)
    t = doc["total"]
    console.print(f"{t['boards']} boards, {t['results']} results in {data.url}; reports: "
                  + ", ".join(str(p) for p in paths))
