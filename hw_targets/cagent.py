"""The package header of the C reference agent (firmware/, docs/firmware.md).

`render(package)` writes `fpgaprint_agent_package.h`: what the agent needs to know about one
verified package beyond its self-test vectors (`firmware/selftest_vectors.h`, which the package
carries): the identity it reports in HELLO (package id, bitstream hash, name, board), where a
board's HAL finds the on-chip self-test's registers (`FPA_BIST_BASE`, `FPA_BIST_SIZE`: the
signed manifest's `bitstream.bist`, for a bitstream that carries the BIST), the input
datatype's range, the stream word layout (FINN packing: element i of a word at bits
[i·b, (i+1)·b), little-endian bytes) and the golden graph's host-side tail after the raw
output, as a list of elementwise float32 steps (Mul, Add, Sub, Div by a constant broadcast to
the raw output) whose argmax is the label. A package whose tail or head the agent cannot
compute is refused with one line naming the node (exit 2). The package id is the SHA-256 of
`manifest.json`, so this header is made from a finished package, never inside it.

    python -m fpgaprint.hw_targets.cagent PACKAGE OUT.h [--trusted-key KEY]
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fpgaprint.core.errors import InputError

if TYPE_CHECKING:
    from fpgaprint.core.package import Package

HEADER = "fpgaprint_agent_package.h"
GUARD = "FPGAPRINT_AGENT_PACKAGE_H"
# tail op -> (code with the constant second, code with the constant first)
TAIL_OPS = {"Mul": ("FPA_TAIL_MUL", "FPA_TAIL_MUL"), "Add": ("FPA_TAIL_ADD", "FPA_TAIL_ADD"),
            "Sub": ("FPA_TAIL_SUB", "FPA_TAIL_RSUB"), "Div": ("FPA_TAIL_DIV", "FPA_TAIL_RDIV")}
SHAPE_OPS = ("Reshape", "Flatten", "Identity")  # keep row-major order of the raw output


def _c_string(text: str) -> str:
    from fpgaprint.compiler.cheader import c_string

    return c_string(text)


def _wrap(items: list[str], indent: str, width: int) -> list[str]:
    from fpgaprint.compiler.cheader import _wrap

    return _wrap(items, indent, width)


def _float(v: float) -> str:
    """An exact C99 float literal (hexadecimal) of a float32 value."""
    v = float(np.float32(v))
    if math.isnan(v) or math.isinf(v):
        raise InputError(f"host-side tail constant {v} is not finite")
    return f"{v.hex()}f"


def _int_type(bits: int, signed: bool) -> str:
    for width in (8, 16, 32, 64):
        if bits <= width:
            return f"{'' if signed else 'u'}int{width}_t"
    raise InputError(f"stream element of {bits} bits is wider than 64 bits")


def _datatype(name: str, what: str):
    from fpgaprint.core.streams import datatype

    dt = datatype(name)
    if not dt.is_integer() or dt.name.startswith("BIPOLAR") or dt.bitwidth() > 64:
        raise InputError(f"{what} datatype {dt.name}: the C agent streams integer datatypes "
                         "(INTn, UINTn, BINARY) of at most 64 bits")
    return dt


def tail_steps(pkg: "Package") -> list[tuple[str, list[float]]]:
    """The host-side tail as (C op code, R float32 constants) steps; InputError naming the
    first node the agent cannot compute."""
    from fpgaprint.hw_targets.backends.pynq import HostGraph

    io = pkg.io
    host = HostGraph(pkg.golden_path, io["raw_output"]["name"])
    model = host.model
    raw_shape = tuple(int(d) for d in io["raw_output"]["shape"])
    size = math.prod(raw_shape[1:])
    current = host.raw_output
    steps: list[tuple[str, list[float]]] = []
    for node in host.tail:
        where = f"{pkg.golden_path}: host-side {node.op_type} node {node.name!r}"
        if current not in node.input:
            raise InputError(f"{where} does not read the previous output; the C agent computes "
                             "a chain of elementwise steps")
        if node.op_type in SHAPE_OPS:
            current = node.output[0]
            continue
        if node.op_type not in TAIL_OPS or len(node.input) != 2:
            raise InputError(f"{where}: the C agent computes only {', '.join(TAIL_OPS)} by a "
                             f"constant and {', '.join(SHAPE_OPS)} after the accelerator")
        first = node.input[0] != current
        const = model.get_initializer(node.input[0 if first else 1])
        if const is None:
            raise InputError(f"{where}: its other operand is not a constant")
        shape = model.get_tensor_shape(current)
        try:
            values = np.broadcast_to(np.asarray(const, np.float32), tuple(shape)).reshape(-1)
        except ValueError:
            raise InputError(f"{where}: constant of shape {tuple(const.shape)} does not "
                             f"broadcast to {tuple(shape)}") from None
        if values.size != size:
            raise InputError(f"{where}: {values.size} values, the raw output has {size}")
        steps.append((TAIL_OPS[node.op_type][1 if first else 0], values.tolist()))
        current = node.output[0]
    if current != host.output:
        raise InputError(f"{pkg.golden_path}: the tail does not end in the graph output")
    return steps


def _bist_window(pkg: "Package") -> list[str]:
    """The BIST slave's window in the bitstream's address map, as the signed manifest records
    it: where a board's HAL reads the registers (none without a bitstream that carries it)."""
    window = pkg.bist_window()
    if window is None:
        return []
    base, size = window
    return ["/* the BIST's AXI-lite registers on the board: manifest bitstream.bist */",
            f"#define FPA_BIST_BASE 0x{base:08X}u",
            f"#define FPA_BIST_SIZE 0x{size:X}u"]


def render(pkg: "Package") -> str:
    """The text of `fpgaprint_agent_package.h` for a verified package."""
    from fpgaprint.compiler.rtlsim.design import StitchedDesign

    io = pkg.io
    design = StitchedDesign(pkg.path("hw/rtl")) if pkg.path("hw/rtl/design.json").is_file() \
        else None
    if design is None:
        raise InputError(f"{pkg.dir}: no stitched RTL (hw/rtl/design.json): the C agent needs "
                         "the accelerator's stream layout")
    d = design.io
    idt, odt = _datatype(d.idt, "input"), _datatype(d.odt, "output")
    in_size = math.prod(io["input"]["shape"][1:])
    raw_size = math.prod(io["raw_output"]["shape"][1:])
    if math.prod(d.ishape_normal[1:]) != in_size or math.prod(d.oshape_normal[1:]) != raw_size:
        raise InputError(f"{pkg.dir}: the stitched RTL's streams ({d.ishape_normal} -> "
                         f"{d.oshape_normal}) do not fit the package's io")
    if d.idt != io["input"]["datatype"]:
        raise InputError(f"{pkg.dir}: the input stream carries {d.idt}, the package's input is "
                         f"{io['input']['datatype']}")
    steps = tail_steps(pkg)
    bits_in, bits_out = idt.bitwidth(), odt.bitwidth()
    fold_in, fold_out = d.ishape_folded[-1], d.oshape_folded[-1]
    bytes_in, bytes_out = d.ishape_packed[-1], d.oshape_packed[-1]
    if bytes_in * 8 < fold_in * bits_in or bytes_out * 8 < fold_out * bits_out:
        raise InputError(f"{pkg.dir}: packed stream words are narrower than their elements")
    checks = [str(c) for c in pkg.policy().get("checks", [])]
    bit = pkg.bitstream_sha256
    lines = [
        "/* The package a C reference agent serves (generated by fpgaprint.hw_targets.cagent;",
        " * do not edit). Identity for HELLO, the accelerator's stream layout and the golden",
        " * graph's host-side tail (labels = argmax of the tail over the raw output). */",
        f"#ifndef {GUARD}",
        f"#define {GUARD}",
        "",
        "#include <stdint.h>",
        "",
        f"#define FPA_PACKAGE_ID {_c_string(pkg.package_id)}",
        f"#define FPA_BITSTREAM_JSON {_c_string(json.dumps(bit))}",
        f"#define FPA_PACKAGE_NAME {_c_string(pkg.name)}",
        f"#define FPA_BOARD {_c_string(pkg.board)}",
        f"#define FPA_CHECKS_JSON {_c_string(json.dumps(checks, separators=(',', ':')))}",
        f"#define FPA_HAS_BIST {1 if pkg.bist() is not None else 0}",
        *_bist_window(pkg),
        "",
        f"#define FPA_INPUT_SIZE {in_size}u",
        f"#define FPA_INPUT_MIN INT64_C({int(idt.min())})",
        f"#define FPA_INPUT_MAX INT64_C({int(idt.max())})",
        f"#define FPA_IN_BITS {bits_in}u        /* bits per element in a stream word */",
        f"#define FPA_IN_FOLD {fold_in}u        /* elements per stream word */",
        f"#define FPA_IN_WORD_BYTES {bytes_in}u",
        f"#define FPA_IN_WORDS {math.prod(d.ishape_folded[1:-1])}u       /* words per vector */",
        "",
        f"#define FPA_RAW_SIZE {raw_size}u",
        f"#define FPA_OUT_BITS {bits_out}u",
        f"#define FPA_OUT_SIGNED {1 if odt.signed() else 0}",
        f"#define FPA_OUT_FOLD {fold_out}u",
        f"#define FPA_OUT_WORD_BYTES {bytes_out}u",
        f"#define FPA_OUT_WORDS {math.prod(d.oshape_folded[1:-1])}u",
        f"typedef {_int_type(bits_out, odt.signed())} fpa_raw_t;",
        "",
        "enum { FPA_TAIL_MUL, FPA_TAIL_ADD, FPA_TAIL_SUB, FPA_TAIL_RSUB, FPA_TAIL_DIV, "
        "FPA_TAIL_RDIV };",
        f"#define FPA_TAIL_STEPS {len(steps)}u",
    ]
    if steps:
        lines.append("static const uint8_t fpa_tail_op[FPA_TAIL_STEPS] = {"
                     + ", ".join(op for op, _ in steps) + "};")
        lines.append("static const float fpa_tail_const[FPA_TAIL_STEPS][FPA_RAW_SIZE] = {")
        for _, values in steps:
            lines += ["    {", *_wrap([_float(v) for v in values], "        ", 100), "    },"]
        lines.append("};")
    lines += ["", f"#endif /* {GUARD} */", ""]
    return "\n".join(lines)


def write(pkg: "Package", out: str | Path) -> Path:
    from fpgaprint.core.atomic import write_atomic

    out = Path(out)
    write_atomic(out, render(pkg).encode("ascii"))
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from fpgaprint.core.errors import FpgaprintError
    from fpgaprint.core.package import verify_package

    ap = argparse.ArgumentParser(prog="python -m fpgaprint.hw_targets.cagent",
                                 description="Write the C reference agent's package header.")
    ap.add_argument("package", help="package directory or .tar.gz")
    ap.add_argument("out", help=f"header to write (e.g. build/{HEADER})")
    ap.add_argument("--trusted-key", action="append", help="signer's public key (repeatable)")
    ap.add_argument("--allow-unpinned", action="store_true",
                    help="accept a signer that is not a trust anchor of this host")
    args = ap.parse_args(argv)
    try:
        pkg = verify_package(args.package, trusted_key=tuple(args.trusted_key or ()) or None,
                             allow_unpinned=args.allow_unpinned)
        with pkg:
            print(write(pkg, args.out))
    except FpgaprintError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
