"""The MLPerf Tiny runner (mlcommons/tiny `benchmark/runner`) against a served board.

- `write_dataset`: a runner dataset folder, ``OUT/<model>/y_labels.csv`` and one ``.bin`` per
  vector (the input in the board's `db` layout), from a verified package's self-test vectors.
- `run_runner`: runs the runner's ``main.py`` with the board's port listed among the serial
  ports under the USB VID:PID its devices.yaml names, so the runner's USB scan finds a pty or
  a pyserial URL (``socket://host:port``, ``rfc2217://…``) that has no USB identity.

Command line (see docs/mlperf.md)::

    python -m fpgaprint.hw_targets.mlperf_runner dataset PACKAGE OUT [--model ic01]
    python -m fpgaprint.hw_targets.mlperf_runner run RUNNER_DIR --port PORT [--usb VID:PID] \\
        -- --dataset_path OUT --device_list devices.yaml --test_script tests.yaml --mode a
"""

from __future__ import annotations

import csv
import io
import os
import re
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

from fpgaprint.core.cliopts import warn
from fpgaprint.core.errors import InputError
from fpgaprint.hw_targets.link import no_delay
from fpgaprint.hw_targets.mlperf import check_model_id, container_dtype, model_id_warning

LABELS = ("golden", "expected")
DEFAULT_USB = (0x0483, 0x374B)  # the reference DUT's (ST-LINK V3) in the runner's devices files


def dataset_rows(inputs: np.ndarray, labels: np.ndarray, datatype: str,
                 classes: int) -> list[tuple[str, bytes, int]]:
    """(file name, bytes, label) per vector; bytes in the smallest container of `datatype`."""
    dtype = container_dtype(datatype)
    width = len(str(max(len(inputs) - 1, 0)))
    rows = []
    for i, (x, y) in enumerate(zip(np.asarray(inputs), np.asarray(labels).reshape(-1))):
        if not 0 <= int(y) < classes:
            raise InputError(f"vector {i}: label {int(y)} outside 0..{classes - 1}")
        rows.append((f"v{i:0{max(width, 4)}d}.bin", np.ascontiguousarray(x, dtype=dtype)
                     .tobytes(), int(y)))
    return rows


def write_dataset(package: str | Path, out: str | Path, model: str = "ic01",
                  labels: str = "golden", trusted_key: str | Path | None = None,
                  allow_unsigned: bool = False) -> Path:
    """Write ``OUT/<model>/`` (y_labels.csv: file, classes, class) from the package's vectors,
    labelled with the golden model's labels (does the board compute what was built?) or the
    pre-trained model's (`expected`). The folder appears whole or not at all."""
    from fpgaprint.core.package import verify_package

    check_model_id(model)
    if (why := model_id_warning(model)) is not None:
        warn(why)
    if labels not in LABELS:
        raise InputError(f"labels {labels!r}: expected one of {', '.join(LABELS)}")
    target = Path(out) / model
    if target.exists():
        raise InputError(f"{target}: already exists")
    with verify_package(package, trusted_key=trusted_key, allow_unsigned=allow_unsigned) as pkg:
        vectors = pkg.vectors()
        io_ = pkg.io
        classes = int(np.prod(io_["output"]["shape"][1:]))
        rows = dataset_rows(vectors["inputs"], vectors[f"{labels}_labels"],
                            str(io_["input"]["datatype"]), classes)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model}.", dir=target.parent))
    try:
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        for name, data, label in rows:
            (tmp / name).write_bytes(data)
            writer.writerow([name, classes, label])
        (tmp / "y_labels.csv").write_text(table.getvalue())
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def parse_usb(spec: str) -> tuple[int, int]:
    """``VID:PID`` in hex (``0483:374B`` or ``0x0483:0x374b``)."""
    m = re.fullmatch(r"(?:0x)?([0-9a-fA-F]{1,4}):(?:0x)?([0-9a-fA-F]{1,4})", spec.strip())
    if m is None:
        raise InputError(f"--usb {spec!r}: expected VID:PID in hex, e.g. 0483:374B")
    return int(m.group(1), 16), int(m.group(2), 16)


def list_board_port(port: str, usb: tuple[int, int]) -> None:
    """Make pyserial list `port` as a USB serial port with `usb` = (VID, PID), and open a
    URL port with `serial_for_url` (TCP_NODELAY on `socket://`) where `serial.Serial(port, …)`
    is asked for it."""
    import serial
    from serial.tools import list_ports, list_ports_common

    info = list_ports_common.ListPortInfo(port, skip_link_detection=True)
    info.vid, info.pid = usb
    info.description = f"fpgaprint board on {port}"
    info.hwid = f"USB VID:PID={usb[0]:04X}:{usb[1]:04X}"
    listed = list_ports.comports

    def comports(include_links: bool = False):
        return [*(p for p in listed(include_links) if p.device != port), info]

    list_ports.comports = comports
    if "://" in port:
        opener = serial.Serial

        def open_port(device=None, *args, **kwargs):
            if device == port:
                opened = serial.serial_for_url(device, *args, **kwargs)
                no_delay(opened)
                return opened
            return opener(device, *args, **kwargs)

        serial.Serial = open_port


def run_runner(runner_dir: str | Path, port: str, usb: tuple[int, int],
               args: list[str]) -> None:
    """Run RUNNER_DIR/main.py with ARGS in RUNNER_DIR (where it writes sessions/) and the
    board listed on `port` as `usb` (see `list_board_port`)."""
    runner_dir = Path(runner_dir).resolve()
    main = runner_dir / "main.py"
    if not main.is_file():
        raise InputError(f"{runner_dir}: no main.py (give the runner folder, "
                         "tiny/benchmark/runner)")
    list_board_port(port, usb)
    sys.path.insert(0, str(runner_dir))
    os.chdir(runner_dir)
    sys.argv = [str(main), *args]
    runpy.run_path(str(main), run_name="__main__")


@click.group()
def main() -> None:
    """The MLPerf Tiny runner against a board served with --protocol mlperf-tiny."""


@main.command()
@click.argument("package", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", default="ic01", show_default=True,
              help="Model folder the runner's tests.yaml names (its `model` key).")
@click.option("--labels", type=click.Choice(LABELS), default="golden", show_default=True,
              help="golden: the built model's labels; expected: the pre-trained model's.")
@click.option("--trusted-key", type=click.Path(dir_okay=False), metavar="PUB",
              help="Public key the package must be signed with.")
@click.option("--allow-unsigned", is_flag=True, help="Accept a package without a signature.")
def dataset(package, out, model, labels, trusted_key, allow_unsigned) -> None:
    """Write a runner dataset OUT/MODEL from PACKAGE's self-test vectors."""
    target = write_dataset(package, out, model, labels, trusted_key, allow_unsigned)
    count = len(list(target.glob("*.bin")))
    click.echo(f"{target}: {count} vectors, y_labels.csv with the {labels} labels")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("runner_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--port", required=True, help="The board's port: /dev/pts/N or a pyserial URL.")
@click.option("--usb", default=f"{DEFAULT_USB[0]:04X}:{DEFAULT_USB[1]:04X}",
              show_default=True, help="VID:PID of the dut entry in the runner's devices.yaml.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(runner_dir, port, usb, args) -> None:
    """Run the runner in RUNNER_DIR with ARGS (after --) against the board on --port."""
    run_runner(runner_dir, port, parse_usb(usb), list(args))


if __name__ == "__main__":
    from fpgaprint.core.errors import FpgaprintError

    try:
        main(standalone_mode=True)
    except FpgaprintError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
