"""FINN+'s data packing, vectorized.

FINN+ packs stream words and memory images through bit strings, one element at a time
(`npy_to_rtlsim_input`, `rtlsim_output_to_npy`, `pack_innermost_dim_as_hex_string`): on
convolutional layers a vector takes seconds to pack while its simulation takes milliseconds,
and CNV's weight files take about 20 s to write. The functions here have the same contracts and
return the same values (tests compare them with FINN+'s); stream words come from FINN+'s own
vectorized packers (`finnpy_to_packed_bytearray`, `packed_bytearray_to_finnpy`), hex words
from a bit matrix. Integer datatypes only; anything else goes to FINN+'s originals.
`install()` (or `installed()`) puts them in place of FINN+'s: `xsi.install()` while finn.xsi
runs on Verilator, the codegen step while FINN+ writes the layers' memory files.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

_original: dict[str, object] = {}


def _fast_domain(dtype) -> bool:
    return dtype.is_integer() and not dtype.is_fixed_point()


def _on_grid(a: np.ndarray, dtype) -> bool:
    """Whether the float array `a` is non-empty and holds only values of integer `dtype`."""
    if not (a.size and np.all(np.isfinite(a)) and np.all(a == np.rint(a))):
        return False
    if dtype.name == "BIPOLAR":
        return bool(np.all(np.abs(a) == 1))
    return bool(a.min() >= dtype.min() and a.max() <= dtype.max())


def npy_to_rtlsim_input(input_file, input_dtype, pad_to_nbits, reverse_inner=True):
    """Stream words (Python ints) of an array or .npy file, its innermost dimension packed."""
    from finn.util import data_packing as dp

    if isinstance(input_file, np.ndarray):
        inp = input_file
    elif isinstance(input_file, (str, os.PathLike)) and os.path.isfile(input_file):
        inp = np.load(input_file)
    else:
        return _original["npy_to_rtlsim_input"](input_file, input_dtype, pad_to_nbits,
                                                reverse_inner)
    a = np.asarray(inp, dtype=np.float64)
    ok = (reverse_inner and _fast_domain(input_dtype) and a.ndim >= 1
          and _on_grid(a, input_dtype)
          and a.shape[-1] * input_dtype.bitwidth() <= max(int(pad_to_nbits), 1))
    if not ok:
        return _original["npy_to_rtlsim_input"](inp, input_dtype, pad_to_nbits, reverse_inner)
    packed = dp.finnpy_to_packed_bytearray(a.astype(np.float32), input_dtype,
                                           reverse_inner=True, reverse_endian=True)
    rows = np.ascontiguousarray(packed).reshape(-1, packed.shape[-1])
    return Words([int.from_bytes(r.tobytes(), "little") for r in rows], rows)


class Words(list):
    """Stream words (Python ints, FINN+'s contract) that keep their little-endian bytes
    (`rows`, uint8 (n, bytes)), so the simulator takes them without converting each word
    again. Repeating them (`words * k`, as FINN+ repeats an MVAU's weight stream once per
    input vector) repeats both."""

    def __init__(self, values, rows: np.ndarray):
        super().__init__(values)
        self.rows = rows

    def __mul__(self, k):
        return Words(list.__mul__(self, k), np.tile(self.rows, (max(int(k), 0), 1)))

    __rmul__ = __mul__


def rtlsim_output_to_npy(output, path, dtype, shape, packedBits, targetBits,  # noqa: N803
                         reverse_inner=True):
    """Array of the given shape from stream words, each holding targetBits-bit elements."""
    from finn.util import data_packing as dp

    shape = tuple(int(d) for d in shape)
    words = list(output)
    ok = (reverse_inner and _fast_domain(dtype) and targetBits == dtype.bitwidth()
          and len(shape) >= 1 and packedBits == shape[-1] * targetBits
          and len(words) == int(np.prod(shape[:-1])))
    if not ok:
        return _original["rtlsim_output_to_npy"](output, path, dtype, shape, packedBits,
                                                 targetBits, reverse_inner)
    nbytes = (int(packedBits) + 7) // 8
    mask = (1 << (8 * nbytes)) - 1
    raw = b"".join((int(w) & mask).to_bytes(nbytes, "little") for w in words)
    packed = np.frombuffer(raw, dtype=np.uint8).reshape(*shape[:-1], nbytes)
    out = dp.packed_bytearray_to_finnpy(packed, dtype, shape, reverse_inner=True,
                                        reverse_endian=True).astype(np.float32).copy()
    if path is not None:
        np.save(path, out)
    return out


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def pack_innermost_dim_as_hex_string(ndarray, dtype, pad_to_nbits, reverse_inner=False,
                                     prefix="0x"):
    """Hex words (`prefix` + lower-case digits, `pad_to_nbits` wide) of the innermost
    dimension, its first element in the most significant bits unless `reverse_inner`."""
    from fpgaprint.core.words import WordFormat

    a = np.asarray(ndarray, dtype=np.float32)
    pad = max(int(pad_to_nbits), 4)
    fmt = WordFormat.of(dtype.name) if _fast_domain(dtype) else None
    ok = (fmt is not None and isinstance(prefix, str) and a.ndim >= 1 and fmt.bits <= 62
          and pad % 4 == 0 and a.shape[-1] * fmt.bits <= pad and _on_grid(a, dtype))
    if not ok:
        return _original["pack_innermost_dim_as_hex_string"](ndarray, dtype, pad_to_nbits,
                                                              reverse_inner, prefix)
    bw = fmt.bits
    u = fmt.to_word(a)  # the stored bit patterns (BIPOLAR: one bit)
    if reverse_inner:
        u = np.flip(u, -1)
    bits = ((u[..., None] >> np.arange(bw - 1, -1, -1)) & 1).astype(np.uint8)
    bits = bits.reshape(*a.shape[:-1], a.shape[-1] * bw)
    bits = np.concatenate([np.zeros((*a.shape[:-1], pad - bits.shape[-1]), np.uint8), bits],
                          axis=-1)
    digits = bits.reshape(*a.shape[:-1], pad // 4, 4) @ np.array([8, 4, 2, 1], np.uint8)
    chars = np.ascontiguousarray(_HEX[digits])
    words = chars.view(f"S{pad // 4}")[..., 0].astype(f"U{pad // 4}")
    return np.char.add(prefix, words).astype(f"U{len(prefix) + pad // 4}")


_NAMES = ("npy_to_rtlsim_input", "rtlsim_output_to_npy", "pack_innermost_dim_as_hex_string")


def install() -> list[tuple[object, str, object]]:
    """Bind the vectorized functions wherever FINN+ bound its own; returns what to undo."""
    import importlib
    import sys

    from finn.util import data_packing as dp

    for pkg in ("finn.custom_op.fpgadataflow.rtl", "finn.custom_op.fpgadataflow.hls"):
        importlib.import_module(pkg)  # the layers that import FINN+'s packing by name
    for name in _NAMES:
        _original.setdefault(name, getattr(dp, name))
    undo = []
    this = sys.modules[__name__]
    for mod in list(sys.modules.values()):
        if mod is None or not getattr(mod, "__name__", "").startswith("finn"):
            continue
        for name in _NAMES:
            if mod.__dict__.get(name) is _original[name]:
                undo.append((mod, name, _original[name]))
                setattr(mod, name, getattr(this, name))
    return undo


def uninstall(undo: list[tuple[object, str, object]]) -> None:
    for mod, name, value in undo:
        setattr(mod, name, value)


@contextmanager
def installed():
    """`install()` for the duration of a block."""
    undo = install()
    try:
        yield
    finally:
        uninstall(undo)
