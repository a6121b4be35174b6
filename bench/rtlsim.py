"""RTL co-simulation benchmark (Verilator). Prints figures only.

    .venv/bin/python bench/rtlsim.py [--work DIR] [--models digits-mlp,tfc-w2a2]
                                     [--skip-chain] [--part PART] [--seconds S]

Zoo models (digits-mlp, tfc-w2a2, built with impl_style auto): Verilator compile seconds
(node-level layers and the stitched design, empty cache), simulated cycles per second and
vectors per second node by node and stitched, measured cycles per frame (latency, initiation
interval) next to FINN+'s estimates, the FIFO depths sized by simulation, the stitched design
under random stalls, the added build time as a ratio to the same build
without the rtlsim stage (same QONNX, alternating, in one run), and 100 self-test vectors
through the stitched design including its compile.

FC chain: MVAU_rtl(64x64, INT4 weights) -> Thresholding_rtl(64 channels, 15 steps) ->
MVAU_rtl(64x10), SIMD/PE 8 (Pynq-Z1 part by default). Compile seconds are measured three
ways: cold (empty cache: Verilator's runtime objects are built too), a new design with the
runtime objects cached, and a cache hit.
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


def _child_cpu() -> float:
    """CPU seconds of this process's finished subprocesses (Verilator, make, the compiler)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


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
    ap.add_argument("--models", default="digits-mlp,tfc-w2a2")
    ap.add_argument("--repeats", type=int, default=2, help="builds with and without rtlsim")
    ap.add_argument("--skip-chain", action="store_true", help="zoo models only")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fpgaprint-bench-rtlsim-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "verilator-cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["FPGAPRINT_VERILATOR_CACHE"] = str(cache)

    from fpgaprint.core.finn_env import ensure_finn

    ensure_finn(work / "finn")
    console = Console()
    if args.models:
        zoo_figures(args, work, console)
    if not args.skip_chain:
        chain_figures(args, work, cache, console)
    console.print(f"work dir: {work}")


def chain_figures(args, work: Path, cache: Path, console) -> None:
    from finn.core.onnx_exec import execute_onnx
    from finn.util.data_packing import npy_to_rtlsim_input
    from qonnx.custom_op.registry import getCustomOp

    from fpgaprint.compiler.rtlsim import find_verilator, use_verilator

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


# -- zoo models: node by node, stitched, in the build ---------------------------------------

def _fresh_cache(work: Path, name: str, keep_runtime: Path | None = None) -> Path:
    """An empty Verilator cache (with a copy of the runtime objects when given)."""
    d = work / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    if keep_runtime is not None and (keep_runtime / "runtime").is_dir():
        shutil.copytree(keep_runtime / "runtime", d / "runtime")
    os.environ["FPGAPRINT_VERILATOR_CACHE"] = str(d)
    return d


def zoo_figures(args, work: Path, console) -> None:
    import statistics

    from fpgaprint.compiler import build as build_mod
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.compiler.rtlsim.design import StitchedDesign
    from fpgaprint.compiler.rtlsim.layers import check_layers
    from fpgaprint.compiler.rtlsim.sim import Stalls
    from fpgaprint.compiler.rtlsim.stage import check_stitched
    from fpgaprint.core.golden import GoldenModel

    rows = []
    shared = work / "verilator-cache"
    for name in args.models.split(","):
        # one zoo build (trains the model, warms the cache), then builds of its QONNX export
        os.environ["FPGAPRINT_VERILATOR_CACHE"] = str(shared)
        zoo = build_model(f"zoo:{name}", "Pynq-Z1", work / name / "zoo",
                          BuildConfig(equivalence_samples=32), allow_unsigned=True)
        qonnx = zoo.frontend.qonnx_path
        golden = GoldenModel(zoo.golden_path)
        steps = zoo.out / "model" / "steps"
        codegen = sorted(steps.glob("*_codegen.onnx"))[0]
        rtl_dir = zoo.out / "hw" / "rtl"
        shape = golden.input_shape[1:]
        rng = np.random.default_rng(0)

        # compile seconds on an empty cache (runtime objects kept: they are built once per
        # machine and Verilator version), node by node and stitched
        _fresh_cache(work, f"cold-{name}", keep_runtime=shared)
        x64 = rng.integers(0, 256, (64, *shape))
        t0 = time.perf_counter()
        layers = check_layers(codegen, zoo.golden_path, x64)
        node_cold = time.perf_counter() - t0
        design = StitchedDesign(rtl_dir)
        t0, c0 = time.perf_counter(), _child_cpu()
        build = design.build()
        stitched_compile = time.perf_counter() - t0
        stitched_compile_cpu = _child_cpu() - c0
        # 100 self-test vectors through the stitched design, including its compile
        _fresh_cache(work, f"cold100-{name}", keep_runtime=shared)
        x100 = rng.integers(0, 256, (100, *shape))
        t0 = time.perf_counter()
        d100 = StitchedDesign(rtl_dir)
        with d100.simulator() as sim:  # the stitched design takes the accelerator's inputs
            raw, _ = sim.run(golden.accelerator_inputs(x100))
        hundred = time.perf_counter() - t0
        check_stitched(d100.top, raw, golden.run(x100)[0])

        # warm: node-by-node vectors/s, stitched vectors/s and cycles/s
        os.environ["FPGAPRINT_VERILATOR_CACHE"] = str(shared)
        t0 = time.perf_counter()
        warm = check_layers(codegen, zoo.golden_path, x64)
        node_s = sum(r["seconds"] for r in warm["layers"])
        node_cycles = sum(r["cycles"] for r in warm["layers"])
        n_long = 2000 if name == "digits-mlp" else 500
        xl = rng.integers(0, 256, (n_long, *shape))
        xl_acc, x64_acc = golden.accelerator_inputs(xl), golden.accelerator_inputs(x64)
        with design.simulator(build=build) as sim:
            sim.run(xl_acc[:4])
            walls, cpus = [], []
            for _ in range(3):  # the median of three runs: the machine is shared
                sim.reset()
                t0, c0 = time.perf_counter(), time.process_time()
                raw, cycles = sim.run(xl_acc)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            stitched_s, stitched_cpu = statistics.median(walls), statistics.median(cpus)
            perf = sim.measure(x64_acc)
            sim.reset()
            t0 = time.process_time()
            stalled, stall_cycles = sim.run(xl_acc, Stalls(seed=1))
            stall_cpu = time.process_time() - t0
        want_long = golden.run(xl)[0]
        check_stitched(design.top, raw, want_long)
        check_stitched(design.top, stalled, want_long, " with random stalls")
        st = zoo.report["rtl"]["stitched"]
        est = st["estimate"]
        fifos = st["fifos"]

        # added build time: same QONNX, with and without the rtlsim stage, alternating
        cfg = BuildConfig(equivalence_samples=32)
        real = build_mod.rtl_stage.run
        with_rtl, without = [], []
        for r in range(args.repeats):
            for enabled in (True, False):
                build_mod.rtl_stage.run = real if enabled else (lambda *a, **k: None)
                try:
                    t0 = time.perf_counter()
                    build_model(str(qonnx), "Pynq-Z1", work / name / f"b{r}{int(enabled)}", cfg,
                                allow_unsigned=True)
                    (with_rtl if enabled else without).append(time.perf_counter() - t0)
                finally:
                    build_mod.rtl_stage.run = real
        ratio = statistics.median(with_rtl) / statistics.median(without)
        rows.append({
            "model": name, "layers": len(layers["layers"]),
            "node compile s": layers["compile_seconds"], "node cold s": node_cold,
            "stitched compile s": stitched_compile, "stitched compile cpu": stitched_compile_cpu,
            "100 vectors incl. compile s": hundred,
            "node cycles/s": node_cycles / node_s if node_s else 0.0,
            "node vectors/s": 64 / node_s if node_s else 0.0,
            "stitched cycles/s": cycles / stitched_s, "stitched vectors/s": n_long / stitched_s,
            "stitched cycles/cpu-s": cycles / stitched_cpu,
            "stitched cycles/cpu-s range": (cycles / max(cpus), cycles / min(cpus)),
            "stalled": (stall_cycles, cycles, stall_cycles / stall_cpu),
            "fifos": fifos, "sizing s": st.get("fifo_sizing_seconds"),
            "latency": (perf["latency_cycles"], est["latency_cycles"]),
            "ii": (perf["ii_cycles"], est["ii_cycles"]),
            "build with s": statistics.median(with_rtl),
            "build without s": statistics.median(without), "ratio": ratio,
            "ratios": [a / b for a, b in zip(with_rtl, without)],
        })
    t = Table(title="RTL co-simulation of the zoo models (impl_style auto, Pynq-Z1)")
    t.add_column("figure")
    for r in rows:
        t.add_column(r["model"], justify="right")
    fmt = [
        ("RTL layers simulated node by node", lambda r: str(r["layers"])),
        ("Verilator compile s, node-level layers (empty cache)",
         lambda r: f"{r['node compile s']:.1f}"),
        ("Verilator compile s, stitched design (empty cache; wall / CPU)",
         lambda r: f"{r['stitched compile s']:.1f} / {r['stitched compile cpu']:.1f}"),
        ("100 vectors through the stitched design incl. compile s",
         lambda r: f"{r['100 vectors incl. compile s']:.1f}"),
        ("simulated cycles/s, stitched (wall clock / per CPU second; median of 3 runs, "
         "per CPU second min-max)",
         lambda r: f"{r['stitched cycles/s']:,.0f} / {r['stitched cycles/cpu-s']:,.0f} "
                   "({:,.0f}-{:,.0f})".format(*r["stitched cycles/cpu-s range"])),
        ("with random stalls (0.25 in, 0.25 out): cycles vs full rate, cycles per CPU second",
         lambda r: f"{r['stalled'][0] / r['stalled'][1]:.2f}x, {r['stalled'][2]:,.0f}"),
        ("FIFO depths (sized by simulation; peak -> depth, input FIFO excluded)",
         lambda r: ", ".join(f"{x['peak']}->{x['depth']}" for x in r["fifos"]["fifos"][1:])),
        ("interval with deep FIFOs / sized FIFOs",
         lambda r: f"{r['fifos']['deep_ii_cycles']:,.0f} / {r['ii'][0]:,.0f}"),
        ("FIFO sizing s in the build (deep design: export, compile, simulation)",
         lambda r: f"{r['sizing s']:.1f}" if r["sizing s"] is not None else "-"),
        ("simulated cycles/s, node by node (FINN+ execute_node)",
         lambda r: f"{r['node cycles/s']:,.0f}"),
        ("vectors/s, stitched", lambda r: f"{r['stitched vectors/s']:,.0f}"),
        ("vectors/s, node by node (all layers)", lambda r: f"{r['node vectors/s']:,.0f}"),
        ("latency cycles: measured / FINN+ estimate",
         lambda r: f"{r['latency'][0]:,} / {r['latency'][1]:,}"),
        ("initiation interval cycles: measured / FINN+ estimate",
         lambda r: f"{r['ii'][0]:,.0f} / {r['ii'][1]:,}"),
        ("build s with / without rtlsim (median)",
         lambda r: f"{r['build with s']:.1f} / {r['build without s']:.1f}"),
        ("added build time, ratio (median; min-max)",
         lambda r: f"{r['ratio']:.2f} ({min(r['ratios']):.2f}-{max(r['ratios']):.2f})"),
    ]
    for label, f in fmt:
        t.add_row(label, *(f(r) for r in rows))
    console.print(t)
    console.print("goals: stitched >= 1 M cycles/s; 100 self-test vectors through the stitched "
                  "digits-mlp < 5 s including the compile (runtime objects cached)")


if __name__ == "__main__":
    main()
