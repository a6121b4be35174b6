"""qonnx's per-node datatype check made vectorized, installed with FINN+'s settings.

qonnx 0.4's `execute_onnx` checks every integer-annotated tensor after each node
(`sanitize_quant_values`) and takes the largest rounding error with Python's builtin `max`
over the flattened numpy array, element by element: on CNV that is about three quarters of
executing the golden model or any step's graph (0.6 s of 0.75 s per vector). `install` gives
that module a `max` that takes a numpy array's maximum with numpy; any other call, and an
array holding NaN (where the builtin's answer depends on the order), goes to the builtin, so
every result and error is the one qonnx gives.
"""

from __future__ import annotations

import builtins

import numpy as np

_installed = False


def array_max(*args, **kwargs):
    """`max` as qonnx calls it, with a numpy array's maximum taken by numpy."""
    if len(args) == 1 and not kwargs and isinstance(args[0], np.ndarray) and \
            args[0].ndim == 1 and args[0].size and not np.isnan(args[0]).any():
        return args[0].max()
    return builtins.max(*args, **kwargs)


def install() -> None:
    global _installed
    if _installed:
        return
    from qonnx.util import basic

    basic.max = array_max  # module globals come before builtins in its name lookup
    _installed = True
