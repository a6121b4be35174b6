"""FINN+'s rtlsim stream packing, vectorized.

FINN+'s node-level rtlsim packs every stream word through hex strings, one element at a time
(`npy_to_rtlsim_input`, `rtlsim_output_to_npy`); on convolutional layers that takes seconds per
vector while the simulation itself takes milliseconds. The functions here have the same
contract and return the same words (tests compare them with FINN+'s), computed with FINN+'s
own vectorized packers (`finnpy_to_packed_bytearray`, `packed_bytearray_to_finnpy`, the
packing of its PYNQ driver) for integer datatypes; anything else goes to FINN+'s originals.
`xsi.install()` puts them in place of FINN+'s while finn.xsi runs on Verilator.
"""

from __future__ import annotations

import os

import numpy as np

_original: dict[str, object] = {}


def _fast_domain(dtype) -> bool:
    return dtype.is_integer() and not dtype.is_fixed_point()


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
    ok = (reverse_inner and _fast_domain(input_dtype) and a.ndim >= 1 and a.size
          and np.all(np.isfinite(a)) and np.all(a == np.rint(a))
          and a.min() >= input_dtype.min() and a.max() <= input_dtype.max()
          and a.shape[-1] * input_dtype.bitwidth() <= max(int(pad_to_nbits), 1))
    if not ok:
        return _original["npy_to_rtlsim_input"](inp, input_dtype, pad_to_nbits, reverse_inner)
    packed = dp.finnpy_to_packed_bytearray(a.astype(np.float32), input_dtype,
                                           reverse_inner=True, reverse_endian=True)
    rows = np.ascontiguousarray(packed).reshape(-1, packed.shape[-1])
    return [int.from_bytes(r.tobytes(), "little") for r in rows]


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


_NAMES = ("npy_to_rtlsim_input", "rtlsim_output_to_npy")


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
