"""RTL co-simulation benchmark (Verilator): compile seconds, simulated cycles per second,
vectors per second node by node. Prints figures only.

    .venv/bin/python bench/rtlsim.py [--work DIR] [--part PART] [--seconds S]

Layers: an FC chain MVAU_rtl(64x64, INT4 weights) -> Thresholding_rtl(64 channels, 15
steps) -> MVAU_rtl(64x10), SIMD/PE 8 (Pynq-Z1 part by default). Compile seconds are
measured three ways: cold (empty cache: Verilator's runtime objects are built too), a new
design with the runtime objects cached, and a cache hit.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

MW, MH, OUT, SIMD, PE, STEPS = 64, 64, 10, 8, 8, 15
# "time in simulator" is the share spent in finn.xsi's load/reset/run/close; the rest is
# FINN+'s own per-call work (npy files, data packing of inputs and, for MVAU_rtl, of the
# weight stream it feeds from Python on every call).


def chain(batch: int, seed: int = 0):
    """Unspecialized HW graph MVAU -> Thresholding -> MVAU with `batch` input vectors."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.util.basic import qonnx_make_model

    rng = np.random.default_rng(seed)
    w0 = rng.integers(-7, 8, (MW, MH))
    w1 = rng.integers(-7, 8, (MH, OUT))
    acc = 8 * 8 * MW  # |UINT4 x INT4| summed over MW
    th = np.sort(rng.integers(-acc // 8, acc // 8, (MH, STEPS)), axis=1)
    common = {"domain": "finn.custom_op.fpgadataflow", "backend": "fpgadataflow",
              "preferred_impl_style": "rtl"}
    nodes = [
        helper.make_node("MVAU", ["inp", "w0"], ["a0"], MW=MW, MH=MH, SIMD=SIMD, PE=PE,
                         inputDataType="UINT4", weightDataType="INT4", outputDataType="INT16",
                         noActivation=1, numInputVectors=[batch], **common),
        helper.make_node("Thresholding", ["a0", "t0"], ["a1"], NumChannels=MH, PE=PE,
                         numSteps=STEPS, inputDataType="INT16", weightDataType="INT16",
                         outputDataType="UINT4", numInputVectors=[batch], **common),
        helper.make_node("MVAU", ["a1", "w1"], ["outp"], MW=MH, MH=OUT, SIMD=SIMD, PE=2,
                         inputDataType="UINT4", weightDataType="INT4", outputDataType="INT16",
                         noActivation=1, numInputVectors=[batch], **common),
    ]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "fc", [vi("inp", TensorProto.FLOAT, [batch, MW])],
                          [vi("outp", TensorProto.FLOAT, [batch, OUT])],
                          value_info=[vi("a0", TensorProto.FLOAT, [batch, MH]),
                                      vi("a1", TensorProto.FLOAT, [batch, MH])])
    m = ModelWrapper(qonnx_make_model(g, producer_name="fpgaprint-bench"))
    for name, dt in (("inp", "UINT4"), ("a0", "INT16"), ("a1", "UINT4"), ("outp", "INT16")):
        m.set_tensor_datatype(name, DataType[dt])
    for name, val, dt in (("w0", w0, "INT4"), ("w1", w1, "INT4"), ("t0", th, "INT16")):
        m.set_initializer(name, val.astype(np.float32))
        m.set_tensor_datatype(name, DataType[dt])
    return m.transform(GiveUniqueNodeNames())


def specialize(ref, part: str):
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    m = copy.deepcopy(ref).transform(SpecializeLayers(part)).transform(PrepareIP(part, 10.0))
    assert all(n.op_type.endswith("_rtl") for n in m.graph.node), [n.op_type for n in m.graph.node]
    return m


def compile_all(m) -> dict[str, float]:
    from qonnx.custom_op.registry import getCustomOp

    secs = {}
    for n in m.graph.node:
        op = getCustomOp(n)
        t0 = time.perf_counter()
        op.prepare_rtlsim(behav=False)
        secs[n.op_type + ":" + n.name] = time.perf_counter() - t0
        op.set_nodeattr("exec_mode", "rtlsim")
    return secs


class SimTimer:
    """Wall time spent inside finn.xsi's load/reset/run/close (the simulator's share)."""

    NAMES = ("load_sim_obj", "reset_rtlsim", "rtlsim_multi_io", "close_rtlsim")

    def __init__(self):
        import finn.xsi as finn_xsi

        self.seconds = 0.0
        for name in self.NAMES:
            setattr(finn_xsi, name, self._timed(getattr(finn_xsi, name)))

    def _timed(self, fn):
        def call(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0
        return call


def rate(fn, seconds: float) -> tuple[float, int]:
    """(calls per second, calls) of fn over about `seconds`."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--part", default="xc7z020clg400-1")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fpgaprint-bench-rtlsim-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "verilator-cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["FPGAPRINT_VERILATOR_CACHE"] = str(cache)

    from fpgaprint.core.finn_env import ensure_finn

    ensure_finn(work / "finn")
    from finn.core.onnx_exec import execute_onnx
    from finn.util.data_packing import npy_to_rtlsim_input
    from qonnx.custom_op.registry import getCustomOp

    from fpgaprint.compiler.rtlsim import find_verilator, use_verilator

    console = Console()
    tool = find_verilator()
    console.print(f"Verilator {tool.version} ({tool.executable}), {os.cpu_count()} cores")

    with use_verilator():
        # -- compile seconds -------------------------------------------------------------
        ref1 = chain(1)
        cold = compile_all(specialize(ref1, args.part))
        for d in cache.iterdir():  # keep the runtime objects, drop the designs
            if d.name not in ("runtime", "tmp", "logs"):
                shutil.rmtree(d)
        warm = compile_all(specialize(ref1, args.part))
        hit = compile_all(specialize(ref1, args.part))
        t = Table(title="Verilator compile seconds (prepare_rtlsim)")
        for c in ("layer", "cold cache", "runtime cached, new design", "cache hit"):
            t.add_column(c, justify="right" if c != "layer" else "left")
        for k, c, w, h in zip(cold, cold.values(), warm.values(), hit.values()):
            t.add_row(k, f"{c:.2f}", f"{w:.2f}", f"{h:.3f}")
        console.print(t)

        # -- node by node, batch 1 and batch N ---------------------------------------------
        rng = np.random.default_rng(1)
        timer = SimTimer()
        rows = []
        for batch in (1, args.batch):
            ref = chain(batch)
            m = specialize(ref, args.part)
            compile_all(m)
            x = rng.integers(0, 16, (batch, MW)).astype(np.float32)
            got = execute_onnx(m, {"inp": x})["outp"]
            want = execute_onnx(ref, {"inp": x})["outp"]
            assert np.array_equal(got, want), "rtlsim differs from python mode"
            timer.seconds = 0.0
            t0 = time.perf_counter()
            r_rtl, calls = rate(lambda: execute_onnx(m, {"inp": x}), args.seconds)
            share = timer.seconds / (time.perf_counter() - t0)
            r_py, _ = rate(lambda: execute_onnx(ref, {"inp": x}), args.seconds)
            cycles = sum(getCustomOp(n).get_nodeattr("cycles_rtlsim") for n in m.graph.node)
            rows.append((batch, r_rtl * batch, r_py * batch, cycles, share))
        t = Table(title="Vectors per second, 3-layer FC chain executed node by node")
        for c in ("batch", "rtlsim (Verilator)", "python mode (golden)", "cycles per call",
                  "time in simulator"):
            t.add_column(c, justify="right")
        for b, rr, rp, cy, sh in rows:
            t.add_row(str(b), f"{rr:,.0f}", f"{rp:,.0f}", f"{cy:,}", f"{sh:.0%}")
        console.print(t)

        # -- simulated cycles per second (harness loop, no Python per cycle) -------------
        t = Table(title="Simulated cycles per second (one long stream per call, packing included)")
        for c in ("layer", "cycles", "seconds", "cycles/s", "words in/out"):
            t.add_column(c, justify="right" if c != "layer" else "left")
        for node in m.graph.node[:2]:
            op = getCustomOp(node)
            sim = op.get_rtlsim()
            try:
                sim.reset()
                n_words = 200_000
                width = op.get_instream_width_padded(0)
                if node.op_type.startswith("MVAU"):
                    # FINN+'s own weight stream (valid narrow weights), once per vector
                    wdt = op.get_input_datatype(1)
                    wfile = Path(op.get_nodeattr("code_gen_dir_ipgen")) / "input_1.npy"
                    wstream = npy_to_rtlsim_input(str(wfile), wdt, op.get_instream_width(1))
                    vecs = n_words // len(wstream)
                    per_vec_in = MW // SIMD
                    ins = {"in0_V": [random.getrandbits(width) for _ in range(vecs * per_vec_in)],
                           "in1_V": wstream * vecs}
                    outs = {"out0_V": vecs * (MH // PE)}
                else:
                    ins = {"in0_V": [random.getrandbits(width) for _ in range(n_words)]}
                    outs = {"out0_V": n_words}
                t0 = time.perf_counter()
                res = sim.stream(ins, outs, liveness=10_000)
                dt = time.perf_counter() - t0
                words = sum(len(v) for v in ins.values())
                t.add_row(node.op_type, f"{res.cycles:,}", f"{dt:.3f}",
                          f"{res.cycles / dt:,.0f}", f"{words:,}/{sum(outs.values()):,}")
            finally:
                sim.close()
        console.print(t)
    console.print(f"work dir: {work}")


if __name__ == "__main__":
    main()
