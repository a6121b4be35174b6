"""Vivado-only steps (IP generation, stitched IP, bitfile, PYNQ driver) through FINN+,
gated on the vendor tools: without them the build stops after codegen and says so."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SUPPORTED = "AMD Vivado + Vitis HLS 2022.2 or 2024.2 and later (vitis-run)"
TOOLS = ("vivado", "vitis_hls")


def missing_tools() -> list[str]:
    """The vendor tools FINN+ needs that are absent (PATH and XILINX_VIVADO)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if "vitis_hls" in missing and shutil.which("vitis-run"):
        missing.remove("vitis_hls")
    if not os.environ.get("XILINX_VIVADO"):
        missing.append("XILINX_VIVADO")
    return missing


def run_or_explain(out: Path, board, config, log) -> dict:
    """Run FINN+'s hardware steps when the tools exist; otherwise one line on what is missing."""
    missing = missing_tools()
    produced = ["model/golden.onnx", "model/steps/*.onnx", "finn/ (RTL/HLS sources)",
                "reports/build.json"]
    if missing:
        msg = (f"Vivado not available ({', '.join(missing)} missing): stopped after codegen. "
               f"FINN+ needs {SUPPORTED} for IP generation, stitched IP and the bitfile. "
               f"Produced: {', '.join(produced)}.")
        log(f"[yellow]{msg}[/]", show=True)
        return {"ran": False, "missing": missing, "message": msg}
    return _run_hardware_steps(out, board, config, log)


def _run_hardware_steps(out: Path, board, config, log) -> dict:
    """ipgen → stitched IP → bitfile + hwh + driver, via FINN+'s own build steps."""
    from finn.builder import build_dataflow_config as bc
    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaprint.compiler.config import finn_config
    from fpgaprint.compiler.steps import finn_steps

    bs = finn_steps()

    steps = sorted((out / "model" / "steps").glob("*_codegen.onnx"))
    model = ModelWrapper(str(steps[-1]))
    cfg = finn_config(config, board, out / "finn" / "vivado",
                      generate_outputs=[bc.DataflowOutputType.STITCHED_IP,
                                        bc.DataflowOutputType.BITFILE,
                                        bc.DataflowOutputType.PYNQ_DRIVER])
    for step in (bs.step_hw_ipgen, bs.step_create_stitched_ip, bs.step_synthesize_bitfile,
                 bs.step_make_driver):
        log(f"vivado step {step.__name__}", show=True)
        model = step(model, cfg)
    hw = out / "hw"
    hw.mkdir(exist_ok=True)
    for pattern in ("bitfile/*.bit", "bitfile/*.hwh", "bitfile/*.xclbin", "driver/*"):
        for f in (out / "finn" / "vivado").glob(pattern):
            if f.is_file():
                shutil.copy2(f, hw / f.name)
    return {"ran": True, "files": sorted(p.name for p in hw.iterdir())}
