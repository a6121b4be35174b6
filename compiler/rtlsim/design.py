"""A stitched RTL design as it is packaged (`hw/rtl/`), built and simulated with Verilator.

`hw/rtl/design.json` (written by `stitch.export`) describes it; every path in it is relative to
`hw/rtl/`:

* `top`: the top module (`finn_design`), `sources`: every source in compile order (packages
  first, the top last), `ports`: clock, active-low reset, input and output AXI stream with
  their TDATA widths;
* `io`: FINN's io_shape_dict of the streams (datatypes; normal, folded and packed shapes):
  one input vector is `prod(ishape_folded[1:-1])` words of `ishape_packed[-1]` bytes,
  FINN-packed (element 0 of the innermost dimension in the least significant bits);
* `layers`: the stitched graph's nodes in stream order; `graph`: that graph (`design.onnx`);
* `memories`: for each weight or threshold memory: the golden model's memory key, the RTL
  layer, the FINN+ writer mode of its image and its files (FINN+ name -> `mem/...`);
* `estimates`: FINN+'s cycle estimates of the stitched graph;
* `fifos`: each FIFO's name, depth, stream width and ram_style (the depths as sized,
  `rtlsim.fifosizing`); `monitors`: FIFOs whose occupancy peak is a top output `NAME_maxcount`
  (only in the FIFO sizing design, never packaged).

Sources from FINN+'s RTL library keep their library path under `finn-rtllib/`; the three that
Verilator cannot compile are swapped for `compiler/rtlsim/hdl/` at build time (the package
keeps FINN+'s originals). Memory images are read with `$readmemh` at start-up from `mem/`
relative to the simulation's working directory (`run_dir`, by default `hw/rtl/` itself).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path, PurePosixPath

import numpy as np

from fpgaprint.compiler.rtlsim.errors import SimulationError
from fpgaprint.core.errors import InputError

DESIGN_JSON = "design.json"
MAX_JSON = 4 << 20
RESET_CYCLES = 16
WRITER_MODES = ("decoupled_verilog_dat", "internal_embedded")  # FINN+ make_weight_file modes


def _rel(value, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: expected a relative path, got {value!r}")
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts or "\\" in value:
        raise InputError(f"{where}: path {value!r} is not inside hw/rtl/")
    return value


class StitchedDesign:
    """The stitched design in `rtl_dir` (a package's `hw/rtl/`), its description validated."""

    def __init__(self, rtl_dir: str | Path):
        from fpgaprint.core.streams import DriverIO

        self.dir = Path(rtl_dir)
        path = self.dir / DESIGN_JSON
        if not path.is_file():
            raise InputError(f"{self.dir}: no stitched RTL design ({DESIGN_JSON} missing)")
        if path.stat().st_size > MAX_JSON:
            raise InputError(f"{path}: larger than {MAX_JSON} bytes")
        try:
            d = json.loads(path.read_bytes())
        except ValueError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from None
        where = str(path)
        if not isinstance(d, dict) or d.get("format") != "fpgaprint-rtl/1":
            raise InputError(f"{where}: not an fpgaprint-rtl/1 design description")
        top = d.get("top")
        if not isinstance(top, str) or not re.fullmatch(r"[A-Za-z_]\w{0,63}", top):
            raise InputError(f"{where}: top {top!r} is not a module name")
        sources = d.get("sources")
        if not isinstance(sources, list) or not sources:
            raise InputError(f"{where}: no sources")
        self.sources = [_rel(s, f"{where}: sources") for s in sources]
        for s in self.sources:
            if not (self.dir / s).is_file():
                raise InputError(f"{where}: source {s} not found in {self.dir}")
        self.top = top
        self.raw = d
        try:
            ports = d["ports"]
            self.clock, self.reset_n = str(ports["clock"]), str(ports["reset_n"])
            self.input, self.output = str(ports["input"]["name"]), str(ports["output"]["name"])
        except (KeyError, TypeError) as e:
            raise InputError(f"{where}: ports: missing {e}") from None
        self.io = DriverIO.from_io_shape_dict(d.get("io") or {}, f"{where}: io")
        self.memories = list(d.get("memories") or [])
        for m in self.memories:
            if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
                raise InputError(f"{where}: memories: malformed entry {m!r}"[:200])
            for rel in m["files"].values():
                _rel(rel, f"{where}: memories")
            if m.get("writer") not in WRITER_MODES:
                raise InputError(f"{where}: memories: unknown image writer {m.get('writer')!r}")
        self.estimates = dict(d.get("estimates") or {})
        self.monitors = list(d.get("monitors") or [])
        for name in self.monitors:
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w{0,127}", name):
                raise InputError(f"{where}: monitors: {name!r} is not a FIFO name"[:200])
        self.graph = self.dir / _rel(d.get("graph", "design.onnx"), f"{where}: graph")

    @property
    def words_in(self) -> int:
        """Input stream words per vector."""
        return int(np.prod(self.io.ishape_folded[1:-1]))

    @property
    def words_out(self) -> int:
        return int(np.prod(self.io.oshape_folded[1:-1]))

    def verilator_sources(self) -> list[Path]:
        """The sources as Verilator compiles them (FINN+'s library files it cannot compile
        swapped for this package's equivalents)."""
        from fpgaprint.compiler.rtlsim.xsi import substitute

        out = []
        for s in self.sources:
            sub = substitute(s.removeprefix("finn-rtllib/")) if s.startswith("finn-rtllib/") \
                else None
            out.append(sub or (self.dir / s))
        return out

    def build(self, log_dir: str | Path | None = None):
        """Build (or reuse from the cache) the Verilator model of the whole design."""
        from fpgaprint.compiler.rtlsim.verilator import build_library

        return build_library(self.top, self.verilator_sources(),
                             label=f"stitched design {self.top}", log_dir=log_dir)

    def simulator(self, run_dir: str | Path | None = None, build=None) -> "StitchedSim":
        return StitchedSim(self, run_dir, build)


class StitchedSim:
    """One instance of a stitched design, reset and ready to stream vectors.

    `run_dir` holds the `mem/` images it reads at start-up (default: the design folder).
    """

    def __init__(self, design: StitchedDesign, run_dir: str | Path | None = None, build=None):
        from fpgaprint.compiler.rtlsim.sim import VerilatedSim

        self.design = design
        self.build = build or design.build()
        self.sim = VerilatedSim(self.build.library, run_dir=Path(run_dir or design.dir),
                                name=f"stitched design {design.top}")
        for port in (design.clock, design.reset_n):
            self.sim.signal(port)
        self.sim.reset(design.reset_n, True, RESET_CYCLES)
        est = design.estimates
        self.latency_estimate = int(est.get("latency_cycles") or 0)
        self.ii_estimate = int(est.get("ii_cycles") or 0)

    def close(self) -> None:
        self.sim.close()

    def __enter__(self) -> "StitchedSim":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reset(self) -> None:
        self.sim.reset(self.design.reset_n, True, RESET_CYCLES)

    def run(self, x: np.ndarray, stalls=None) -> tuple[np.ndarray, int]:
        """(raw outputs int64 (B, R), cycles) for inputs (B, *input) on the input grid;
        `stalls` (sim.Stalls): seeded random gaps on the input valid and output ready."""
        from fpgaprint.core.streams import fold_input, pack_input, unfold_output, unpack_output

        io = self.design.io
        x = np.asarray(x)
        b = x.shape[0]
        packed = pack_input(fold_input(x, io), io)
        words = packed.reshape(-1, packed.shape[-1])
        count = b * self.design.words_out
        slack = max(self.latency_estimate, self.ii_estimate, 1000)
        if stalls is not None:
            slack = int(slack / max(0.05, (1 - stalls.input) * (1 - stalls.output)))
        try:
            res = self.sim.stream(
                {self.design.input: words}, {self.design.output: count},
                liveness=4 * slack + 10_000,
                max_cycles=(b + 2) * 4 * slack + 100_000, as_bytes=True, stalls=stalls,
                timeout_message="RTL simulation produced no output for too long "
                                f"(FINN+ estimates {self.latency_estimate} cycles of latency).")
        except SimulationError:
            self.reset()  # the next run starts clean
            raise
        out = res.outputs[self.design.output].reshape(io.batched("oshape_packed", b))
        return unfold_output(unpack_output(out, io), io), res.cycles

    def peaks(self) -> dict[str, int]:
        """The most items each monitored FIFO held since reset (design.json `monitors`)."""
        return {name: self.sim.get(f"{name}_maxcount") for name in self.design.monitors}

    def measure(self, x: np.ndarray) -> dict:
        """Cycles per frame: latency (one vector into an idle design) and initiation interval
        (a batch streamed back to back: (cycles(B) - latency) / (B - 1)); simulation speed."""
        self.reset()
        t0 = time.perf_counter()
        _, latency = self.run(x[:1])
        self.reset()
        raw, cycles = self.run(x)
        secs = time.perf_counter() - t0
        b = len(x)
        ii = (cycles - latency) / (b - 1) if b > 1 else float(latency)
        return {"latency_cycles": int(latency), "ii_cycles": round(ii, 2), "batch": int(b),
                "batch_cycles": int(cycles), "seconds": round(secs, 4),
                "cycles_per_second": round((latency + cycles) / secs) if secs else None}


def memory_images(design: StitchedDesign, golden) -> dict:
    """The design's weight and threshold memories keyed like the golden model's
    (`MVAU_0/weights`), in the datatypes of the RTL layers that store them. Their values are
    the golden model's, which the build checked the packaged images against."""
    from fpgaprint.core.words import MemoryImage, WordFormat

    mems = golden.memories()
    out = {}
    for m in design.memories:
        key = m.get("key")
        if key not in mems:
            raise InputError(f"{design.dir}: memory {key!r} of layer {m.get('layer')} is not a "
                             "memory of the package's golden model")
        g = mems[key]
        fmt = WordFormat.of(str(m.get("datatype")))
        out[key] = MemoryImage(g.layer, g.tensor, g.kind, g.values.copy(), fmt.datatype,
                               fmt.bits, fmt.encoding == "signed")
    return out


def write_memories(design: StitchedDesign, run_dir: str | Path,
                   values: dict[str, np.ndarray]) -> list[dict]:
    """A run directory for the design with the given memories rewritten: `mem/` copied, then
    the images of `values` (memory key -> new values) written by FINN+'s own writer of that
    layer's image. Returns every image bit that differs from the packaged image
    ({memory, file, line, bit}; line from 1, bit 0 = least significant bit of the line)."""
    import shutil

    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    from fpgaprint.compiler.rtlsim import packing
    from fpgaprint.compiler.rtlsim.stitch import write_image

    run_dir = Path(run_dir)
    if (run_dir / "mem").exists():
        shutil.rmtree(run_dir / "mem")
    shutil.copytree(design.dir / "mem", run_dir / "mem")
    entries = {m["key"]: m for m in design.memories}
    changes: list[dict] = []
    model = ModelWrapper(str(design.graph)) if values else None
    for key, new in values.items():
        entry = entries.get(key)
        if entry is None:
            raise InputError(f"no memory {key!r} in the stitched design")
        node = model.get_node_from_name(str(entry["layer"]))
        if node is None:
            raise InputError(f"{design.graph}: no layer {entry['layer']!r}")
        with packing.installed():  # FINN+'s writer, packing as when codegen wrote the image
            written = write_image(getCustomOp(node), str(entry["writer"]), new)
        for name, rel in entry["files"].items():
            if name not in written:
                raise InputError(f"FINN+'s writer of {entry['layer']} wrote no {name}")
            old = (design.dir / rel).read_text().split()
            lines = written[name].split()
            if len(lines) != len(old):
                raise InputError(f"{rel}: {len(old)} lines packaged, {len(lines)} written")
            for i, (a, b) in enumerate(zip(old, lines)):
                if a != b:
                    try:
                        diff = int(a, 16) ^ int(b, 16)
                    except ValueError:
                        raise InputError(f"{rel}: line {i + 1} is not hexadecimal") from None
                    changes += [{"memory": key, "file": rel, "line": i + 1, "bit": bit}
                                for bit in range(diff.bit_length()) if diff >> bit & 1]
            (run_dir / rel).write_text("\n".join(lines) + "\n")
    return changes
