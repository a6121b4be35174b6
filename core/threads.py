"""The golden model's, the build graphs' and the fast executor's numerics on one BLAS thread.

Executing a FINN+/QONNX graph is many small matrix products, node by node. OpenBLAS's thread
pool makes them slower, and when the other core is busy (a Verilator compile, another build)
many times slower: CNV's golden model on 64 vectors took 2.0 s on one thread and 2.2 to 42 s
on two while the other core was busy. Results are the same on any number of threads (the
products are of integers exact in float32)."""

from __future__ import annotations

from contextlib import AbstractContextManager

_controller = None


def one_blas_thread() -> AbstractContextManager:
    """Context: numpy's BLAS library runs on one thread inside it (restored after)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()  # finds the loaded BLAS libraries once
    return _controller.limit(limits=1, user_api="blas")
