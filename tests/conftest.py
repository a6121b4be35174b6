"""Shared fixtures: FINN's build directory, the CLI runner, and the artifacts every test file
shares (one signing key pair, one compile per zoo model, one signed digits package).

`make test` runs the files on one pytest-xdist worker per core (`--dist loadfile`: a file stays
on one worker, so its module fixtures are made once). Session fixtures are made once per
worker, in that worker's own temporary directory; files that share an expensive one run on one
worker (`SHARED_GROUPS`), so that it is made once."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SELFTEST_COUNT = 48
META = {"board": "Pynq-Z1", "part": "xc7z020clg400-1", "platform": "zynq", "clock_ns": 10.0}

# group -> files run on one worker under `--dist loadfile`: they share a session artifact
SHARED_GROUPS = {"tfc": ("test_compiler_build.py", "test_bist.py", "test_board_pynq.py",
                         "test_rtlsim_build.py", "test_rtlsim_fifo.py"),
                 "cli": ("test_cli_ux.py", "test_harness_e2e.py")}
# units of work (a group or a file) handed out first, longest first (as measured on 2 cores
# with an empty Verilator cache: about 2 min for the tfc group down to 8 s), so that the
# workers end together on the short files; the others follow in collection order
LONGEST_FIRST = ("tfc", "cli", "test_compiler_matrix.py", "test_compiler_models.py",
                 "test_rtl_segments.py", "test_fingerprint_fanout.py",
                 "test_fingerprint_eval.py", "test_fingerprint_core.py",
                 "test_compiler_heads.py", "test_fingerprint_tiers.py", "test_score_check.py",
                 "test_rtl_foldrules.py", "test_fingerprint_calibration.py",
                 "test_compiler_monotonic.py", "test_fingerprint_power.py",
                 "test_rtl_mvu_queue.py", "test_rtlsim_xsi.py", "test_verilator_build.py",
                 "test_compiler_avgpool.py", "test_rtl_stitch_regress.py",
                 "test_protocol_frames.py", "test_harness_trust.py")
_GROUP_OF = {f: g for g, files in SHARED_GROUPS.items() for f in files}


def _unit(path: Path) -> str:
    """The unit of work a test file belongs to: its shared group, else the file."""
    return _GROUP_OF.get(path.name, path.name)


def pytest_collection_modifyitems(config, items):
    """The longest units of work first (the scheduler keeps collection order)."""
    rank = {u: i for i, u in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_unit(item.path), len(rank)))


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with the files of a shared group as one unit of work, handed out in
    collection order."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False

    class SharedFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return _GROUP_OF.get(Path(path).name, path)

    return SharedFileScheduling(config, log)


# ---------------------------------------------------------------- plain helpers
# Test files import these as `from conftest import …` (pytest puts tests/ on sys.path, as for
# `import models`); conftest.py is then the module pytest already loaded, not a second copy.


def long_test(reason: str):
    """Skip unless FPGAPRINT_LONG_TESTS is set (CI sets it; `make test` leaves it out)."""
    return pytest.mark.skipif(not os.environ.get("FPGAPRINT_LONG_TESTS"),
                              reason=f"{reason}: FPGAPRINT_LONG_TESTS=1")


# imported once by the forkserver that run_fpgaprint's children fork from: the CLI and the
# build, training and fingerprint stack (about 4 s in each new interpreter), and the digits
# data's loader (0.65 s of scikit-learn imports in every child that trains or calibrates)
CLI_PRELOAD = ("fpgaprint.cli", "fpgaprint.compiler.build", "fpgaprint.compiler.zoo",
               "fpgaprint.fingerprint.cli", "fpgaprint.fingerprint.generate",
               "fpgaprint.harness.cli", "brevitas.nn", "finn.custom_op.fpgadataflow",
               "finn.core.onnx_exec", "sklearn.datasets", "sklearn.model_selection")


def run_fpgaprint(*args, env: dict | None = None,
                  timeout: float = 600) -> subprocess.CompletedProcess:
    """`fpgaprint ARGS` in a child process: `python -m fpgaprint`, forked from a forkserver that
    imported `CLI_PRELOAD` (fpgaprint.core.forkserver.ForkedCLI); stdout and stderr captured in
    pipes (not a terminal), `env` over this process's environment. (test_protocol_cli,
    test_harness_e2e and `make demo` start new interpreters.)"""
    from concurrent.futures import ThreadPoolExecutor

    from fpgaprint.core.forkserver import ForkedCLI

    argv = [str(a) for a in args]
    proc = ForkedCLI(argv, subprocess.PIPE, {**os.environ, **(env or {})}, CLI_PRELOAD,
                     daemon=False)  # a build starts processes of its own
    with ThreadPoolExecutor(2) as pool:
        out, err = pool.submit(proc.stdout.read), pool.submit(proc.stderr.read)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        stdout, stderr = out.result(), err.result()
    proc.stdout.close()
    proc.stderr.close()
    return subprocess.CompletedProcess([sys.executable, "-m", "fpgaprint", *argv],
                                       proc.returncode, stdout, stderr)


def first_changing_flip(golden, x: np.ndarray, key: str, step: int):
    """(flip, rows of `x` whose raw output it changes) for the first flip of the top bit of a
    word of memory `key` (every `step`-th word) that changes the golden model's raw outputs."""
    want = golden.run(x)[0]
    w = golden.memories()[key]
    for index in range(0, w.values.size, step):
        flip = (key, index, w.bits - 1)
        changed = np.flatnonzero((golden.flipped([flip]).run(x)[0] != want).any(axis=1))
        if 0 < len(changed):
            return flip, changed
    raise AssertionError("no output-changing flip found")


def make_challenge(golden: Path, inputs: np.ndarray, out: Path, threshold: float = 0.9,
                   algorithm: str = "robust", source_sha256: str = "") -> Path:
    """A verifier-held fingerprint set of `inputs` labelled by the golden model `golden` (the
    labels a healthy board gives, whatever float training did), saved to `out`."""
    from fpgaprint.core.fpset import FingerprintSet
    from fpgaprint.core.golden import GoldenModel

    _, _, labels = GoldenModel(golden).run(inputs)
    FingerprintSet(inputs, labels, np.ones(len(inputs)), algorithm, {}, 0, source_sha256,
                   inputs.shape[1:], threshold=threshold).save(out)
    return out


def moved(inputs: np.ndarray) -> np.ndarray:
    """Inputs near `inputs` that share no row with them (a challenge the board never saw)."""
    fresh = (inputs + 1) % 256
    fresh[:, 0] = 0
    return fresh


def confident_threshold(agree: int, n: int) -> float:
    """A fingerprint threshold a model matching `agree` of `n` labels passes confidently (below
    the lower end of its match rate's interval), so a healthy board's PASS never rests on a
    one-label margin of float-versus-quantized agreement."""
    from fpgaprint.core.selftest import clopper_pearson

    return max(0.01, math.floor(100 * clopper_pearson(agree, n)[0]) / 100 - 0.01)


def resign(pkg_dir: Path, key: Path, edit=None) -> Path:
    """Rebuild `pkg_dir`'s manifest.json from its files as they are now (after `edit(manifest)`
    changed its metadata in place, if given) and sign it with `key`: what an attacker with
    their own key does."""
    from fpgaprint.core.manifest import build_manifest, sign_manifest, write_manifest

    m = json.loads((pkg_dir / "manifest.json").read_text())
    if edit is not None:
        edit(m)
    write_manifest(pkg_dir, build_manifest(pkg_dir, {k: v for k, v in m.items()
                                                     if k not in ("files", "sizes", "schema")}))
    sign_manifest(pkg_dir, key)
    return pkg_dir


@contextlib.contextmanager
def in_process_board(package: Path, trusted_key: Path, agent_cls=None, wrap=None,
                     pty: bool = False, faults=None):
    """The virtual board of `package` in this process (with `faults`, a FaultSpec, if given):
    its backend (passed through `wrap`, if given) behind `agent_cls` (BoardAgent by default).
    Yields the agent, or with `pty` the started BoardLink serving it on a pty (its `url`);
    stopped and closed on exit."""
    from fpgaprint.hw_targets.agent import BoardAgent
    from fpgaprint.hw_targets.backends import open_backend
    from fpgaprint.hw_targets.link import BoardLink, PtyTransport

    with open_backend(package, faults=faults, trusted_key=trusted_key) as backend:
        agent = (agent_cls or BoardAgent)(backend if wrap is None else wrap(backend))
        if not pty:
            yield agent
            return
        link = BoardLink(PtyTransport(), agent).start()
        try:
            yield link
        finally:
            link.stop()


@pytest.fixture(scope="session", autouse=True)
def _finn_build_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("finn_build")
    os.environ["FINN_BUILD_DIR"] = str(d)
    yield


@pytest.fixture(scope="session", autouse=True)
def _empty_trust_store(tmp_path_factory):
    """No trust anchor from the machine running the tests: an empty trust store, no trust
    config file, no keys in the environment (subprocesses inherit all three)."""
    os.environ["FPGAPRINT_TRUST_STORE"] = str(tmp_path_factory.mktemp("trust-store"))
    os.environ["FPGAPRINT_TRUST_CONFIG"] = str(tmp_path_factory.mktemp("trust") / "none.toml")
    os.environ.pop("FPGAPRINT_TRUSTED_KEYS", None)
    yield


@pytest.fixture(scope="session", autouse=True)
def _boards_from_a_forkserver():
    """Boards start from a forkserver that imported fpgaprint and FINN+ once (the board is
    the same `board serve` code on a real pty); test_protocol_cli and `make demo` start
    theirs as new interpreters."""
    from fpgaprint.hw_targets.served import set_default_launch

    before = set_default_launch("forkserver")
    yield
    set_default_launch(before)


@pytest.fixture
def run_cli(capsys):
    """Run `fpgaprint ARGS` in-process; returns (exit code, stdout, stderr)."""
    from fpgaprint.cli import main

    def run(*args: str):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run faster on one thread than on two contended ones (the test workers
    share the cores): torch's threads, and numpy's BLAS here and in the processes the tests
    start (boards, stage workers, CLI runs), whose idle BLAS threads would spin on the core
    the other worker needs."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    with threadpool_limits(1, user_api="blas"):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def src():
    """The embedded default model, trained with seed 0, as the fingerprint code sees it."""
    from fpgaprint.fingerprint.source import train_zoo

    return train_zoo("digits-mlp", seed=0)


# ---------------------------------------------------------------- shared artifacts


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="session")
def keypair(shared_dir) -> tuple[Path, Path]:
    """(private, public) key files of one Ed25519 signing key."""
    from fpgaprint.core.keys import generate_keypair

    return generate_keypair(shared_dir / "keys")


@pytest.fixture(scope="session")
def cli_trained(shared_dir) -> dict:
    """digits-mlp trained (5 epochs) and 48 robust examples of it generated (20 steps), each by
    the CLI in a child process with pipes (not a terminal) and a 0.3 s heartbeat: the files
    and the two CompletedProcess results."""
    d = shared_dir / "cli"
    d.mkdir()
    env = {"FPGAPRINT_HEARTBEAT_S": "0.3"}
    train = run_fpgaprint("train", "zoo:digits-mlp", "--epochs", 5, "--out", d / "model.pt",
                          env=env)
    assert train.returncode == 0, train.stdout + train.stderr
    gen = run_fpgaprint("fingerprint", "generate", d / "model.pt", "--count", 48, "--steps", 20,
                        "--out", d / "both.npz", env=env)
    assert gen.returncode == 0, gen.stdout + gen.stderr
    return {"dir": d, "model": d / "model.pt", "both": d / "both.npz", "train": train,
            "generate": gen}


@dataclass
class Compiled:
    """A zoo model compiled for Pynq-Z1 (read-only: tests copy what they change)."""

    name: str
    result: object  # compiler.build.BuildResult
    inputs: np.ndarray  # int64 test vectors on the input grid
    expected: np.ndarray  # labels of the pre-trained model

    @property
    def out(self) -> Path:
        return self.result.out

    @property
    def golden(self) -> Path:
        return self.result.golden_path

    @property
    def io(self) -> dict:
        return self.result.report["io"]


@pytest.fixture(scope="session")
def compiled(shared_dir):
    """compiled(NAME): zoo:NAME built once per test session."""
    cache: dict[str, Compiled] = {}

    def get(name: str) -> Compiled:
        if name not in cache:
            import torch

            from fpgaprint.compiler.build import build_model
            from fpgaprint.compiler.config import BuildConfig
            from fpgaprint.core.grid import InputGrid

            result = build_model(f"zoo:{name}", "Pynq-Z1", shared_dir / f"build-{name}",
                                 BuildConfig(equivalence_samples=16), allow_unsigned=True)
            fe = result.frontend
            grid = InputGrid(8)
            inputs = grid.to_int(fe.data.x_test[:SELFTEST_COUNT]).reshape((-1, *fe.input_shape))
            model = fe.float_model if fe.float_model is not None else fe.torch_model
            with torch.no_grad():
                logits = model.eval()(torch.from_numpy(grid.to_float(inputs)))
            cache[name] = Compiled(name, result, inputs,
                                   logits.argmax(1).numpy().astype(np.int64))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def digits_build(compiled) -> Compiled:
    return compiled("digits-mlp")


def own_digits_build(digits_build: Compiled, d: Path) -> Path:
    """A digits build of its own in `d/build`, from the shared build's QONNX export (copied
    to `d/src`), for tests that change a build or let FINN+'s ipgen rewrite its sources."""
    (d / "src").mkdir()
    for f in (digits_build.out / "model").glob("qonnx.onnx*"):
        shutil.copy2(f, d / "src" / f.name)
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig

    out = d / "build"
    build_model(str(d / "src" / "qonnx.onnx"), "Pynq-Z1", out,
                BuildConfig(equivalence_samples=4), allow_unsigned=True)
    return out


@pytest.fixture(scope="session")
def make_package(compiled, keypair):
    """make_package(NAME, OUT, threshold=…, golden_from=…, signed=…, hw=…, rtl=…): a finalized
    package of zoo:NAME whose self-test vectors are the model's test data, expected labels from
    the pre-trained model, the threshold by default one the package's own golden model passes
    confidently (`confident_threshold`). `hw` files, e.g. {"top.bit": …}, go to hw/; `rtl`
    copies the build's stitched RTL to hw/rtl/; `bist` "exact" or "signature" also generates
    its on-chip self-test there, as the build does, with the onchip check in the policy."""
    def make(name: str, out: Path, threshold: float | None = None,
             golden_from: Path | None = None,
             signed: bool = True, hw: dict[str, bytes] | None = None,
             rtl: bool = False, bist: str | None = None) -> Path:
        from fpgaprint.compiler.package import finalize_package, write_selftest
        from fpgaprint.core.golden import GoldenModel

        c = compiled(name)
        golden = golden_from or c.golden
        (out / "model").mkdir(parents=True, exist_ok=True)
        shutil.copy2(golden, out / "model" / "golden.onnx")
        raw, _, labels = GoldenModel(golden).run(c.inputs)
        if threshold is None:  # from the build under test: the deployed model passes it
            threshold = confident_threshold(int((labels == c.expected).sum()), len(labels))
        checks = ["exact", "fingerprint"] + (["onchip"] if bist else [])
        write_selftest(out, c.inputs, raw, labels, c.expected,
                       {"checks": checks, "fingerprint_threshold": threshold})
        meta = {"name": name, **META, "io": c.io}
        if rtl or bist:
            shutil.copytree(c.out / "hw" / "rtl", out / "hw" / "rtl")
        if bist:
            from fpgaprint.compiler.bist.generate import generate
            from fpgaprint.compiler.bist.stage import predicted_cycles
            from fpgaprint.compiler.rtlsim.design import StitchedDesign

            st = c.result.report["rtl"]["stitched"]
            generate(out / "hw" / "rtl", StitchedDesign(out / "hw" / "rtl").io,
                     GoldenModel(golden).accelerator_inputs(c.inputs), raw, bist,
                     predicted_cycles=predicted_cycles(st, len(c.inputs)),
                     latency_cycles=st["latency_cycles"])
        for rel, data in (hw or {}).items():
            (out / "hw").mkdir(exist_ok=True)
            (out / "hw" / rel).write_bytes(data)
            if rel.endswith(".bit"):
                meta["bitstream"] = {"path": f"hw/{rel}"}
        finalize_package(out, meta, key_path=keypair[0] if signed else None,
                         allow_unsigned=not signed)
        return out

    return make


@pytest.fixture(scope="session")
def digits_package(make_package, shared_dir) -> Path:
    """A signed digits-mlp package shared read-only by every test."""
    return make_package("digits-mlp", shared_dir / "pkg-digits")


@pytest.fixture(scope="session")
def digits_rtl_package(make_package, shared_dir) -> Path:
    """The signed digits-mlp package with its stitched RTL (hw/rtl/), read-only."""
    return make_package("digits-mlp", shared_dir / "pkg-digits-rtl", rtl=True)
