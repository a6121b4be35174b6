"""The on-chip self-test (BIST): generated from the package's vectors, run in Verilator around
the stitched accelerator, reported by the boards and judged by the onchip check.

Verilator builds are shared per session (`bist_sim`); each (model, mode) builds once.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import first_changing_flip, make_challenge, moved

from fpgaprint.core import bist as B
from fpgaprint.core.errors import InputError
from fpgaprint.core.golden import GoldenModel
from fpgaprint.core.package import load_vectors
from fpgaprint.core.selftest import FAIL, NO_VERDICT, PASS, Policy, evaluate, onchip_check
from fpgaprint.hw_targets import protocol as P
from fpgaprint.hw_targets.backends import open_backend
from fpgaprint.hw_targets.faults import FaultSpec
from fpgaprint.hw_targets.served import served_boards

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("digits-mlp", "tfc-w2a2")
MODES = ("exact", "signature")


@pytest.fixture(scope="session")
def bist_package(make_package, shared_dir):
    """bist_package(NAME, MODE): a signed package with the stitched RTL and its BIST."""
    cache: dict = {}

    def get(name: str, mode: str) -> Path:
        if (name, mode) not in cache:
            cache[name, mode] = make_package(name, shared_dir / f"pkg-bist-{name}-{mode}",
                                             threshold=0.5, bist=mode)
        return cache[name, mode]

    return get


@pytest.fixture(scope="session")
def bist_sim(bist_package):
    """bist_sim(NAME, MODE): the BIST top of that package in Verilator after its power-on
    run (one build and one instance per session)."""
    from fpgaprint.compiler.bist.sim import BistSim
    from fpgaprint.compiler.rtlsim.design import StitchedDesign

    cache: dict = {}

    def get(name: str, mode: str):
        if (name, mode) not in cache:
            cache[name, mode] = BistSim(StitchedDesign(bist_package(name, mode) / "hw" / "rtl"))
        return cache[name, mode]

    yield get
    for sim in cache.values():
        sim.close()


# ------------------------------------------------------------------ healthy, both modes


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODELS)
def test_healthy_bist_passes_with_the_expected_signature_in_the_predicted_cycles(
        bist_package, bist_sim, name, mode):
    from fpgaprint.compiler.bist.sim import load_spec
    from fpgaprint.compiler.bist.stage import cycle_tolerance

    pkg = bist_package(name, mode)
    spec = load_spec(pkg / "hw" / "rtl")
    vec = load_vectors(pkg)
    sim = bist_sim(name, mode)
    regs = sim.registers()
    assert regs == B.expected_record(spec, regs["cycles"])
    assert B.decode_status(regs["status"])["pass"]
    # the signature is the CRC-32 of the golden output words, independently packed
    from fpgaprint.core.streams import pack_output

    words = pack_output(vec["golden_raw"], spec.io).reshape(-1, spec.out_width // 8)
    assert regs["signature"] == B.crc32_words(words, spec.out_width // 8, spec.out_bits)
    assert abs(regs["cycles"] - spec.predicted_cycles) <= cycle_tolerance(spec.predicted_cycles)
    assert onchip_check(regs, spec).status == PASS
    # idle: normal traffic passes through to the accelerator bit-exactly
    raw, _ = sim.run(vec["inputs"][:3])
    assert np.array_equal(raw, vec["golden_raw"][:3])
    # signature mode keeps no expected outputs: fewer ROM bits, no per-vector detail
    rom = spec.raw["rom_bits"]
    assert (rom["expected"] > 0) == (mode == "exact")
    assert rom["inputs"] == len(vec["inputs"]) * spec.in_words * spec.in_width


def test_start_reruns_and_the_registers_read_the_same(bist_sim):
    sim = bist_sim("digits-mlp", "exact")
    before = sim.registers()
    after = sim.start()
    assert abs(after.pop("cycles") - before.pop("cycles")) <= 2  # pipeline state after a run
    assert after == before


# ------------------------------------------------------------------ faults on the rtlsim board


@pytest.fixture(scope="module")
def digits_flip(bist_package):
    pkg = bist_package("digits-mlp", "exact")
    golden = GoldenModel(pkg / "model" / "golden.onnx")
    return first_changing_flip(golden, load_vectors(pkg)["inputs"], "MVAU_2/weights", 5)


def test_weight_flip_fails_with_the_first_changed_vector(bist_package, keypair, digits_flip):
    (key, index, bit), changed = digits_flip
    pkg = bist_package("digits-mlp", "exact")
    with open_backend(pkg, "rtlsim", FaultSpec(flips=[(key, index, bit)]),
                      trusted_key=keypair[1]) as board:
        st = board.selftest()
    assert st["bist_source"] == "rtl" and not st["passed"]
    regs = st["bist"]
    assert regs["first_fail"] == changed[0]
    assert regs["fail_count"] == len(changed)
    c = onchip_check(regs, B.load_spec(pkg / B.BIST_JSON))
    assert c.status == FAIL and f"first failing vector {changed[0]}" in c.detail


def test_threshold_flip_fails_in_signature_mode(bist_package, keypair):
    pkg = bist_package("digits-mlp", "signature")
    golden = GoldenModel(pkg / "model" / "golden.onnx")
    key = next(k for k, m in golden.memories().items() if m.kind == "thresholds")
    flip, _ = first_changing_flip(golden, load_vectors(pkg)["inputs"], key, 5)
    with open_backend(pkg, "rtlsim", FaultSpec(flips=[flip]), trusted_key=keypair[1]) as board:
        regs = board.selftest()["bist"]
    st = B.decode_status(regs["status"])
    assert st["done"] and not st["pass"] and st["signature_mode"]
    assert regs["fail_count"] == 1 and regs["first_fail"] == B.NONE
    assert regs["signature"] != regs["expected_signature"]


def test_rom_bit_flip_fails_as_a_corrupted_rom(bist_package, keypair):
    pkg = bist_package("digits-mlp", "exact")
    spec = B.load_spec(pkg / B.BIST_JSON)
    with open_backend(pkg, "rtlsim", FaultSpec(bist_rom_flips=[(3, 0)]),
                      trusted_key=keypair[1]) as board:
        st = board.selftest()
        assert any(e["kind"] == "bist_rom_flip" for e in board.fault_log())
    regs = st["bist"]
    assert not B.decode_status(regs["status"])["rom_ok"] and not st["passed"]
    assert regs["rom_crc"] != regs["rom_crc_expected"] == spec.rom_crc
    c = onchip_check(regs, spec)
    assert c.status == FAIL and "ROM is corrupted" in c.detail


def test_rom_flip_out_of_range_and_on_the_virtual_board_are_refused(bist_package, keypair):
    pkg = bist_package("digits-mlp", "exact")
    with pytest.raises(InputError, match="the ROM has words"):
        open_backend(pkg, "rtlsim", FaultSpec(bist_rom_flips=[(10**6, 0)]),
                     trusted_key=keypair[1])
    with pytest.raises(InputError, match="needs the rtlsim backend"):
        open_backend(pkg, "virtual", FaultSpec(bist_rom_flips=[(0, 0)]), trusted_key=keypair[1])


def test_virtual_board_emulates_the_registers(bist_package, keypair, digits_flip):
    (key, index, bit), changed = digits_flip
    pkg = bist_package("digits-mlp", "exact")
    with open_backend(pkg, "virtual", trusted_key=keypair[1]) as good, \
            open_backend(pkg, "virtual", FaultSpec(flips=[(key, index, bit)]),
                         trusted_key=keypair[1]) as bad:
        ok, ko = good.selftest(), bad.selftest()
    assert ok["bist_source"] == "emulated" and ok["passed"]
    assert ko["bist"]["first_fail"] == changed[0] and not ko["passed"]


# ------------------------------------------------------------------ verify over a pty


def test_verify_on_the_rtlsim_board_reports_the_onchip_check(bist_package, keypair, digits_flip,
                                                            run_cli, tmp_path):
    (key, index, bit), changed = digits_flip
    pkg, pub = bist_package("digits-mlp", "exact"), keypair[1]
    common = ("--backend", "rtlsim", "--trusted-key", pub)
    with served_boards((pkg, "--pty", *common),
                       (pkg, "--pty", *common, "--flip", f"{key}:{index}:{bit}"),
                       (pkg, "--pty", *common, "--bist-rom-flip", "0:7")) as (good, bad, rom):
        challenge = make_challenge(pkg / "model" / "golden.onnx",
                                   moved(load_vectors(pkg)["inputs"]), tmp_path / "ch.npz")
        results = {}
        for name, board in (("good", good), ("bad", bad), ("rom", rom)):
            for mode, extra in (("selftest", ()), ("challenge", ("--challenge", challenge))):
                report = tmp_path / f"{name}-{mode}.json"
                code, out, err = run_cli("verify", "--port", board.port, "--package", pkg,
                                         "--trusted-key", pub, "--json", report, *extra)
                rep = json.loads(report.read_text())
                results[name, mode] = (code, {c["name"]: c for c in rep["verdict"]["checks"]},
                                       out + err)
    # a challenge is the self-test run with other inputs: the same checks, the same verdicts
    for name in ("good", "bad", "rom"):
        (code, checks, _), (ch_code, ch_checks, text) = (results[name, "selftest"],
                                                         results[name, "challenge"])
        assert ch_code == code and set(ch_checks) == set(checks), (name, text)
        assert ch_checks["onchip"]["status"] == checks["onchip"]["status"], name
    results = {name: results[name, "selftest"] for name in ("good", "bad", "rom")}
    code, checks, text = results["good"]
    assert code == 0 and checks["onchip"]["status"] == PASS, text
    assert "onchip" in text and {"exact", "fingerprint", "onchip"} <= set(checks)
    code, checks, text = results["bad"]
    assert code == 1 and checks["onchip"]["status"] == FAIL
    assert checks["onchip"]["extra"]["first_fail"] == changed[0]
    code, checks, text = results["rom"]
    assert code == 1 and checks["onchip"]["status"] == FAIL
    assert checks["exact"]["status"] == PASS  # the accelerator itself is healthy
    assert "corrupted" in checks["onchip"]["detail"]


# ------------------------------------------------------------------ the rule and the wire


def test_onchip_rule_never_passes_without_a_finished_matching_run(bist_package):
    pkg = bist_package("digits-mlp", "exact")
    spec = B.load_spec(pkg / B.BIST_JSON)
    good = B.expected_record(spec, 100)
    assert onchip_check(good, spec).status == PASS
    assert onchip_check(None, spec).status == NO_VERDICT
    running = {**good, "status": 1 << B.STATUS_BITS["BUSY"]}
    assert onchip_check(running, spec).status == NO_VERDICT
    timeout = {**good, "status": good["status"] | 1 << B.STATUS_BITS["TIMEOUT"]}
    assert onchip_check(timeout, spec).status == FAIL
    for field, value in (("signature", 1), ("vectors", spec.vectors + 1),
                         ("expected_signature", 0), ("rom_crc_expected", 0), ("id", 0)):
        assert onchip_check({**good, field: value}, spec).status == FAIL, field
    # a board claiming PASS with another signature (its own ROM) fails
    forged = {**good, "signature": 5, "expected_signature": 5}
    assert onchip_check(forged, spec).status == FAIL
    v = load_vectors(pkg)
    ev = evaluate(v["golden_raw"], v["golden_labels"], v, Policy(("exact", "onchip")),
                  onchip=None, bist=spec)
    assert ev.status == NO_VERDICT and ev.check("onchip").status == NO_VERDICT
    with pytest.raises(InputError, match="no BIST"):
        evaluate(v["golden_raw"], v["expected_labels"], v, Policy(("onchip",)))


def test_protocol_bounds_the_bist_record(bist_package):
    pkg = bist_package("digits-mlp", "exact")
    spec = B.load_spec(pkg / B.BIST_JSON)
    good = B.expected_record(spec, 100)
    assert P.check_bist_registers(good) == good and P.check_bist_registers(None) is None
    for bad in ({**good, "cycles": -1}, {**good, "cycles": 2**32}, {**good, "status": True},
                {**good, "extra": 1},
                {k: v for k, v in good.items() if k != "status"}, [1, 2], "x",
                {**good, "signature": "0x1"}):
        with pytest.raises(P.ProtocolError):
            P.check_bist_registers(bad)


# ------------------------------------------------------------------ register map


def test_c_header_docs_and_rtl_share_the_register_map(bist_package, tmp_path):
    from fpgaprint.compiler.bist import regmap

    header = ROOT / regmap.HEADER
    assert header.read_text() == regmap.c_header(), "run python -m fpgaprint.compiler.bist.regmap"
    assert regmap.docs_table() in (ROOT / regmap.DOCS).read_text()
    top = (bist_package("digits-mlp", "exact") / "hw/rtl/bist/fpgaprint_bist_top.sv").read_text()
    rtl = {m[1]: int(m[2], 16) for m in re.finditer(
        r"localparam logic \[\d+:0\] REG_(\w+) = \d+'h([0-9A-F]+);", top)}
    rtl_bits = {m[1]: int(m[2]) for m in re.finditer(r"localparam int STATUS_(\w+) = (\d+);", top)}
    # the header as a C compiler reads it
    names = [r.name for r in B.REGISTERS]
    prog = tmp_path / "regs.c"
    prog.write_text('#include <stdio.h>\n#include "fpgaprint_bist.h"\nint main(void) {\n' + "".join(
        f'  printf("REG {n} %u\\n", FPGAPRINT_BIST_REG_{n});\n' for n in names) + "".join(
        f'  printf("BIT {n} %u\\n", FPGAPRINT_BIST_STATUS_{n});\n' for n in B.STATUS_BITS)
        + '  printf("MAGIC %u\\n", FPGAPRINT_BIST_MAGIC);\n  return 0;\n}\n')
    exe = tmp_path / "regs"
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", f"-I{header.parent}", str(prog), "-o",
                    str(exe)], check=True)
    lines = [ln.split() for ln in subprocess.run([str(exe)], capture_output=True, text=True,
                                                   check=True).stdout.splitlines()]
    c_regs = {n: int(v) for k, n, v in (ln for ln in lines if len(ln) == 3) if k == "REG"}
    c_bits = {n: int(v) for k, n, v in (ln for ln in lines if len(ln) == 3) if k == "BIT"}
    assert c_regs == rtl == B.OFFSETS
    assert rtl_bits == B.STATUS_BITS
    assert c_bits == {n: 1 << b for n, b in B.STATUS_BITS.items()}  # masks in C
    assert ["MAGIC", str(B.MAGIC)] in lines
    assert f"32'h{B.MAGIC:08X}" in top


ACC = "StreamingDataflowPartition_1"  # the partition instance the BIST slave belongs to
WINDOW = {"instance": ACC, "interface": "s_axi_bist", "base": "0x43C10000",
          "high": "0x43C10FFF"}


def _with_window(bist_package, keypair, dest: Path, window) -> Path:
    """A copy of the digits-mlp exact BIST package with a stand-in bitfile (Vivado is not
    installed here) whose manifest records `window` as `bitstream.bist` (None: no window),
    signed again with the package key."""
    from conftest import resign

    from fpgaprint.core.manifest import sha256_file

    pkg = dest / "pkg"
    shutil.copytree(bist_package("digits-mlp", "exact"), pkg)
    (pkg / "hw" / "finn-accel.bit").write_bytes(b"stand-in bitfile")

    def edit(m: dict) -> None:
        m["bitstream"] = {"path": "hw/finn-accel.bit", "present": True,
                          "sha256": sha256_file(pkg / "hw" / "finn-accel.bit"),
                          **({"bist": window} if window is not None else {})}

    return resign(pkg, keypair[0], edit)


def test_pynq_reads_the_registers_at_the_package_window(bist_package, bist_sim, keypair,
                                                        tmp_path):
    """The pynq backend reads the BIST through the overlay IP at the base address the signed
    package records (the overlay is a test double: no board here; its MMIO answered by the
    simulated RTL's AXI-lite slave): same offsets, same registers. Without a recorded window
    there is no BIST, whatever the bitstream's IPs are named."""
    from fpgaprint.core.package import describe, verify_package
    from fpgaprint.hw_targets.backends.pynq import PynqBackend

    sim = bist_sim("digits-mlp", "exact")
    reads: list[int] = []

    class Mmio:  # PYNQ's DefaultIP read/write, backed by the simulation
        def read(self, offset: int) -> int:
            reads.append(offset)
            return sim.read(offset)

    class Idle:  # another IP: reading it would be the wrong slave
        def read(self, offset: int) -> int:
            raise AssertionError(f"read at {offset:#x} of an IP that is not the BIST's")

    class Overlay:
        ip_dict = {"fpgaprint_bist_0": {"phys_addr": 0x43C00000},
                   ACC: {"phys_addr": int(WINDOW["base"], 16), "addr_range": 0x1000},
                   "idma0": {"phys_addr": 0x43C20000}}
        fpgaprint_bist_0 = Idle()
        idma0 = Idle()
        batch_size = 1

    setattr(Overlay, ACC, Mmio())
    pkg = verify_package(_with_window(bist_package, keypair, tmp_path / "w", WINDOW),
                         trusted_key=keypair[1])
    assert pkg.bist_window() == (0x43C10000, 0x1000)
    assert "bist       AXI-lite slave at 0x43C10000, 4096 bytes" in "\n".join(describe(pkg))
    io = B.load_spec(pkg.dir / B.BIST_JSON).io
    board = PynqBackend(pkg, overlay=Overlay(), io=io)
    regs = board.bist_registers(None)
    assert regs == sim.registers()
    assert set(reads) == {r.offset for r in B.REGISTERS if r.access == "ro"}

    bare = verify_package(_with_window(bist_package, keypair, tmp_path / "n", None),
                          trusted_key=keypair[1])
    assert bare.bist_window() is None
    assert not any(line.startswith("bist ") for line in describe(bare))
    Overlay.ip_dict = {"fpgaprint_bist_0": {"phys_addr": 0x43C00000}}
    assert PynqBackend(bare, overlay=Overlay(), io=io).bist_registers(None) is None


@pytest.mark.parametrize("field, value, message", [
    ("high", "0x43C0FFFF", "bitstream.bist: high 0x43C0FFFF is below base 0x43C10000"),
    ("base", "43C10000", "bitstream.bist.base: expected a hex address like 0x43C00000, got "
                         "'43C10000'"),
    ("high", 4095, "bitstream.bist.high: expected a hex address like 0x43C00000, got 4095"),
    ("high", "0x43C1002B", "bitstream.bist: a window of 44 bytes; the register map needs 48 "
                           "to 65536 bytes"),
    ("high", "0x43C20000", "bitstream.bist: a window of 65537 bytes; the register map needs "
                           "48 to 65536 bytes"),
    ("base", "0x43C10002", "bitstream.bist.base: 0x43C10002 is not 32-bit aligned"),
    ("base", "0x1" + "0" * 16, "bitstream.bist.base: expected a hex address like 0x43C00000, "
                               "got '0x10000000000000000'"),
])
def test_a_malformed_bist_window_is_refused_naming_the_field(bist_package, keypair, tmp_path,
                                                             field, value, message):
    """A signed manifest's BIST window that is not two hex addresses around the register map
    stops the package at verification: one line naming the field, exit 2."""
    from fpgaprint.core.package import verify_package

    pkg = _with_window(bist_package, keypair, tmp_path, {**WINDOW, field: value})
    with pytest.raises(InputError) as e:
        verify_package(pkg, trusted_key=keypair[1])
    assert str(e.value) == f"{pkg}: manifest.json {message}"
    assert e.value.exit_code == 2 and "\n" not in str(e.value)


# ------------------------------------------------------------------ designs without stitched RTL


@pytest.fixture(scope="module")
def golden_raw(digits_build) -> np.ndarray:
    """The golden model's raw outputs for the digits build's self-test inputs."""
    return GoldenModel(digits_build.golden).run(digits_build.inputs)[0]


def _stage_out(digits_build, out: Path) -> dict:
    """`out` as the BIST stage finds a build folder with only the last step's model (no
    hw/rtl/: as for an HLS design); returns a copy of the build's report for the stage."""
    report = json.loads(json.dumps(digits_build.result.report))
    (out / "model" / "steps").mkdir(parents=True)
    last = report["steps"][-1]["model"]
    shutil.copy2(digits_build.out / last, out / last)
    return report


def test_controller_against_a_stand_in_accelerator(digits_build, golden_raw, tmp_path):
    """Designs with HLS layers have no stitched RTL here: the BIST RTL is generated, and its
    controller runs against a stand-in that plays golden (or altered) outputs. A test of the
    controller, not of hardware."""
    from fpgaprint.compiler.bist import stage
    from fpgaprint.compiler.bist.sim import StandinBistSim
    from fpgaprint.compiler.bist.standin import write_standin
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.core.boards import get_board

    out = tmp_path / "out"
    report = _stage_out(digits_build, out)
    x = digits_build.inputs[:12]
    raw = golden_raw[:12]
    spec, regs = stage.run(out, get_board("Pynq-Z1"), BuildConfig(), report, x, raw,
                           lambda *a, **k: None, digits_build.golden)
    assert regs is None and not spec.stitched and not report["bist"]["simulated"]
    assert "not simulated here" in report["bist"]["note"]
    assert report["estimates"]["resources_total"]["BRAM_18K"] >= \
        report["estimates"]["resources_accelerator"]["BRAM_18K"]
    rtl = out / "hw" / "rtl"
    src = write_standin(rtl, spec, raw)
    # the generated RTL is lint-clean under Verilator's -Wall but for unused AXI bits
    from fpgaprint.compiler.rtlsim.verilator import find_verilator

    tool = find_verilator()
    lint = subprocess.run([str(tool.executable), "--lint-only", "-Wall", "-Wno-UNUSEDSIGNAL",
                           "-Wno-DECLFILENAME", "--top-module", "fpgaprint_bist_top",
                           "bist/bist_ctrl.sv", "bist/fpgaprint_bist_top.sv", str(src)],
                          cwd=rtl, env=tool.env(), capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr
    with StandinBistSim(rtl, src) as sim:
        assert sim.registers() == B.expected_record(spec, sim.registers()["cycles"])
    bad = raw.copy()
    bad[5, 2] += 1
    bad[9, 0] -= 1
    write_standin(rtl, spec, bad)
    with StandinBistSim(rtl, src) as sim:
        regs = sim.registers()
    assert (regs["fail_count"], regs["first_fail"]) == (2, 5)
    assert onchip_check(regs, spec).status == FAIL
    # an accelerator that stops answering ends in TIMEOUT after the watchdog, never hangs
    from fpgaprint.compiler.bist.generate import generate

    spec = generate(rtl, spec.io, x, raw, "exact", stitched=False, latency_cycles=100)
    write_standin(rtl, spec, raw, stop_after=4)
    with StandinBistSim(rtl, src) as sim:
        regs = sim.registers()
    st = B.decode_status(regs["status"])
    assert st["done"] and st["timeout"] and not st["pass"]
    c = onchip_check(regs, spec)
    assert c.status == FAIL and "timed out" in c.detail


def test_bist_mode_is_validated(run_cli, tmp_path):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("bist: {mode: crc}\n")
    code, _, err = run_cli("build", "zoo:digits-mlp", "--out", tmp_path / "o", "--config", cfg)
    assert code == 2 and "bist.mode" in err and "exact" in err


def test_build_fails_exit_1_when_the_healthy_design_does_not_pass(digits_build, golden_raw,
                                                                    tmp_path):
    """A design whose memory image differs from the golden model's (the vectors' golden
    outputs) does not PASS its own BIST: BistError, exit 1."""
    from fpgaprint.compiler.bist import stage
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.compiler.rtlsim.errors import BistError
    from fpgaprint.core.boards import get_board

    out = tmp_path / "out"
    shutil.copytree(digits_build.out / "hw" / "rtl", out / "hw" / "rtl")
    shutil.rmtree(out / "hw" / "rtl" / "bist", ignore_errors=True)
    image = sorted((out / "hw" / "rtl" / "mem").rglob("MVAU_rtl_*memblock*.dat"))[-1]
    lines = image.read_text().split()  # every weight word of the last layer altered
    lines = [f"{int(ln, 16) ^ (1 << (4 * len(ln) - 1)):0{len(ln)}x}" for ln in lines]
    image.write_text("\n".join(lines) + "\n")
    report = json.loads(json.dumps(digits_build.result.report))
    x, raw = digits_build.inputs, golden_raw
    with pytest.raises(BistError, match="does not PASS") as e:
        stage.run(out, get_board("Pynq-Z1"), BuildConfig(), report, x, raw,
                  lambda *a, **k: None, digits_build.golden)
    assert e.value.exit_code == 1
    assert report["bist"]["simulated"] and not report["bist"]["passed"]


def test_the_bist_counts_in_the_board_fit(digits_build, golden_raw, tmp_path):
    """A board with room for the accelerator but not for its ROM refuses the design (exit 2)."""
    import dataclasses

    from fpgaprint.compiler.bist import stage
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.core.boards import get_board

    out = tmp_path / "out"
    report = _stage_out(digits_build, out)
    acc = report["estimates"]["resources_total"]
    pynq = get_board("Pynq-Z1")
    small = dataclasses.replace(pynq, resources={**pynq.resources,
                                                 "BRAM_18K": int(acc["BRAM_18K"]) + 1})
    x, raw = digits_build.inputs, golden_raw
    with pytest.raises(InputError, match="with its on-chip self-test does not fit") as e:
        stage.run(out, small, BuildConfig(), report, x, raw, lambda *a, **k: None,
                  digits_build.golden)
    assert e.value.exit_code == 2
    assert report["estimates"]["resources_total"]["BRAM_18K"] == \
        acc["BRAM_18K"] + report["bist"]["resources"]["BRAM_18K"]
