"""How Verilator builds are compiled: the precompiled headers (one per optimization level)
and the harness are built once per cache and taken by every later design (GCC's
-Winvalid-pch would say otherwise in the build log)."""

from __future__ import annotations

import shutil

from fpgaprint.compiler.rtlsim import verilator as vl
from fpgaprint.compiler.rtlsim.sim import VerilatedSim

REG = """
module reg1 (input ap_clk, input ap_rst_n, input [7:0] d, output logic [7:0] q);
  always_ff @(posedge ap_clk) q <= ap_rst_n ? d + 8'd{inc} : 8'd0;
endmodule
"""


def test_precompiled_headers_and_harness_are_built_once_and_taken_by_the_next_design(
        tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(vl.CACHE_ENV, str(cache))
    # a compiler that records what it is asked to compile
    calls = tmp_path / "cxx.log"
    cxx = tmp_path / "cxx"
    cxx.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {shutil.which("g++")} "$@"\n')
    cxx.chmod(0o755)
    monkeypatch.setenv("CXX", str(cxx))
    monkeypatch.setattr(vl, "_cxx", vl._cxx.__wrapped__)
    builds = []
    for inc in (1, 2):
        src = tmp_path / f"v{inc}" / "reg1.sv"
        src.parent.mkdir()
        src.write_text(REG.format(inc=inc))
        builds.append(vl.build_library("reg1", [src]))
        if inc == 1:
            gchs = [g for h in (vl._PCH, vl._PCH_SLOW) for g in cache.glob(f"runtime/*/{h}.gch")]
            first = [(g.stat().st_ino, g.stat().st_mtime_ns) for g in gchs]
    assert not builds[1].cached and builds[1].key != builds[0].key
    assert len(gchs) == 2
    assert [(g.stat().st_ino, g.stat().st_mtime_ns) for g in gchs] == first
    compiled = [line.split() for line in calls.read_text().splitlines() if " -c " in line
                or "c++-header" in line]
    sources = [a for c in compiled for a in c if a.endswith((".cpp", ".h"))
               and a != "-include" and c[c.index(a) - 1] != "-include"]
    assert sources.count(vl.HARNESS.name) == 1, sources
    assert sources.count(vl._PCH) == sources.count(vl._PCH_SLOW) == 1, sources
    assert sources.count("fp_sim.cpp") == sources.count("fp_slow.cpp") == 2, sources
    for inc, b in zip((1, 2), builds):
        log = (b.library.parent / "build.log").read_text()
        assert ".gch" not in log, log  # -Winvalid-pch: a header GCC did not take
        with VerilatedSim(b.library, name="reg1") as sim:
            sim.reset()
            sim.set("d", 41)
            sim.step(1)
            assert sim.get("q") == 41 + inc
