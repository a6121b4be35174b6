"""The stitched RTL accelerator: FINN+'s layers chained into one Verilog top, no block design.

`plumb` inserts FINN+'s stream plumbing the way FINN+'s `step_set_fifo_depths` does
(InsertDWC, InsertFIFO, SpecializeLayers, the FIFO depths from a hook of
`rtlsim.fifosizing`, PrepareIP for the new nodes); the step itself is not called because its
IP generation rewrites every generated source to absolute paths. `Netlist` reads each layer's
own Vivado IP Integrator commands (`code_generation_ipi`: its source files, its module
instances and the nets between them, e.g. an MVAU's weight streamer) and emits one Verilog top
that instantiates them and chains their AXI streams along the graph, with FINN's stitched-IP
port names:

    module finn_design (input ap_clk, input ap_rst_n,
                        input [IW-1:0] s_axis_0_tdata, input s_axis_0_tvalid,
                        output s_axis_0_tready,
                        output [OW-1:0] m_axis_0_tdata, output m_axis_0_tvalid,
                        input m_axis_0_tready);

`export` writes the design into a package folder (`hw/rtl/`): the top, the layer sources and
FINN's RTL library files it uses, the memory images under `mem/` (memory paths in the sources
rewritten relative to `hw/rtl/`), the stitched graph (`design.onnx`, build paths removed) and
`design.json` (see `compiler/rtlsim/design.py`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fpgaprint.compiler.rtlsim.errors import RtlMismatchError
from fpgaprint.compiler.rtlsim.impl import impl_of
from fpgaprint.core.errors import FpgaprintError

TOP = "finn_design"
COUNT_WIDTH = 32  # the occupancy outputs of FINN+'s FIFO wrapper (fifo_template.v)
TOP_FILE = TOP + ".v"
DESIGN_JSON = "design.json"
DESIGN_ONNX = "design.onnx"
FORMAT = "fpgaprint-rtl/1"
ROLES = ("tdata", "tvalid", "tready")
# node attributes that hold build-machine paths, cleared in the packaged graph
PATH_ATTRS = ("code_gen_dir_ipgen", "ipgen_path", "ip_path", "rtlsim_so", "code_gen_dir_cppsim",
              "executable_path", "rtlsim_trace", "debug_log_path")
# memories of RTL layers: op type -> FINN+ weight-file mode of the image its RTL reads
MEMORY_WRITERS = {"MVAU_rtl": "decoupled_verilog_dat", "VVAU_rtl": "decoupled_verilog_dat",
                  "Thresholding_rtl": "internal_embedded"}


class NotStitchable(FpgaprintError):
    """The design cannot be stitched here (an HLS layer, an unsupported interface); the reason
    names the layer. The build reports it and goes on without a stitched design."""


def plumb(model, part: str, clock_ns: float, set_depths=None):
    """A copy of the accelerator graph with FINN+'s width converters and FIFOs inserted,
    specialized and code-generated (existing layers keep their generated code).

    `set_depths(graph)`, when given, sets the FIFOs' `depth` (and `ram_style`) on the
    specialized, named graph before their code is generated (`rtlsim.fifosizing`)."""
    import copy

    from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
    from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.transformation.general import GiveUniqueNodeNames

    hls = [n.name for n in model.graph.node if impl_of(n) != "rtl"]
    if hls:
        raise NotStitchable(f"not all layers are RTL ({', '.join(hls)})")
    m = copy.deepcopy(model)
    for t in (InsertDWC(), InsertFIFO(create_shallow_fifos=True), SpecializeLayers(part),
              GiveUniqueNodeNames()):
        m = m.transform(t)
    _keep_names(model, m)
    if set_depths is not None:
        m = set_depths(m)
    m = m.transform(PrepareIP(part, clock_ns))
    hls = [f"{n.name} ({n.op_type})" for n in m.graph.node if impl_of(n) != "rtl"]
    if hls:
        raise NotStitchable(f"FINN+ inserted layers without an RTL variant: {', '.join(hls)}")
    return m


def _keep_names(model, plumbed) -> None:
    """The layers of `model` keep their names in `plumbed` (GiveUniqueNodeNames numbers every
    node of a part of the graph from 0; the plumbing keeps each op type's order)."""
    names: dict[str, list[str]] = {}
    for n in model.graph.node:
        names.setdefault(n.op_type, []).append(n.name)
    seen: dict[str, int] = {}
    for n in plumbed.graph.node:
        k = seen[n.op_type] = seen.get(n.op_type, -1) + 1
        if k < len(names.get(n.op_type, ())):
            n.name = names[n.op_type][k]
    if len({n.name for n in plumbed.graph.node}) != len(plumbed.graph.node):
        raise NotStitchable("the plumbed graph's node names are not unique")


def estimates(model) -> dict:
    """FINN+'s cycle estimates of a stitched graph: latency (critical path) and initiation
    interval (slowest layer)."""
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    perf = model.transform(AnnotateCycles()).analysis(dataflow_performance)
    return {"latency_cycles": int(perf["critical_path_cycles"]),
            "ii_cycles": int(perf["max_cycles"]), "slowest_layer": perf["max_cycles_node_name"]}


# ------------------------------------------------------------------ Verilog port lists


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return re.sub(r"\(\*.*?\*\)", " ", text, flags=re.S)


def _balanced(text: str, start: int) -> tuple[str, int]:
    """Content of the parenthesis opening at text[start] and the index after it."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    raise ValueError("unbalanced parentheses")


def _split_top(text: str) -> list[str]:
    """Split at commas outside (), [] and {}."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def module_ports(text: str, module: str) -> list[tuple[str, str]]:
    """(direction, name) of each port of `module` (ANSI header) in Verilog source `text`."""
    src = _strip_comments(text)
    m = re.search(rf"\bmodule\s+{re.escape(module)}\b", src)
    if m is None:
        raise ValueError(f"module {module} not found")
    i = m.end()
    imp = re.compile(r"\s*import\s+[^;]*;")
    while (mi := imp.match(src, i)) is not None:
        i = mi.end()
    rest = src[i:].lstrip()
    i = len(src) - len(rest)
    if rest.startswith("#"):
        _, i = _balanced(src, src.index("(", i))
        i = src.index("(", i)
    else:
        i = src.index("(", i)
    body, _ = _balanced(src, i)
    ports, direction = [], None
    for item in _split_top(body):
        words = item.split()
        if words and words[0] in ("input", "output", "inout"):
            direction = words[0]
        name = re.search(r"([A-Za-z_]\w*)\s*(\[[^\]]*\]\s*)*$", item)
        if direction is None or name is None:
            raise ValueError(f"cannot read port declaration {item!r} of {module}")
        ports.append((direction, name.group(1)))
    return ports


# ------------------------------------------------------------------ netlist


@dataclass
class _Wire:
    name: str
    width: int = 1
    top: bool = False  # a port of the top module


@dataclass
class Netlist:
    """The stitched top built from each layer's IPI commands; `files` in compile order."""

    model: object
    monitor: bool = False  # each FIFO's maximum occupancy as a top output NAME_maxcount
    files: list[Path] = field(default_factory=list)
    file_node: dict[Path, str] = field(default_factory=dict)  # generated file -> its layer
    instances: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (module, node)
    in_width: int = 0
    out_width: int = 0
    tied: list[str] = field(default_factory=list)  # instance inputs tied to 0 (unused)

    def __post_init__(self):
        self._parent: dict = {}
        self._bound: dict = {}  # endpoint -> _Wire
        self._intfs: dict[str, set[str]] = {}  # instance path -> AXI stream interface names
        self._read()

    # -- union-find over endpoints ((path, port, role)) ----------------------------------
    def _find(self, k):
        self._parent.setdefault(k, k)
        while self._parent[k] != k:
            self._parent[k] = self._parent[self._parent[k]]
            k = self._parent[k]
        return k

    def _union(self, a, b) -> None:
        self._parent[self._find(a)] = self._find(b)

    def _intf(self, path: str, name: str) -> list[tuple]:
        self._intfs.setdefault(path, set()).add(name)
        return [(path, name, r) for r in ROLES]

    def _bind(self, key, wire: _Wire, node: str) -> None:
        old = self._bound.get(key)
        if old is not None and old.name != wire.name:
            raise NotStitchable(f"{node}: {'/'.join(key[:2])} is connected to {old.name} and "
                                f"{wire.name}")
        self._bound[key] = wire

    # -- reading the layers --------------------------------------------------------------
    def _read(self) -> None:
        from qonnx.custom_op.registry import getCustomOp

        m = self.model
        g = m.graph
        if len(g.input) != 1 or len(g.output) != 1:
            raise NotStitchable(f"{len(g.input)} inputs and {len(g.output)} outputs; the "
                                "stitched top has one of each")
        streams: dict[str, str] = {}  # tensor -> wire prefix
        for node in g.node:
            op = getCustomOp(node)
            intf = op.get_verilog_top_module_intf_names()
            for i, (name, _) in enumerate(intf["m_axis"]):
                streams[node.output[i]] = f"{node.name}_{name}"
        streams[g.input[0].name] = "s_axis_0"
        streams[g.output[0].name] = "m_axis_0"
        for node in g.node:
            self._read_node(node, getCustomOp(node), streams)

    def _stream_width(self, tensor: str) -> int:
        from qonnx.custom_op.registry import getCustomOp

        m = self.model
        prod = m.find_producer(tensor)
        cons = m.find_consumers(tensor)
        widths = set()
        if prod is not None:
            widths.add(int(getCustomOp(prod).get_outstream_width_padded(
                list(prod.output).index(tensor))))
        for c in cons:
            widths.add(int(getCustomOp(c).get_instream_width_padded(list(c.input).index(tensor))))
        if len(widths) != 1:
            raise NotStitchable(f"stream {tensor}: producer and consumer widths differ "
                                f"({sorted(widths)} bits)")
        return widths.pop()

    def _read_node(self, node, op, streams: dict[str, str]) -> None:
        name = node.name
        intf = op.get_verilog_top_module_intf_names()
        for kind in ("aximm", "ap_none"):
            if intf.get(kind):
                raise NotStitchable(f"{name}: {kind} interface {intf[kind]} is not stitched here")
        try:
            pumped = bool(op.get_nodeattr("pumpedCompute") or op.get_nodeattr("pumpedMemory"))
        except AttributeError:
            pumped = False
        if pumped:
            raise NotStitchable(f"{name}: a double-pumped layer needs ap_clk2x, which the "
                                "stitched top does not have")
        clk, rst = _Wire("ap_clk", top=True), _Wire("ap_rst_n", top=True)
        for pin in intf["clk"] + intf.get("clk2x", []):
            self._bind((name, pin, None), clk, name)
        for pin in intf["rst"]:
            self._bind((name, pin, None), rst, name)
        data_inputs = [t for t in node.input if self.model.get_initializer(t) is None]
        for (pin, _), tensor in zip(intf["s_axis"], data_inputs):
            self._bind_stream(name, pin, tensor, streams)
        for (pin, _), tensor in zip(intf["m_axis"], node.output):
            self._bind_stream(name, pin, tensor, streams)

        for cmd in op.code_generation_ipi():
            cmd = " ".join(cmd.split())
            if m := re.fullmatch(r"add_files -norecurse (\S+)", cmd):
                p = Path(os.path.realpath(m.group(1)))
                if p not in self.files:
                    self.files.append(p)
                    self.file_node[p] = name
            elif m := re.fullmatch(r"create_bd_cell -type (?:module|hier) -reference (\S+) (\S+)",
                                   cmd):
                self.instances[m.group(2).strip("/")] = (m.group(1), name)
            elif re.fullmatch(r"create_bd_cell -type hier (\S+)", cmd):
                pass  # the layer's hierarchy: its pins are the layer's ports (bound above)
            elif re.fullmatch(r"create_bd_(?:intf_)?pin .*", cmd) or cmd == "save_bd_design":
                pass
            elif m := re.fullmatch(r"connect_bd_(intf_)?net \[get_bd_(?:intf_)?pins (\S+)\] "
                                   r"\[get_bd_(?:intf_)?pins (\S+)\]", cmd):
                a, b = (s.strip("/").rsplit("/", 1) for s in m.group(2, 3))
                if m.group(1):
                    for ka, kb in zip(self._intf(*a), self._intf(*b)):
                        self._union(ka, kb)
                else:
                    self._union((a[0], a[1], None), (b[0], b[1], None))
            else:
                raise NotStitchable(f"{name}: FINN+'s IP Integrator command "
                                    f"'{cmd.split()[0]}' has no equivalent here ({cmd[:80]})")
        # a flat layer is its own instance: its interface names are its streams'
        for pin, _ in intf["s_axis"] + intf["m_axis"]:
            self._intf(name, pin)

    def _bind_stream(self, node: str, pin: str, tensor: str, streams: dict[str, str]) -> None:
        prefix = streams[tensor]
        width = self._stream_width(tensor)
        top = prefix in ("s_axis_0", "m_axis_0")
        if prefix == "s_axis_0":
            self.in_width = width
        if prefix == "m_axis_0":
            self.out_width = width
        for key in self._intf(node, pin):
            w = width if key[2] == "tdata" else 1
            self._bind(key, _Wire(f"{prefix}_{key[2]}", w, top), node)

    # -- emitting ------------------------------------------------------------------------
    def _module_text(self, module: str) -> tuple[Path, list[tuple[str, str]]]:
        for f in self.files:
            if f.suffix in (".v", ".sv") and f.is_file():
                text = f.read_text(errors="replace")
                if re.search(rf"\bmodule\s+{re.escape(module)}\b", _strip_comments(text)):
                    return f, module_ports(text, module)
        raise NotStitchable(f"module {module} is not defined in the layer's sources")

    def _key(self, path: str, port: str):
        for name in self._intfs.get(path, ()):
            for role in ROLES:
                if port.lower() == f"{name}_{role}".lower():
                    return (path, name, role)
        return (path, port, None)

    def _internal_width(self, members: list) -> int:
        from qonnx.custom_op.registry import getCustomOp

        for path, port, role in members:
            if role is None:
                continue
            if role != "tdata":
                return 1
            m = re.fullmatch(r"in(\d+)_V", port)
            if m:
                node = self.model.get_node_from_name(self.instances[path][1])
                return int(getCustomOp(node).get_instream_width_padded(int(m.group(1))))
        raise NotStitchable(f"cannot tell the width of the net between "
                            f"{', '.join('/'.join(x for x in k if x) for k in members)}")

    def monitored(self) -> list[str]:
        """The FIFOs whose occupancy peak is a top output (with `monitor`)."""
        if not self.monitor:
            return []
        return [n.name for n in self.model.graph.node if n.op_type == "StreamingFIFO_rtl"]

    def verilog(self) -> str:
        """The top module's source."""
        monitored = set(self.monitored())
        inst_ports = {}
        for path, (module, _) in self.instances.items():
            _, ports = self._module_text(module)
            inst_ports[path] = [(d, p, self._key(path, p)) for d, p in ports]
        nets: dict = {}
        for path, ports in inst_ports.items():
            for _, _, key in ports:
                if key in self._parent or key in self._bound:
                    nets.setdefault(self._find(key), []).append(key)
        for key in self._bound:
            nets.setdefault(self._find(key), [])
        signal: dict = {}
        internal: list[_Wire] = []
        for root, members in nets.items():
            wires = {w.name: w for k, w in self._bound.items() if self._find(k) == root}
            if len(wires) > 1:
                raise NotStitchable(f"nets {', '.join(sorted(wires))} are shorted together")
            if wires:
                signal[root] = next(iter(wires.values()))
                continue
            path, port, role = members[0]
            w = _Wire(f"{path.rsplit('/', 1)[-1]}_{port}" + (f"_{role}" if role else ""),
                      self._internal_width(members))
            signal[root] = w
            internal.append(w)
        stream_wires = sorted({w.name: w for w in self._bound.values() if not w.top}.values(),
                              key=lambda w: w.name)
        lines = [
            "// Generated by fpgaprint: the accelerator's FINN+ RTL layers, with FINN+'s FIFOs",
            "// and width converters, chained as FINN's stitched IP (its port names).",
            f"module {TOP} (",
            "    input  wire ap_clk,",
            "    input  wire ap_rst_n,",
            f"    input  wire [{self.in_width - 1}:0] s_axis_0_tdata,",
            "    input  wire s_axis_0_tvalid,",
            "    output wire s_axis_0_tready,",
            f"    output wire [{self.out_width - 1}:0] m_axis_0_tdata,",
            "    output wire m_axis_0_tvalid,",
            "    input  wire m_axis_0_tready" + ("," if monitored else ""),
            *[f"    output wire [{COUNT_WIDTH - 1}:0] {n}_maxcount"
              + ("," if i < len(monitored) - 1 else "")
              for i, n in enumerate(sorted(monitored))],
            ");",
            "",
        ]
        for w in stream_wires + internal:
            rng = f"[{w.width - 1}:0] " if w.width > 1 else ""
            lines.append(f"wire {rng}{w.name};")
        undriven = []
        for path, (module, node) in self.instances.items():
            inst = path.rsplit("/", 1)[-1]
            conns = []
            for direction, port, key in inst_ports[path]:
                root = self._find(key) if (key in self._parent or key in self._bound) else None
                if root is not None and root in signal:
                    conns.append(f".{port}({signal[root].name})")
                elif port == "maxcount" and path in monitored:
                    conns.append(f".{port}({path}_maxcount)")
                elif direction == "input":
                    conns.append(f".{port}(0)")  # an unused input: AXI-lite, set selection
                    undriven.append(f"{inst}.{port}")
                else:
                    conns.append(f".{port}()")
            lines.append("")
            lines.append(f"{module} {inst} (")
            lines.append(",\n".join("    " + c for c in conns))
            lines.append(");")
        lines += ["", f"endmodule // {TOP}", ""]
        self.tied = undriven
        return "\n".join(lines)


# ------------------------------------------------------------------ export


def _mem_name(node: str, name: str) -> str:
    return name if name.startswith(node + "_") else f"{node}_{name}"


def _rewrite_paths(text: str, src: Path, node: str, rtl_dir: Path,
                   mems: dict[str, str]) -> str:
    """Memory paths in a generated source: copy the files to mem/, refer to them relative to
    hw/rtl/. `mems` collects original path -> package path."""
    def repl(m: re.Match) -> str:
        value = m.group(2)
        if not (value.startswith("/") or value.startswith("./")):
            return m.group(0)
        p = Path(os.path.realpath(value if value.startswith("/") else src.parent / value[2:]))
        if p.is_file():
            rel = "mem/" + _mem_name(node, p.name)
            shutil.copyfile(p, rtl_dir / rel)
            mems[str(p)] = rel
            return f'{m.group(1)}"{rel}"'
        matches = sorted(p.parent.glob(p.name + "*.dat")) if p.parent.is_dir() else []
        if matches:
            prefix = _mem_name(node, p.name)
            for f in matches:
                rel = "mem/" + prefix + f.name[len(p.name):]
                shutil.copyfile(f, rtl_dir / rel)
                mems[str(f)] = rel
            return f'{m.group(1)}"mem/{prefix}"'
        raise NotStitchable(f"{node}: {src.name} refers to {value}, which does not exist")

    return re.sub(r'(parameter\s+\w+\s*=\s*)"([^"]*)"', repl, text)


def export(model, rtl_dir: Path, golden, estimates: dict | None = None,
           monitor: bool = False) -> dict:
    """Write the stitched design of the plumbed graph `model` into `rtl_dir` (replaced);
    returns design.json's content. `golden` (GoldenModel) relates memories to its keys.
    `monitor`: the FIFOs' occupancy peaks are top outputs (FIFO sizing)."""
    from finn.util.settings import get_settings

    from fpgaprint.core.streams import io_shape_dict

    rtl_dir = Path(rtl_dir)
    if rtl_dir.exists():
        shutil.rmtree(rtl_dir)
    (rtl_dir / "mem").mkdir(parents=True)
    (rtl_dir / "layers").mkdir()
    net = Netlist(model, monitor)
    top = net.verilog()
    rtllib = Path(os.path.realpath(get_settings().finn_rtllib))
    sources: list[str] = []
    mem_files: dict[str, str] = {}
    for src in net.files:
        if not src.is_file():
            raise NotStitchable(f"{net.file_node[src]}: source {src.name} not found")
        if src.is_relative_to(rtllib):
            rel = "finn-rtllib/" + src.relative_to(rtllib).as_posix()
            (rtl_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, rtl_dir / rel)
        else:
            rel = "layers/" + src.name
            if (rtl_dir / rel).exists():
                raise NotStitchable(f"two layer sources named {src.name}")
            text = _rewrite_paths(src.read_text(), src, net.file_node[src], rtl_dir, mem_files)
            (rtl_dir / rel).write_text(text)
        sources.append(rel)
    (rtl_dir / TOP_FILE).write_text(top)
    from finn_xsi.srcutil import order_pkg_first

    from fpgaprint.compiler.rtlsim import packing

    sources = order_pkg_first(sources) + [TOP_FILE]
    with packing.installed():  # FINN+'s writers, packing as when codegen wrote the images
        memories = _memories(model, golden, mem_files, rtl_dir)
    _save_graph(model, rtl_dir / DESIGN_ONNX)
    design = {
        "format": FORMAT,
        "top": TOP,
        "sources": sources,
        "ports": {"clock": "ap_clk", "reset_n": "ap_rst_n",
                  "input": {"name": "s_axis_0", "width": net.in_width},
                  "output": {"name": "m_axis_0", "width": net.out_width}},
        "io": io_shape_dict(model),
        "layers": [{"name": n.name, "op_type": n.op_type} for n in model.graph.node],
        "fifos": fifo_table(model),
        "monitors": net.monitored(),
        "tied_inputs": net.tied,
        "memories": memories,
        "graph": DESIGN_ONNX,
        "estimates": estimates or {},
    }
    (rtl_dir / DESIGN_JSON).write_text(json.dumps(design, indent=1, sort_keys=True) + "\n")
    check_relative(rtl_dir, (rtllib,))
    return design


def fifo_table(model) -> list[dict]:
    """Each FIFO of a plumbed graph: name, depth, stream width (bits), ram_style."""
    from qonnx.custom_op.registry import getCustomOp

    out = []
    for n in model.graph.node:
        if n.op_type.startswith("StreamingFIFO"):
            op = getCustomOp(n)
            out.append({"name": n.name, "depth": int(op.get_nodeattr("depth")),
                        "width": int(op.get_instream_width()),
                        "ram_style": op.get_nodeattr("ram_style")})
    return out


def _save_graph(model, path: Path) -> None:
    """The stitched graph without build-machine paths (FINN+'s node attributes) and with
    readable tensor names instead of the random ones FINN+ gives inserted streams."""
    import copy

    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveReadableTensorNames

    m = copy.deepcopy(model).transform(GiveReadableTensorNames())
    for node in m.graph.node:
        op = getCustomOp(node)
        for attr in PATH_ATTRS:
            try:
                if op.get_nodeattr(attr):
                    op.set_nodeattr(attr, "")
            except AttributeError:
                pass
    del m.model.metadata_props[:]
    m.save(str(path))


def _memories(model, golden, mem_files: dict[str, str], rtl_dir: Path) -> list[dict]:
    """The RTL layers' memory images, each checked against the golden model's memory through
    FINN+'s own writer of that image (`make_weight_file`)."""
    from qonnx.custom_op.registry import getCustomOp

    by_tensor = {img.tensor: key for key, img in golden.memories().items()}
    out = []
    for node in model.graph.node:
        mode = MEMORY_WRITERS.get(node.op_type)
        if mode is None:
            continue
        op = getCustomOp(node)
        if node.op_type != "Thresholding_rtl" and op.get_nodeattr("mem_mode") != \
                "internal_decoupled":
            raise NotStitchable(f"{node.name}: mem_mode {op.get_nodeattr('mem_mode')} is not "
                                "stitched here (internal_decoupled is)")
        tensor = node.input[1]
        key = by_tensor.get(tensor)
        if key is None:
            raise NotStitchable(f"{node.name}: its memory {tensor} is not a memory of the "
                                "golden model")
        img = golden.memories()[key]
        written = write_image(op, mode, img.values)
        code_gen = Path(os.path.realpath(op.get_nodeattr("code_gen_dir_ipgen")))
        files = {}
        for name in sorted(written):
            src = str(code_gen / name)
            if src not in mem_files:
                raise NotStitchable(f"{node.name}: its sources do not read {name}")
            files[name] = mem_files[src]
        check_image(node.name, key, written, {n: rtl_dir / r for n, r in files.items()}, rtl_dir)
        dt = op.get_input_datatype(1)
        out.append({"key": key, "layer": node.name, "op_type": node.op_type,
                    "golden_layer": img.layer, "tensor": tensor, "kind": img.kind,
                    "shape": list(img.values.shape), "datatype": dt.name,
                    "golden_datatype": img.datatype, "writer": mode, "files": files})
    return out


def write_image(op, mode: str, values) -> dict[str, str]:
    """FINN+'s memory image(s) of `values` for the layer `op`: file name -> text (callers
    install the vectorized packing, `packing.installed()`, as codegen does)."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="fpgaprint-mem-") as tmp:
        op.make_weight_file(np.asarray(values, dtype=np.float32), mode,
                            str(Path(tmp) / "memblock.dat"))
        return {f.name: f.read_text() for f in Path(tmp).iterdir()}


def check_image(layer: str, key: str, written: dict[str, str], shipped: dict[str, Path],
                root: Path) -> None:
    """Each shipped image equals FINN+'s image of the golden memory; else name the line."""
    for name, text in written.items():
        want = text.split()
        path = shipped[name]
        got = path.read_text().split() if path.is_file() else []
        if got == want:
            continue
        line = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                    min(len(got), len(want)))
        raise RtlMismatchError(
            f"memory image {path.relative_to(root).as_posix()} of RTL layer {layer} differs "
            f"from the golden model's {key}: line {line + 1} is "
            f"{got[line] if line < len(got) else '(missing)'}, the golden memory gives "
            f"{want[line] if line < len(want) else '(nothing)'}")


_ABS = re.compile(r'"/[^"\n]*"')


def check_relative(rtl_dir: Path, roots: tuple[str | Path, ...] = ()) -> None:
    """No file of the design holds an absolute path literal or one of the build's `roots`
    (build directories)."""
    roots = {str(r) for r in (*roots, os.environ.get("FINN_BUILD_DIR", "")) if str(r)}
    for f in sorted(Path(rtl_dir).rglob("*")):
        if not f.is_file() or f.suffix == ".onnx":
            data = f.read_bytes() if f.is_file() else b""
            bad = [r for r in roots if r.encode() in data]
        else:
            text = f.read_text(errors="replace")
            bad = [r for r in roots if r in text] + _ABS.findall(text)
        if bad:
            raise NotStitchable(f"{f.relative_to(rtl_dir).as_posix()} refers to the absolute "
                                f"path {bad[0]}")
