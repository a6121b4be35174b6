"""FINN+'s MVU output queue under backpressure (docs/rtl-findings.md), and the folding rule
that keeps builds away from it.

A minimal reproduction: FINN+ 1.6.1's own `finn-rtllib/mvu/mvu_vvu_axi.sv` (the wrapper of
every MVAU_rtl, DSP48E1 version), built unchanged with Verilator, driven cycle by cycle from
Python: input and weight streams always valid, the output ready in bursts with stalls. With
one output per cycle (SIMD = MW) the wrapper's output queue overflows, which its own
assertion reports; with SIMD < MW the same stall pattern passes and every output is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fpgaprint.compiler.rtlsim import VerilatedSim, build_library
from fpgaprint.compiler.rtlsim.errors import DesignAssertionError

OVERFLOW = r"mvu_vvu_axi\.sv:\d+.*Overflowing output queue"  # FINN+'s assertion
AW, WW, ACCU = 4, 4, 16  # UINT4 activations, narrow INT4 weights, 16-bit accumulators


def _mvu_build(mw: int, mh: int, simd: int, pe: int, version: int = 1,
               queue: str | None = None, scratch: Path | None = None):
    """FINN+'s mvu_vvu_axi built with Verilator; with `queue`, a scratch copy (in `scratch`)
    whose MAX_IN_FLIGHT is that expression instead (the finding's check of a deeper queue;
    no build uses it)."""
    from fpgaprint.compiler.rtlsim.xsi import HDL_DIR
    from fpgaprint.core.finn_env import ensure_finn

    ensure_finn()
    from finn.util.settings import get_settings

    mvu = Path(get_settings().finn_rtllib) / "mvu"
    sources = [mvu / "mvu_pkg.sv", mvu / "mvu_vvu_axi.sv", mvu / "mvu.sv",
               mvu / "mvu_vvu_8sx9_dsp58.sv", mvu / "replay_buffer.sv",
               HDL_DIR / "add_multi.sv"]  # FINN+'s add_multi does not compile in Verilator
    if queue is not None:
        text = sources[1].read_text()
        line = "localparam int unsigned  MAX_IN_FLIGHT = CORE_PIPELINE_DEPTH;"
        assert line in text
        sources[1] = scratch / "mvu_vvu_axi.sv"
        sources[1].write_text(text.replace(line, f"localparam int unsigned  MAX_IN_FLIGHT = "
                                                 f"{queue};"))
    params = {"IS_MVU": 1, "VERSION": version, "MW": mw, "MH": mh, "SIMD": simd, "PE": pe,
              "ACTIVATION_WIDTH": AW, "WEIGHT_WIDTH": WW, "ACCU_WIDTH": ACCU,
              "NARROW_WEIGHTS": 1}
    return build_library("mvu_vvu_axi", sources, params=params,
                         label=f"mvu_vvu_axi MW={mw} SIMD={simd}")


def _words(vals: np.ndarray, width: int) -> int:
    """Elements packed little-end first, `width` bits each (SystemVerilog packed arrays)."""
    w = 0
    for i, v in enumerate(vals.ravel()):
        w |= (int(v) & ((1 << width) - 1)) << (i * width)
    return w


def run_mvu(mw: int, mh: int, simd: int, pe: int, vectors: int = 12, stall: int = 12,
            burst: int = 16, seed: int = 0, **build) -> tuple[np.ndarray, np.ndarray, int]:
    """(outputs, expected, cycles) of mvu_vvu_axi on random vectors, its output ready for
    `burst` cycles, then stalled for `stall` cycles, repeating; inputs always valid."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-7, 8, (mh, mw))
    a = rng.integers(0, 2 ** AW, (vectors, mw))
    sf, nf = mw // simd, mh // pe
    # weight stream: per vector, per neuron fold, per synapse fold: [PE][SIMD] weights
    wwords = [_words(w[n * pe:(n + 1) * pe, s * simd:(s + 1) * simd], WW)
              for _ in range(vectors) for n in range(nf) for s in range(sf)]
    awords = [_words(a[v, s * simd:(s + 1) * simd], AW) for v in range(vectors)
              for s in range(sf)]
    build = _mvu_build(mw, mh, simd, pe, **build)
    got: list[int] = []
    with VerilatedSim(build.library, name=f"mvu_vvu_axi MW={mw} SIMD={simd}") as sim:
        sim.reset()
        wi = ai = 0
        t0 = sim.cycles
        for cycle in range(20 * len(wwords) + 200):
            if len(got) == vectors * nf:
                break
            sim.set("s_axis_weights_tvalid", int(wi < len(wwords)))
            sim.set("s_axis_weights_tdata", wwords[wi] if wi < len(wwords) else 0)
            sim.set("s_axis_input_tvalid", int(ai < len(awords)))
            sim.set("s_axis_input_tdata", awords[ai] if ai < len(awords) else 0)
            ready = int(cycle % (burst + stall) < burst)
            sim.set("m_axis_output_tready", ready)
            sim.eval()
            if sim.get("s_axis_weights_tvalid") and sim.get("s_axis_weights_tready"):
                wi += 1
            if sim.get("s_axis_input_tvalid") and sim.get("s_axis_input_tready"):
                ai += 1
            if ready and sim.get("m_axis_output_tvalid"):
                got.append(sim.get("m_axis_output_tdata"))
            sim.step(1)
        cycles = sim.cycles - t0
    out = np.array([[((g >> (p * ACCU)) & 0xFFFF) for p in range(pe)] for g in got])
    out = np.where(out >= 2 ** (ACCU - 1), out - 2 ** ACCU, out).reshape(len(got) // nf if nf
                                                                         else 0, mh)
    return out, a @ w.T, cycles


@pytest.fixture(scope="module")
def finn_ready():
    from fpgaprint.core.finn_env import ensure_finn

    ensure_finn()


@pytest.mark.parametrize("mw, simd", [(5, 5), (4, 4)])
def test_one_output_per_cycle_overflows_finn_output_queue_under_backpressure(finn_ready, mw,
                                                                              simd):
    with pytest.raises(DesignAssertionError, match=OVERFLOW):
        run_mvu(mw, 2, simd, 1)


@pytest.mark.parametrize("mw, simd", [(5, 5), (4, 4)])
def test_one_output_per_cycle_is_exact_without_backpressure(finn_ready, mw, simd):
    out, want, _ = run_mvu(mw, 2, simd, 1, stall=0)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("mw, simd", [(10, 5), (5, 1), (8, 4)])
def test_two_cycles_per_output_survive_the_same_stalls_exact(finn_ready, mw, simd):
    out, want, _ = run_mvu(mw, 2, simd, 1)
    np.testing.assert_array_equal(out, want)


# mvu.sv raises `vld` PIPELINE_DEPTH cycles after `last`, in its behavioural and its DSP
# datapath alike; the wrapper's queue must hold one more result than that
PIPELINE_DEPTH = "(3 + $clog2(SIMD) + (SIMD == 1) + 1)"


@pytest.mark.parametrize("mw, simd", [(5, 5), (4, 4)])
def test_queue_of_pipeline_depth_plus_one_survives_stalls_at_one_output_per_cycle(
        finn_ready, tmp_path, mw, simd):
    out, want, _ = run_mvu(mw, 2, simd, 1, queue=f"{PIPELINE_DEPTH} + 1", scratch=tmp_path)
    np.testing.assert_array_equal(out, want)


def test_queue_of_pipeline_depth_still_overflows(finn_ready, tmp_path):
    with pytest.raises(DesignAssertionError, match="Overflowing output queue"):
        run_mvu(5, 2, 5, 1, queue=PIPELINE_DEPTH, scratch=tmp_path)
