"""The `fpgaprint` command line: one entry point, subcommands loaded on first use.

Exit codes (contract): 0 pass/success, 1 verdict FAIL, 2 usage or input error,
3 link or board error.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from fpgaprint.core.errors import FpgaprintError

# subcommand name -> "module:attribute"; each package owns its commands.
COMMANDS = {
    "train": "fpgaprint.compiler.cli_build:train",
    "build": "fpgaprint.compiler.cli_build:build",
    "boards": "fpgaprint.hw_targets.cli:boards",
    "keys": "fpgaprint.compiler.cli_package:keys",
    "package": "fpgaprint.compiler.cli_package:package",
    "fingerprint": "fpgaprint.fingerprint.cli:fingerprint",
    "board": "fpgaprint.hw_targets.cli:board",
    "verify": "fpgaprint.harness.cli:verify",
    "accept": "fpgaprint.harness.cli:accept",
    "report": "fpgaprint.harness.cli_report:report",
    "station": "fpgaprint.harness.cli_station:station",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked (fast `--help`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fpgaprint")
def cli() -> None:
    """fpgaprint: compile quantized networks for FPGAs and verify them by fingerprint."""


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, mapping fpgaprint errors onto the contract's exit codes."""
    from fpgaprint.core.liblog import library_output

    try:
        with library_output():  # library warnings never reach the terminal
            rv = cli.main(args=argv, standalone_mode=False)
    except FpgaprintError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(2)
    except click.ClickException as e:  # usage errors: one line naming the option
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(3)
    except OSError as e:  # a path the command could not read or write: an input error
        if e.filename is None or os.environ.get("FPGAPRINT_DEBUG"):
            _unexpected(e)
        also = f" (to {e.filename2})" if e.filename2 is not None else ""
        click.echo(f"error: {e.filename}{also}: {e.strerror or e}", err=True)
        sys.exit(2)
    except Exception as e:
        _unexpected(e)
    sys.exit(rv if isinstance(rv, int) else 0)


def _unexpected(e: Exception) -> None:
    """An unexpected failure is never a verdict: exit 2, the traceback with FPGAPRINT_DEBUG."""
    if os.environ.get("FPGAPRINT_DEBUG"):
        raise e
    click.echo(f"error: unexpected {type(e).__name__}: {e} (FPGAPRINT_DEBUG=1 for the "
               "traceback)", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
