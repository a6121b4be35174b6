"""`fpgaprint board serve` (a package served as a board on a pty, TCP or a serial device) and
`fpgaprint boards`."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading

import click

from fpgaprint.core.cliopts import PACKAGE, Number, OutputPath, trust_options, warn
from fpgaprint.core.errors import InputError

_LINK_FAULTS = "Link faults (board side of the line)"
_MODEL_FAULTS = "Model faults (virtual and rtlsim backends)"


def _split(value: str, parts: int, fmt: str, option: str) -> list[str]:
    fields = value.rsplit(":", parts - 1)
    if len(fields) != parts or not all(fields):
        raise InputError(f"{option} {value!r}: expected {fmt}")
    return fields


def _check_flips(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        _split(v, 3, "LAYER:INDEX:BIT", "--flip")
    return values


def _check_stuck(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        _split(v, 4, "LAYER:INDEX:BIT:0|1", "--stuck-at")
    return values


def _parse_rom_flips(ctx, param, values: tuple[str, ...]) -> list[tuple[int, int]]:
    """`WORD:BIT` values as (word, bit) pairs."""
    from fpgaprint.hw_targets.faults import parse_rom_flip

    pairs = []
    for v in values:
        _split(v, 2, "WORD:BIT", "--bist-rom-flip")
        try:
            pairs.append(parse_rom_flip(v))
        except InputError as e:
            raise InputError(f"--bist-rom-flip {v!r}: {e}") from None
    return pairs


def _setup_logging(log_file: str | None) -> None:
    root = logging.getLogger("fpgaprint")
    root.setLevel(logging.DEBUG if log_file else logging.ERROR)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.ERROR)
    root.addHandler(console)
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler.setLevel(logging.DEBUG)
        root.addHandler(handler)


@click.group()
def board() -> None:
    """Serve a deployment package as a board."""


def _serial(ctx, param, value: str | None) -> str | None:
    if value is not None and (not value or len(value) > 64 or not value.isprintable()):
        raise InputError(f"--serial {value!r}: expected 1 to 64 printable characters")
    return value


def _port(ctx, param, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise InputError("--port '': empty; give pty://, socket://HOST:PORT or a serial "
                         "device path")
    return value


@board.command()
@click.argument("package", metavar=PACKAGE)
@click.option("--port", "port_url", metavar="URL", callback=_port,
              help="Where to serve: pty:// (a new pseudo-terminal), socket://HOST:PORT "
                   "(port 0: any free port) or a serial device path (/dev/ttyGS0, /dev/ttyPS0).")
@click.option("--pty", "use_pty", is_flag=True, help="Shorthand for --port pty://.")
@click.option("--tcp", metavar="HOST:PORT", help="Shorthand for --port socket://HOST:PORT.")
@click.option("--protocol", type=click.Choice(["binary", "mlperf-tiny"]), default="binary",
              show_default=True, help="Wire protocol the board speaks.")
@click.option("--mlperf-model-id", metavar="ID", help="Model id the MLPerf Tiny mode reports "
              "(the runner's tests.yaml key, e.g. ic01) [package name].")
@click.option("--backend", type=click.Choice(["virtual", "rtlsim", "pynq"]), default="virtual",
              show_default=True, help="virtual: the golden model; rtlsim: the package's "
              "stitched RTL in Verilator; pynq: the bitfile on a PYNQ board.")
@click.option("--serial", "serial_number", metavar="SN", callback=_serial,
              help="Board serial number to report.")
@trust_options
@click.option("--baud", type=Number(int, 10, 100_000_000), metavar="BAUD",
              help=f"{_LINK_FAULTS}: 8N1 line rate (baud/10 bytes/s). On a serial device: "
                   "the device's line rate [115200].")
@click.option("--noise-ber", type=Number(float, 0.0), default=0.0,
              help="Bit error rate of board output.")
@click.option("--drop-rate", type=Number(float, 0.0), default=0.0,
              help="Share of output bytes dropped.")
@click.option("--hang-after", type=Number(int, 0), metavar="K",
              help="Stop answering after K answers.")
@click.option("--reset-after", type=Number(int, 0), metavar="K",
              help="Reboot once after K answers.")
@click.option("--flip-bits", type=Number(int, 0, 10_000_000), default=0, metavar="N",
              help=f"{_MODEL_FAULTS}: flip N random memory bits.")
@click.option("--seed", type=Number(int, 0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the random model and link faults.")
@click.option("--flip", multiple=True, metavar="LAYER:INDEX:BIT", callback=_check_flips,
              help="Flip one memory bit (repeatable).")
@click.option("--stuck-at", multiple=True, metavar="LAYER:INDEX:BIT:0|1",
              callback=_check_stuck, help="Hold one memory bit at 0 or 1 (repeatable).")
@click.option("--swap-model", metavar=PACKAGE, help="Answer with another package's model.")
@click.option("--replay", is_flag=True, help="Answer with stored self-test answers.")
@click.option("--bist-rom-flip", multiple=True, metavar="WORD:BIT", callback=_parse_rom_flips,
              help="rtlsim: flip one bit of the on-chip self-test's input ROM (repeatable).")
@click.option("--log", "log_file", type=OutputPath(), metavar="FILE",
              help="Write the board's log (requests, errors, faults) to FILE.")
def serve(package, port_url, use_pty, tcp, protocol, mlperf_model_id, backend, serial_number,
          trusted_key, allow_unsigned, allow_unpinned, baud, noise_ber, drop_rate, hang_after,
          reset_after, flip_bits, seed, flip, stuck_at, swap_model, replay, bist_rom_flip,
          log_file) -> None:
    """Serve PACKAGE as a board on --port URL or DEVICE (or --pty, --tcp HOST:PORT).

    The package's signer must be pinned (--trusted-key, the trust store), as the board's boot
    loader would require. The first line on stdout is the port (a /dev/pts/N path,
    socket://host:port or the device); the board then serves until SIGTERM or SIGINT. A serial
    device is opened raw and exclusively at --baud; the device paces the line.
    """
    from fpgaprint.hw_targets.backends import open_backend
    from fpgaprint.hw_targets.faults import FaultSpec
    from fpgaprint.hw_targets.link import (
        BoardLink,
        LinkFaults,
        check_serve_url,
        is_device,
        open_transport,
        serve_url,
    )

    url = check_serve_url(serve_url(use_pty, tcp, port_url))
    if mlperf_model_id is not None:
        from fpgaprint.hw_targets.mlperf import check_model_id, model_id_warning

        if protocol != "mlperf-tiny":
            raise click.UsageError("--mlperf-model-id: only with --protocol mlperf-tiny")
        check_model_id(mlperf_model_id)
        if (why := model_id_warning(mlperf_model_id)) is not None:
            warn(why)
    device = is_device(url)  # a real line: the device paces it, not the fault model
    link_faults = LinkFaults(baud=None if device else baud, noise_ber=noise_ber,
                             drop_rate=drop_rate, hang_after=hang_after, reset_after=reset_after,
                             seed=seed)
    faults = dataclasses.replace(
        FaultSpec.from_strings(flip_bits=flip_bits, seed=seed, flips=flip, stuck_at=stuck_at,
                               swap_model=swap_model, replay=replay),
        bist_rom_flips=bist_rom_flip)  # parsed by --bist-rom-flip's callback
    _setup_logging(log_file)
    log = logging.getLogger("fpgaprint.board")

    dev = open_backend(package, backend, faults if faults.active else None, serial_number,
                       trusted_key=trusted_key, allow_unsigned=allow_unsigned,
                       allow_unpinned=allow_unpinned)
    try:
        verification = dev.package.verification
        if verification is not None and verification.warning:
            warn(verification.warning)
            log.warning("%s", verification.warning)
        io = dev.package.io  # the package open_backend verified
        shape = tuple(int(d) for d in io["input"]["shape"][1:])
        datatype = str(io["input"]["datatype"])
        for entry in getattr(dev, "fault_log", lambda: [])():
            log.info("model fault: %s", entry)
        if protocol == "binary":
            from fpgaprint.hw_targets.agent import BoardAgent

            handler = BoardAgent(dev)
        else:
            from fpgaprint.hw_targets.mlperf import MlperfTinyHandler, class_scores

            handler = MlperfTinyHandler(dev, shape, datatype, model_id=mlperf_model_id,
                                        scores=class_scores(dev.package))
        link = BoardLink(open_transport(url, baud if device else None), handler, link_faults)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())

        def ready(url: str) -> None:
            click.echo(url)
            sys.stdout.flush()
            log.info("serving %s (%s protocol) on %s", package, protocol, url)

        link.serve_forever(stop, ready)
        log.info("stopped: %s", link.stats)
    finally:
        close = getattr(dev, "close", None)
        if close is not None:
            close()


@click.command()
def boards() -> None:
    """List the supported boards."""
    from rich.table import Table

    from fpgaprint.core.boards import BOARDS, RESOURCE_KEYS
    from fpgaprint.core.progress import console

    table = Table(title="fpgaprint boards")
    for col in ("board", "part", "FINN board", "platform", "clock", *RESOURCE_KEYS, "serial"):
        table.add_column(col, justify="right" if col in RESOURCE_KEYS else "left")
    for b in BOARDS.values():
        mhz = 1000.0 / b.clock_ns
        serial_port = f"{b.serial_device} @ {b.baud}" if b.serial_device else "TCP"
        table.add_row(b.name, b.part, b.finn_board, b.platform, f"{mhz:g} MHz",
                      *(str(b.resources.get(k, 0)) for k in RESOURCE_KEYS), serial_port)
    console().print(table)
