"""FINN+'s `finn.xsi` simulation API, implemented with Verilator.

FINN+'s RTL layers simulate through module attributes of `finn.xsi` (`compile_sim_obj`,
`load_sim_obj`, `reset_rtlsim`, `rtlsim_multi_io`, `close_rtlsim`), which normally wrap
Vivado's xsim. `install()` / `use_verilator()` bind these names to the functions below, so
FINN+'s own `prepare_rtlsim()` (with its `get_rtl_file_list()`) and `execute_node()` in
`exec_mode="rtlsim"` (with its data packing and cycle counting) run on Verilator.

Library layout: `compile_sim_obj` returns `(sim_dir, "xsim.dir/<top>/libfpsim.so")`, the
path shape FINN+'s `get_rtlsim()` expects; memory images are copied into `sim_dir`, the
working directory while the model starts.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from fpgaprint.compiler.rtlsim import verilator
from fpgaprint.compiler.rtlsim.errors import SimulationError
from fpgaprint.compiler.rtlsim.sim import VerilatedSim

HDL_DIR = Path(__file__).with_name("hdl")

# finn-rtllib sources Verilator cannot compile (paths relative to finn-rtllib), replaced by
# modules with the same interface in hdl/ (each file says why).
_SUBSTITUTES = {"mvu/add_multi.sv": HDL_DIR / "add_multi.sv",
                "fifo/hdl/fifo.sv": HDL_DIR / "fifo.sv",
                "skid/skid.sv": HDL_DIR / "skid.sv"}

SimEngine = VerilatedSim


def substitute(rtllib_path: str) -> Path | None:
    """This package's replacement of a finn-rtllib source (path relative to finn-rtllib) that
    Verilator cannot compile, or None."""
    return _SUBSTITUTES.get(rtllib_path)


def verilator_sources(source_list: list[str]) -> list[Path]:
    """FINN+'s file list as Verilator compiles it: packages first, unsupported files swapped."""
    from finn.util.settings import get_settings
    from finn_xsi.srcutil import order_pkg_first  # importable without the xsi extension

    rtllib = Path(os.path.realpath(get_settings().finn_rtllib))
    out: list[Path] = []
    for src in order_pkg_first([str(s) for s in source_list]):
        p = Path(os.path.realpath(src))
        if p.is_relative_to(rtllib):
            p = substitute(p.relative_to(rtllib).as_posix()) or p
        if p not in out:
            out.append(p)
    return out


def locate_glbl() -> Path | None:
    """Vivado's glbl.v is not needed by Verilator."""
    return None


def get_simkernel_so() -> str:
    """No simulator kernel library with Verilator (kept for interface compatibility)."""
    return ""


def compile_sim_obj(top_module_name: str, source_list: list[str], sim_out_dir: str | Path,
                    debug: bool = False, behav: bool = False,
                    fifosim: bool = False) -> tuple[Path, Path]:
    """Build `top_module_name` from FINN+'s file list; returns (sim_out_dir, library path).

    `behav` defines FINN_SIMULATION as it does for xsim. `debug` (waveform tracing) is
    accepted and ignored. Whole-design FIFO simulation (`fifosim`) is not provided here.
    """
    del debug
    if fifosim:
        raise SimulationError(f"{top_module_name}: stitched FIFO-sizing simulation (fifosim) "
                              "is not supported by the Verilator backend")
    sim_out_dir = Path(sim_out_dir)
    sim_out_dir.mkdir(parents=True, exist_ok=True)
    build = verilator.build_library(
        top_module_name, verilator_sources(source_list), label=top_module_name,
        defines={"FINN_SIMULATION": "1"} if behav else None, log_dir=sim_out_dir)
    rel = Path("xsim.dir") / top_module_name / verilator.LIBRARY_NAME
    dest = sim_out_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    _place(build.library, dest)
    _place(build.library.with_name("ports.json"), dest.with_name("ports.json"))
    for f in build.run_files:
        _place(f, sim_out_dir / f.name, link=False)
    (dest.parent / "cache_key").write_text(build.key + "\n")
    return sim_out_dir, rel


def _place(src: Path, dest: Path, link: bool = True) -> None:
    """Hard-link (cheap, same file system) or copy `src` to `dest`."""
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    if link:
        try:
            os.link(src, dest)
            return
        except OSError:
            pass
    shutil.copyfile(src, dest)


def load_sim_obj(sim_out_dir: str | Path, out_so_relative_path: str | Path,
                 tracefile: str | None = None, simkernel_so: str | None = None) -> VerilatedSim:
    """Start an instance of a library built by `compile_sim_obj` (named by its top)."""
    del tracefile, simkernel_so
    sim_out_dir = Path(sim_out_dir)
    lib = sim_out_dir / out_so_relative_path
    if not lib.is_file():
        raise SimulationError(f"{Path(out_so_relative_path).parent.name}: no simulation "
                              f"library at {lib}; run prepare_rtlsim first")
    return VerilatedSim(lib, run_dir=sim_out_dir, name=lib.parent.name)


def reset_rtlsim(sim: VerilatedSim, rst_name: str = "ap_rst_n", active_low: bool = True,
                 clk_name: str = "ap_clk", clk2x_name: str = "ap_clk2x",
                 n_cycles: int = 16) -> None:
    """Hold reset for `n_cycles` cycles and release it."""
    del clk_name, clk2x_name
    sim.reset(rst_name, active_low, n_cycles)


def close_rtlsim(sim: VerilatedSim) -> None:
    """Drive `sim_finish` when the design has it, run final blocks and free the model."""
    if sim.is_open() and sim.has("sim_finish"):
        sim.set("sim_finish", 1)
        sim.step(1)
    sim.close()


def rtlsim_multi_io(sim: VerilatedSim, io_dict: dict, num_out_values, sname: str = "_V_V",
                    liveness_threshold: int = 10000, liveness_estimate=None) -> int:
    """Stream io_dict["inputs"] into the design and collect io_dict["outputs"] in place.

    Same contract as FINN+'s: values are FINN-packed integers (`finn.util.data_packing`),
    streams are named `<key><sname>`; returns the cycles taken. An output that stays silent
    for `liveness_threshold` cycles raises SimulationError naming the layer and the stream.
    """
    from finn.util.basic import get_rtlsim_timeout_error_message

    outs = list(io_dict["outputs"])
    if len(outs) > 1:
        if not isinstance(num_out_values, dict):
            raise SimulationError(f"{sim.name}: num_out_values must be a dict for several "
                                  "output streams")
        counts = {o: int(num_out_values[o]) for o in outs}
    else:
        if not isinstance(num_out_values, (int, np.integer)):
            raise SimulationError(f"{sim.name}: num_out_values must be an int for one output "
                                  f"stream, got {type(num_out_values).__name__}")
        counts = {o: int(num_out_values) for o in outs}
    result = sim.stream(
        {k + sname: _words(sim, k + sname, v) for k, v in io_dict["inputs"].items()},
        {k + sname: n for k, n in counts.items()},
        liveness=int(liveness_threshold),
        timeout_message=get_rtlsim_timeout_error_message(liveness_threshold, liveness_estimate))
    for o in outs:
        io_dict["outputs"][o] = result.outputs[o + sname]
    return result.cycles


def _words(sim: VerilatedSim, stream: str, values):
    """A stream's words as the simulator takes them fastest: the bytes `packing` kept when
    they are as wide as the port, else the values."""
    from fpgaprint.compiler.rtlsim.packing import Words

    if isinstance(values, Words) and values.rows.shape[1] == sim.stream_ports(stream)[0].nbytes:
        return values.rows
    return values


def is_available() -> bool:
    """True when Verilator and a C++ compiler are found."""
    try:
        verilator.find_verilator()
        verilator._cxx()
    except SimulationError:
        return False
    return True


def ensure_available() -> bool:
    """Raise SimulationError unless Verilator can be used."""
    verilator.find_verilator()
    verilator._cxx()
    return True


_API = ("compile_sim_obj", "load_sim_obj", "reset_rtlsim", "close_rtlsim", "rtlsim_multi_io",
        "get_simkernel_so", "locate_glbl", "SimEngine", "is_available", "ensure_available")
_saved: list[dict[str, object]] = []
_MISSING = object()
_PACKING = "(packing)"


def install() -> None:
    """Make `finn.xsi` use this module, and FINN+'s rtlsim stream packing the vectorized one
    (`packing`), nestable; undo with `uninstall`."""
    import finn.xsi as finn_xsi

    from fpgaprint.compiler.rtlsim import packing

    this = sys.modules[__name__]
    saved = {n: finn_xsi.__dict__.get(n, _MISSING) for n in _API}
    saved[_PACKING] = packing.install()
    _saved.append(saved)
    for n in _API:
        setattr(finn_xsi, n, getattr(this, n))


def uninstall() -> None:
    """Undo the latest `install`."""
    import finn.xsi as finn_xsi

    from fpgaprint.compiler.rtlsim import packing

    if not _saved:
        return
    saved = _saved.pop()
    packing.uninstall(saved.pop(_PACKING))
    for n, v in saved.items():
        if v is _MISSING:
            finn_xsi.__dict__.pop(n, None)
        else:
            setattr(finn_xsi, n, v)


def installed() -> bool:
    """True while `finn.xsi` resolves to this module."""
    import finn.xsi as finn_xsi

    return finn_xsi.__dict__.get("compile_sim_obj") is compile_sim_obj


@contextmanager
def use_verilator() -> Iterator[None]:
    """Within the block, FINN+'s node-level rtlsim runs on Verilator."""
    install()
    try:
        yield
    finally:
        uninstall()
