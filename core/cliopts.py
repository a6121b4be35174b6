"""Command-line values checked once for every command: bounded numbers, port URLs, output
paths, the trust options and the one flag vocabulary (old spellings kept as hidden aliases).
A bad value is an InputError (exit 2) naming the flag."""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from fpgaprint.core.errors import InputError


def _flag(param: click.Parameter | None) -> str:
    if param is None:
        return "value"
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return (param.name or "value").upper()


class Number(click.ParamType):
    """A finite int or float within [lo, hi] (`lo_open`: strictly above lo); anything else is
    an InputError naming the flag: `--count: expected an integer from 1 to 10000, got '0'`."""

    def __init__(self, kind: type = float, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False):
        self.kind, self.lo, self.hi, self.lo_open = kind, lo, hi, lo_open
        self.name = "integer" if kind is int else "number"

    def convert(self, value: Any, param, ctx) -> Any:
        v: Any = None
        if isinstance(value, self.kind) and not isinstance(value, bool):
            v = value
        else:
            try:
                v = self.kind(str(value).strip())
            except ValueError:
                pass
        if v is None or (isinstance(v, float) and not math.isfinite(v)) \
                or (self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)) \
                or (self.hi is not None and v > self.hi):
            what = "an integer" if self.kind is int else "a number"
            raise InputError(f"{_flag(param)}: expected {what}{self.describe()}, got {value!r}")
        return v

    def describe(self) -> str:
        """The range in words, with a leading space ('' when unbounded)."""
        def g(x: float) -> str:
            return f"{x:g}" if self.kind is float else str(int(x))

        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None and not self.lo_open:
            return f" from {g(lo)} to {g(hi)}"
        parts = [] if lo is None else [f"above {g(lo)}" if self.lo_open else f"at least {g(lo)}"]
        parts += [] if hi is None else [f"at most {g(hi)}"]
        return " " + " and ".join(parts) if parts else ""


def seconds(lo: float = 0.0, hi: float = 24 * 3600.0) -> Number:
    """A finite, positive number of seconds (at most a day by default)."""
    return Number(float, lo, hi, lo_open=True)


PYSERIAL_HOST_SCHEMES = ("socket", "rfc2217")


def port_option(f):
    """`--port URL`: one board's port, checked when the command line is parsed."""
    return click.option(
        "--port", required=True, callback=lambda ctx, param, value: check_port_url(value),
        metavar="URL", help="pyserial URL of the board (/dev/ttyUSB0, /dev/pts/N, "
                            "socket://HOST:PORT, rfc2217://HOST:PORT)")(f)


MAX_PORT = 512  # characters of a port or URL (results databases keep it)


def check_port_url(url: str, flag: str = "--port") -> str:
    """A device path or a pyserial URL whose scheme pyserial knows; socket:// and rfc2217://
    need HOST:PORT."""
    text = url.strip()
    if not text:
        raise InputError(f"{flag} {url!r}: empty; give a device path (/dev/ttyUSB0) or a pyserial "
                         "URL (socket://HOST:PORT, rfc2217://HOST:PORT)")
    if "\x00" in text:
        raise InputError(f"{flag} {url!r}: contains a NUL byte")
    if len(text) > MAX_PORT:
        raise InputError(f"{flag} {text[:40]!r}…: longer than {MAX_PORT} characters")
    if "://" not in text:
        return text
    scheme = text.split("://", 1)[0].lower()
    known = _pyserial_schemes()
    if scheme not in known:
        raise InputError(f"{flag} {url!r}: unknown URL scheme {scheme!r}; pyserial knows "
                         f"{', '.join(s + '://' for s in known)}")
    if scheme in PYSERIAL_HOST_SCHEMES:
        check_host_port(text, flag)
    return text


def check_host_port(url: str, flag: str) -> tuple[str, int]:
    """(host, port) of SCHEME://HOST:PORT; InputError naming the flag otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InputError(f"{flag} {url!r}: {e}") from None
    if not parts.hostname or port is None:
        raise InputError(f"{flag} {url!r}: expected {parts.scheme}://HOST:PORT")
    if parts.path not in ("", "/"):
        raise InputError(f"{flag} {url!r}: unexpected path {parts.path!r} after HOST:PORT")
    return parts.hostname, port


def _pyserial_schemes() -> list[str]:
    import serial

    found = set()
    for pkg in serial.protocol_handler_packages:
        spec = importlib.util.find_spec(pkg)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for p in Path(folder).glob("protocol_*.py"):
                found.add(p.stem.removeprefix("protocol_"))
    return sorted(found)


def check_output_path(path: str | Path | None, flag: str) -> Path | None:
    """An output file that can be written: not a folder, under a writable folder (created as
    needed). Checked before any work so that a verdict is never lost to a bad path."""
    if path is None:
        return None
    p = Path(path)
    if not str(path).strip():
        raise InputError(f"{flag} {str(path)!r}: empty path")
    if p.is_dir():
        raise InputError(f"{flag} {p}: is a folder, expected a file path")
    if p.exists() and not p.is_file():
        raise InputError(f"{flag} {p}: exists and is not a regular file")
    return _writable_under(p.parent.resolve(), p, flag)


def check_output_dir(path: str | Path | None, flag: str) -> Path | None:
    """An output folder that can be written: a folder or nothing yet, under a writable folder
    (created as needed). Checked before any work."""
    if path is None:
        return None
    p = Path(path)
    if not str(path).strip():
        raise InputError(f"{flag} {str(path)!r}: empty path")
    if p.exists() and not p.is_dir():
        raise InputError(f"{flag} {p}: exists and is not a folder")
    return _writable_under(p.resolve(), p, flag)


def _writable_under(parent: Path, p: Path, flag: str) -> Path:
    """`p`, once its nearest existing ancestor from `parent` up is a folder this process can
    write in (folders below it are created as needed)."""
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {p}: {parent} is a file, not a folder")
    try:  # what the atomic writer will do there: create a file, then rename it
        fd, probe = tempfile.mkstemp(prefix=".fpgaprint-probe-", dir=parent)
    except OSError:  # permissions, read-only or pseudo file systems (os.access passes root)
        raise InputError(f"{flag} {p}: cannot write in {parent}") from None
    os.close(fd)
    os.unlink(probe)
    return p


def distinct_outputs(**paths: Path | None) -> None:
    """No two output flags name the same file."""
    seen: dict[Path, str] = {}
    for flag, p in paths.items():
        if p is None:
            continue
        key = p.resolve()
        if key in seen:
            raise InputError(f"{flag} {p}: same file as {seen[key]}")
        seen[key] = flag


class OutputPath(click.ParamType):
    """An output file checked with `check_output_path` when the command line is parsed."""

    name = "path"

    def get_metavar(self, param, ctx=None) -> str:
        return "FILE"

    def convert(self, value: Any, param, ctx) -> Path:
        return check_output_path(value, _flag(param))


class OutputDir(OutputPath):
    """An output folder checked with `check_output_dir` when the command line is parsed."""

    def get_metavar(self, param, ctx=None) -> str:
        return "DIR"

    def convert(self, value: Any, param, ctx) -> Path:
        return check_output_dir(value, _flag(param))


# The metavars of the vocabulary: the same kind of value is spelled the same in every command.
PUB = "PUB"  # a public key file (PEM, or 64 hex digits in a file)
KEY = "KEY"  # a private signing key file
FPSET = "FPSET"  # a fingerprint set (.npz): embedded, boundary or challenge
PACKAGE = "PACKAGE"  # a package directory or .tar.gz


def option(*decls: str, old: tuple[str, ...] = (), **attrs: Any):
    """`click.option`, with the `old` spellings of the flag still parsed for one release: each
    is a hidden option that, when used, sets the same value and warns naming the new spelling."""
    primary = click.Option(list(decls), **attrs)
    if old and attrs.get("required"):
        raise ValueError(f"{primary.opts[0]}: a required option cannot have old spellings")

    def deco(f):
        for spelling in old:
            alias = {k: v for k, v in attrs.items()
                     if k not in ("help", "default", "show_default", "required", "callback")}
            f = click.option(
                spelling, f"{primary.name}__{spelling.lstrip('-')}", hidden=True,
                expose_value=False, help=f"Old spelling of {primary.opts[0]}.",
                callback=_old_spelling(spelling, primary, attrs.get("callback")), **alias)(f)
        return click.option(*decls, **attrs)(f)
    return deco


def _old_spelling(spelling: str, new: click.Option, callback):
    def use(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            return
        if ctx.get_parameter_source(new.name) == click.core.ParameterSource.COMMANDLINE:
            raise InputError(f"{spelling}: the old spelling of {new.opts[0]}; give one of them")
        warn(f"{spelling} is now {new.opts[0]} (the old spelling is kept for one release)")
        ctx.params[new.name] = callback(ctx, param, value) if callback else value
        ctx.set_parameter_source(new.name, click.core.ParameterSource.COMMANDLINE)
    return use


def trust_options(f):
    """`--trusted-key PUB` (repeatable), `--allow-unsigned`, `--allow-unpinned`."""
    f = click.option(
        "--allow-unpinned", is_flag=True,
        help="Accept a package whose signer is not a trusted key (warns on every run and is "
             "recorded in every report; not for production).")(f)
    f = click.option(
        "--allow-unsigned", is_flag=True,
        help="Accept a package without a signature (warns on every run; recorded).")(f)
    f = click.option(
        "--trusted-key", "trusted_key", multiple=True, metavar=PUB,
        help="Public key (PEM file or 64 hex digits in a file) the package must be signed "
             "with; repeatable. Without it, the keys provisioned on this host are used "
             "(`fpgaprint keys trust PUB`, trust.toml, $FPGAPRINT_TRUSTED_KEYS).")(f)
    return f


def stderr_console():
    """The console progress and logs go to: stderr, bound now, so that a library's output
    redirected into a log while a step runs never takes the progress lines with it; never
    wrapped or cut off a terminal (core.progress.console)."""
    from fpgaprint.core.progress import console

    return console(stderr=True)


def warn(message: str) -> None:
    """One warning line on stderr."""
    click.echo(f"warning: {message}", err=True)
