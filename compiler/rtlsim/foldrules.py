"""Foldings FINN+'s RTL layers cannot run, and the nearest folding they can
(docs/rtl-findings.md).

FINN+ 1.6.1's MVAU_rtl wrapper (`finn-rtllib/mvu/mvu_vvu_axi.sv`) keeps the results in
flight in an output queue of `MAX_IN_FLIGHT + 1` entries. Its core (`mvu.sv`, the same in
Vivado's DSP datapath and in simulation) delivers a result `PIPELINE_DEPTH` cycles after its
input, and stops taking input one cycle after the consumer stalls, so with one result per
cycle (SIMD = MW, one synapse fold) up to `PIPELINE_DEPTH + 2` results must fit. The queue
is sized `CORE_PIPELINE_DEPTH + 1`, one or two entries short: a stalled consumer overflows
it (FINN+'s assertion `Overflowing output queue`), and hardware would lose results. With two
or more synapse folds a result comes at most every other cycle and the queue suffices.

`avoid_failing_foldings` gives each such layer the largest SIMD below MW that divides it.
"""

from __future__ import annotations

# layers whose RTL variant is FINN+'s mvu_vvu_axi wrapper in MVU mode
_MVU_WRAPPED = ("MVAU_rtl",)
REASON = ("SIMD = MW overflows the output queue of FINN+'s RTL MVU (mvu_vvu_axi.sv) when the "
          "consumer stalls; SIMD lowered to the largest divisor of MW below it "
          "(docs/rtl-findings.md)")


def safe_simd(mw: int, simd: int) -> int:
    """SIMD for an MVAU_rtl of width `mw`: `simd` unless it leaves one synapse fold, else the
    largest divisor of `mw` below it (1 for a prime width)."""
    if simd < mw or mw < 2:
        return simd
    return max(d for d in range(1, mw) if mw % d == 0)


def avoid_failing_foldings(model) -> tuple[object, list[dict]]:
    """The model with every MVAU_rtl at one synapse fold given a safe SIMD (in place), and a
    list of {layer, attribute, from, to, reason} for the layers changed."""
    from qonnx.custom_op.registry import getCustomOp

    changed: list[dict] = []
    for node in model.graph.node:
        if node.op_type not in _MVU_WRAPPED:
            continue
        op = getCustomOp(node)
        mw, simd = int(op.get_nodeattr("MW")), int(op.get_nodeattr("SIMD"))
        new = safe_simd(mw, simd)
        if new != simd:
            op.set_nodeattr("SIMD", new)
            changed.append({"layer": node.name, "attribute": "SIMD", "from": simd, "to": new,
                            "reason": REASON})
    return model, changed
