"""Implementation style of the accelerator's layers: FINN+'s RTL or HLS variant of each HW layer.

`impl_style` (build option):

* `auto` (default): the RTL variant wherever FINN+ has one for the layer, its datatypes and
  the FPGA part; FINN+ falls back to HLS where it has none (a mixed design).
* `rtl`: as `auto`, and the build fails when a layer still ends up HLS.
* `hls`: the HLS variant wherever FINN+ has one.

`auto` and `rtl` imply standalone thresholds: FINN+'s RTL MVAU computes no activation, so
thresholds absorbed into an MVAU would force it onto HLS (`MVAU_hls`).
"""

from __future__ import annotations

from fpgaprint.core.errors import InputError

IMPL_STYLES = ("auto", "rtl", "hls")
HW_DOMAIN = "finn.custom_op.fpgadataflow"
HLS_NOTE = "not simulated here: needs Vitis HLS"


def check_style(style: object) -> str:
    if style not in IMPL_STYLES:
        raise InputError(f"config impl_style={style!r}: expected one of {', '.join(IMPL_STYLES)}")
    return str(style)


def standalone_thresholds(config) -> bool:
    """Thresholds as layers of their own: asked for, or implied by impl_style rtl/auto."""
    return bool(config.standalone_thresholds) or getattr(config, "impl_style", "auto") != "hls"


def prefer(model, style: str):
    """Set each unspecialized HW layer's `preferred_impl_style` for FINN+'s SpecializeLayers."""
    from finn.custom_op.fpgadataflow.hls import custom_op as hls_variants
    from finn.custom_op.fpgadataflow.rtl import custom_op as rtl_variants
    from qonnx.custom_op.registry import getCustomOp

    style = check_style(style)
    for node in model.graph.node:
        if node.domain != HW_DOMAIN:
            continue
        if style in ("auto", "rtl") and node.op_type + "_rtl" in rtl_variants:
            pref = "rtl"
        elif style == "hls" and node.op_type + "_hls" in hls_variants:
            pref = "hls"
        else:
            pref = ""  # FINN+'s own choice
        getCustomOp(node).set_nodeattr("preferred_impl_style", pref)
    return model


def impl_of(node) -> str:
    """"rtl", "hls", or "" for a node that is not a specialized HW layer."""
    if node.domain == HW_DOMAIN + ".rtl":
        return "rtl"
    if node.domain == HW_DOMAIN + ".hls":
        return "hls"
    return ""


def layer_table(model) -> list[dict]:
    """Every HW layer of an accelerator graph with its implementation."""
    rows = []
    for node in model.graph.node:
        impl = impl_of(node)
        if impl:
            rows.append({"layer": node.name, "op_type": node.op_type, "impl": impl,
                         "simulated": False, "note": HLS_NOTE if impl == "hls" else ""})
    return rows


def require_rtl(rows: list[dict], style: str, part: str) -> None:
    """With impl_style rtl, fail naming the layers FINN+ could only implement in HLS."""
    hls = [r["layer"] for r in rows if r["impl"] == "hls"]
    if style == "rtl" and hls:
        raise InputError(f"impl_style rtl: FINN+ has no RTL implementation for {', '.join(hls)} "
                         f"on {part} (use impl_style auto for a mixed design)")
