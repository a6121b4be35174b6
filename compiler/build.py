"""`fpgaprint build`: front end, FINN+ steps with resume, golden model, equivalence, reports."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import json
import logging
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fpgaprint.compiler import vivado
from fpgaprint.compiler.config import BuildConfig
from fpgaprint.compiler.equivalence import EquivalenceChecker, run_onnx, run_torch, sample_inputs
from fpgaprint.compiler.rtlsim import stage as rtl_stage
from fpgaprint.compiler.stage_runner import StageRunner
from fpgaprint.compiler.steps import GOLDEN_AFTER, PARENT, STEPS
from fpgaprint.core.atomic import write_json
from fpgaprint.core.errors import FpgaprintError, InputError
from fpgaprint.core.finn_env import ensure_finn
from fpgaprint.core.liblog import library_output
from fpgaprint.core.progress import Progress
from fpgaprint.core.selftest import Policy, evaluate

GOLDEN = Path("model/golden.onnx")
STATE = Path("finn/state.json")
STATE_SCHEMA = "fpgaprint-build-state/2"
_STREAMLINE = [s.name for s in STEPS].index("streamline")  # integer domain from here on
COMPLETION_MARKERS = ("manifest.json", "manifest.sig", "reports/build.json")


@dataclass
class BuildResult:
    out: Path
    golden_path: Path
    report: dict
    frontend: object = None
    skipped_steps: list[str] = field(default_factory=list)


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


class _Log:
    """Writes to OUT/build.log (everything, FINN's prints included) and the console."""

    def __init__(self, out: Path, console):
        self.console = console
        self.logger = logging.getLogger(f"fpgaprint.build.{id(self)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.handler = logging.FileHandler(out / "build.log", mode="a")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        self.logger.addHandler(self.handler)

    def __call__(self, msg: str, show: bool = False) -> None:
        self.logger.info(msg)
        if show and self.console is not None:
            self.console.print(msg)

    @contextlib.contextmanager
    def capture(self):
        """Route stdout/stderr of FINN/QONNX calls into the build log."""
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                yield
            finally:
                text = buf.getvalue().strip()
                if text:
                    self.logger.info(text)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()


def _prepare_out(out: Path) -> None:
    """Create OUT and remove what would make a failed build look complete."""
    out.mkdir(parents=True, exist_ok=True)
    for rel in COMPLETION_MARKERS:
        (out / rel).unlink(missing_ok=True)
    for d in ("model", "reports", "model/steps", "finn"):
        (out / d).mkdir(parents=True, exist_ok=True)


def _code_key(step) -> str:
    """What a step's code is: fpgaprint's compiler and core sources (the step's wrapper and
    every helper it may call, e.g. the folding rules), the FINN+ step functions it calls and
    the FINN+ version (a changed step invalidates its saved results)."""
    from importlib import metadata

    parts = [_own_sources(), step.name, metadata.version("finn-plus")]
    parts += [_finn_source(f) for f in step.finn]
    return _sha("\n".join(parts))


@functools.cache
def _finn_source(name: str) -> str:
    """The source of FINN+'s build step function `name` (read once per process)."""
    from fpgaprint.compiler.steps import finn_steps

    return inspect.getsource(getattr(finn_steps(), name))


@functools.cache
def _own_sources() -> str:
    """SHA-256 of the sources of fpgaprint.compiler and fpgaprint.core, in a fixed order."""
    import fpgaprint.compiler
    import fpgaprint.core
    from fpgaprint.core.sources import source_files

    h = hashlib.sha256()
    for pkg in (fpgaprint.compiler, fpgaprint.core):
        root = Path(pkg.__file__).parent
        for f in source_files(root):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def build_model(
    spec: str,
    board: str = "Pynq-Z1",
    out: str | Path = "build/out",
    config: BuildConfig | None = None,
    fingerprint: str | Path | None = None,
    key: str | Path | None = None,
    allow_unsigned: bool = False,
    tar: bool = False,
    console=None,
    boundary: str | Path | None = None,
) -> BuildResult:
    """Compile `spec` for `board` into the package directory `out`.

    `boundary`: a boundary set made from this build's golden model, embedded after the
    fingerprint's vectors as the strict boundary tier."""
    from fpgaprint.compiler.bist.stage import check_fit
    from fpgaprint.core.boards import get_board

    config = config or BuildConfig()
    brd = get_board(board)  # fail on bad input before touching OUT
    fp = _load_fingerprint(fingerprint) if fingerprint else None
    bd = _load_boundary(boundary, fp) if boundary else None
    if fp is not None:
        _check_key(key, allow_unsigned)
    check_model_spec(spec)
    out = Path(out)
    _prepare_out(out)
    log = _Log(out, console)
    report: dict = {"model": spec, "board": brd.name, "part": brd.part,
                    "config": config.as_dict(), "steps": [], "equivalence": [],
                    "status": "running"}
    result = BuildResult(out, out / GOLDEN, report)
    import torch  # noqa: F401  (its loggers exist before they are routed to the log)

    t_all = time.perf_counter()
    with library_output(log.handler):
        try:
            _run(spec, brd, out, config, fp, log, report, result, console)
            check_fit(brd, config, report, log, "the design")
            if fp is None:
                report["vivado"] = vivado.run_or_explain(out, brd, config, log)
            else:  # the Vivado steps once the on-chip self-test exists
                _package(out, brd, config, fp, result, key, allow_unsigned, tar, bd, log)
            report["status"] = "ok"
        except FpgaprintError as e:
            report["status"] = "failed"
            report["error"] = str(e)
            log(f"build failed: {e}")
            raise
        except Exception as e:
            report["status"] = "failed"
            report["error"] = f"{type(e).__name__}: {e}"
            log(f"build failed: {report['error']}")
            raise
        finally:
            report["seconds"] = round(time.perf_counter() - t_all, 3)
            report["equivalence"] = [r.as_dict() if hasattr(r, "as_dict") else r
                                     for r in report["equivalence"]]
            name = "build.json" if report["status"] == "ok" else "build.failed.json"
            write_json(out / "reports" / name, report)
            log.close()
    return result


def _run(spec, brd, out, config, fp, log, report, result, console):
    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaprint.compiler import frontend

    ensure_finn(out / "finn")
    progress = Progress(console)
    with progress, progress.task("build", total=len(STEPS) + 2) as task:
        task.update(detail="front end")
        t0 = time.perf_counter()
        with log.capture():
            fe = frontend.resolve(spec, config, out / "model", log, progress)
        result.frontend = fe
        report["source_sha256"] = fe.source_sha256
        report["input_grid"] = fe.grid.to_dict()
        report["steps"].append({"name": "frontend", "seconds": round(time.perf_counter() - t0, 3),
                                "skipped": False})
        log(f"front end: {fe.source} -> {fe.qonnx_path}; input grid {fe.grid.describe()}")
        task.advance()

        data_x = fe.data.x_test if fe.data is not None else None
        x_int = sample_inputs(fe.input_shape, fe.grid, config.equivalence_samples,
                              config.seed, data_x)
        eq = EquivalenceChecker(x_int, fe.grid)
        report["equivalence"] = eq.results  # filled as stages compare (JSON at the end)
        if fe.torch_model is not None:
            t0 = time.perf_counter()
            eq.add("brevitas", run_torch(fe.torch_model, eq.x_float, fe.input_shape), False,
                   time.perf_counter() - t0)
        qmodel = ModelWrapper(str(fe.qonnx_path))
        t0 = time.perf_counter()
        with log.capture():
            eq.add("qonnx", run_onnx(qmodel, eq.x_float), False, time.perf_counter() - t0)

        with StageRunner(out / "finn") as stages:
            try:
                _run_steps(fe, brd, out, config, log, report, result, task, qmodel, x_int, eq,
                           stages)
                # RTL co-simulation: node by node on the worker, the stitched design here
                task.update(detail="rtlsim")
                rtl_stage.run(out, brd, config, log, report, eq, stages,
                              out / report["steps"][-1]["model"], out / GOLDEN, x_int)
                task.update(detail="equivalence")
            finally:
                # a failed step may leave stages queued: a mismatch before it is the cause
                stages.drain(eq)
        report["equivalence_inputs"] = int(len(x_int))
        task.advance(detail="", line=False)


def _run_steps(fe, brd, out, config, log, report, result, task, qmodel, x_int, eq,
               stages) -> None:
    """The steps, reusing a saved result when the step's recorded inputs are unchanged;
    stage executions queued on `stages`."""
    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaprint.compiler.config import finn_config
    from fpgaprint.compiler.steps import StepContext, current_value

    state_path = out / STATE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    saved_steps = state.get("steps", {}) if state.get("schema") == STATE_SCHEMA else {}
    state = {"schema": STATE_SCHEMA, "steps": saved_steps}
    finn_cfg = finn_config(config, brd, (out / "finn" / "build").resolve())
    ctx = StepContext(config, brd, finn_cfg, fe.grid, out, log)
    sources = {"config": config, "board": brd, "finn": finn_cfg, "grid": fe.grid}
    model, integer_input = qmodel, False
    in_sha = _sha(fe.qonnx_path.read_bytes())
    golden = None
    for i, step in enumerate(STEPS):
        task.update(detail=step.name)
        path = out / "model" / "steps" / f"{i + 1:02d}_{step.name}.onnx"
        t0 = time.perf_counter()
        code = _code_key(step)
        saved = saved_steps.get(step.name, {})
        reuse = (saved.get("in") == in_sha and saved.get("code") == code and path.is_file()
                 and all(current_value(k, sources) == v
                         for k, v in saved.get("reads", {}).items())
                 and _sha(path.read_bytes()) == saved.get("out"))
        if reuse:
            model = ModelWrapper(str(path))
            fragment, out_sha = saved.get("fragment", {}), saved["out"]
        else:
            run = ctx.recording()
            with log.capture():
                model, fragment = step.fn(model, run)
            model.save(str(path))
            out_sha = _sha(path.read_bytes())
            saved_steps[step.name] = {"in": in_sha, "code": code, "reads": run.recorder.reads,
                                      "out": out_sha, "fragment": fragment}
            write_json(state_path, state)
        report.update(fragment)
        in_sha = out_sha
        secs = time.perf_counter() - t0
        report["steps"].append({"name": step.name, "seconds": round(secs, 3),
                                "skipped": reuse, "model": str(path.relative_to(out))})
        log(f"step {step.name}: {'reused' if reuse else 'done'} in {secs:.2f} s")
        if reuse:
            result.skipped_steps.append(step.name)
        integer_input = integer_input or step.name == "input_grid"
        if step.executable:
            stages.stage(step.name, model, path, x_int if integer_input else eq.x_float,
                         exact=i >= _STREAMLINE)
        if step.name == GOLDEN_AFTER:
            golden = model
            model.save(str(out / GOLDEN))
            report["io"] = _io_spec(model)
        if step.name == "dataflow_partition":
            stages.partition(out / PARENT, golden, out / GOLDEN, x_int[:PARENT_VECTORS])
        task.advance()


PARENT_VECTORS = 8  # the parent graph runs one vector per execution: check a subset


def _io_spec(golden_model) -> dict:
    """Input, raw-output and output tensors of the golden model (in memory)."""
    from fpgaprint.core.golden import GoldenModel

    g = GoldenModel(golden_model)
    m = g.model
    return {
        "input": {"name": g.input_name, "shape": list(g.input_shape),
                  "datatype": g.input_datatype},
        "raw_output": {"name": g.raw_output, "shape": list(g.raw_shape),
                       "datatype": g.raw_datatype},
        "output": {"name": g.output_name, "shape": list(m.get_tensor_shape(g.output_name))},
        "host_ops": g.host_ops,
    }


def _load_fingerprint(path):
    from fpgaprint.core.fpset import load_set

    return load_set(path)


def _load_boundary(path, fp):
    """The boundary tier: a set of algorithm `boundary`, beside a fingerprint set."""
    if fp is None:
        raise InputError("--boundary: give --fingerprint too (the boundary tier follows the "
                         "fingerprint's self-test vectors)")
    bd = _load_fingerprint(path)
    if bd.algorithm != "boundary":
        raise InputError(f"{path}: a {bd.algorithm} set, not a boundary set (make one with "
                         "`fpgaprint fingerprint generate OUT/model/golden.onnx --algorithm "
                         "boundary`)")
    if tuple(bd.input_shape) != tuple(fp.input_shape) or bd.grid_bits != fp.grid_bits:
        raise InputError(f"{path}: boundary inputs {tuple(bd.input_shape)} on a "
                         f"{bd.grid_bits}-bit grid, the fingerprint's {tuple(fp.input_shape)} "
                         f"on a {fp.grid_bits}-bit grid")
    return bd


def check_model_spec(spec: str) -> None:
    """MODEL names a zoo entry or a model file (one line naming it otherwise), before any
    step runs."""
    from fpgaprint.compiler.modelio import MODEL_FORMATS
    from fpgaprint.compiler.zoo import get_entry

    if spec.startswith("zoo:"):
        get_entry(spec)
        return
    p = Path(spec)
    if p.is_dir():
        raise InputError(f"{spec}: is a directory, not a model file ({MODEL_FORMATS})")
    if not p.is_file():
        raise InputError(f"{spec}: no such model file")
    if p.stat().st_size == 0:
        raise InputError(f"{spec}: empty file, not a model")
    if p.suffix != ".onnx" and zipfile.is_zipfile(p):  # torch's checkpoints are zips too
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise InputError(f"{spec}: not a model file (expected {MODEL_FORMATS})")


def _check_key(key, allow_unsigned: bool) -> None:
    """Fail before building when the package could not be signed at the end: the key must
    load as a private key."""
    from fpgaprint.core.keys import default_key_path, load_private_key

    if allow_unsigned:
        return
    path = Path(key) if key else default_key_path()
    if not path.is_file():
        raise InputError(f"signing key {path} not found: run `fpgaprint keys generate`, pass "
                         "--key, or --allow-unsigned for a development package")
    load_private_key(path)


def _package(out: Path, brd, config, fp, result, key, allow_unsigned: bool, tar: bool,
             bd, log) -> None:
    """Embed the fingerprint (and the boundary tier) as self-test vectors, then write the
    signed manifest."""
    from fpgaprint.compiler.package import finalize_package, write_selftest
    from fpgaprint.core.golden import GoldenModel
    from fpgaprint.core.manifest import sha256_file

    report = result.report
    golden = GoldenModel(result.golden_path)
    in_shape = tuple(report["io"]["input"]["shape"][1:])
    if tuple(fp.input_shape) != in_shape and int(np.prod(fp.input_shape)) != int(
            np.prod(in_shape)):
        raise InputError(f"fingerprint inputs have shape {fp.input_shape}, the accelerator "
                         f"takes {in_shape}")
    grid = result.frontend.grid
    if not fp.grid.same_integers(grid):
        raise InputError(f"fingerprint set is on the input grid {fp.grid.describe()}, the "
                         f"accelerator's is {grid.describe()}")
    inputs = fp.inputs_int.reshape((len(fp), *in_shape))
    expected = fp.labels
    # the score check where the set's calibration kept it (the set carries its reference)
    score = ("score",) if fp.has_score else ()
    st = fp.score_threshold if fp.has_score else None
    policy = Policy(("exact", "fingerprint", *score), float(fp.threshold), 0, st)
    extra: dict = {}
    # -- boundary tier: strict labels of this build's golden model, after the fingerprint's
    if bd is not None:
        golden_sha = sha256_file(result.golden_path)
        if bd.source_sha256 != golden_sha:
            raise InputError(
                f"boundary set was made from golden model {bd.source_sha256[:16]}…, this build's "
                f"is {golden_sha[:16]}… (generate it from {result.golden_path})")
        inputs = np.concatenate([inputs, bd.inputs_int.reshape((len(bd), *in_shape))])
        expected = np.concatenate([fp.labels, bd.labels])
        policy = Policy(("exact", "fingerprint", "boundary", *score), float(fp.threshold),
                        len(bd), st)
        extra = {"boundary_sha256": bd.sha256(), "boundary_source_sha256": bd.source_sha256}
    raw, _, labels = golden.run(inputs)
    # the on-chip self-test over the same vectors, then the Vivado steps (which put it into
    # a Zynq bitstream); part of the policy where the deployed hardware carries it
    from fpgaprint.compiler.bist import stage as bist_stage

    bist, onchip = bist_stage.run(out, brd, config, report, inputs, raw, log, golden)
    report["vivado"] = vivado.run_or_explain(out, brd, config, log)
    bit = sorted((out / "hw").glob("*.bit")) if (out / "hw").is_dir() else []
    if onchip is not None and (not bit or report["vivado"].get("bist")):
        policy = policy.with_checks("onchip")
    vectors = {"golden_raw": raw, "expected_labels": expected}
    if fp.has_score:
        vectors["source_outputs"] = fp.source_outputs
    own = evaluate(raw, labels, vectors, policy, onchip=onchip, bist=bist,
                   scores=golden.deployed_scores(raw) if fp.has_score else None)
    match = own.match_rate
    if not own.passed:
        raise InputError(f"the compiled model would fail its own self-test: {own.reason}")
    if own.marginal:
        raise InputError(f"the compiled model's own self-test is only marginal (no genuine "
                         f"board could pass confidently): {own.reason}; recalibrate the "
                         "fingerprint or use more vectors")
    src = report.get("source_sha256")
    if src and fp.source_sha256 != src:
        report.setdefault("warnings", []).append(
            "fingerprint set was made from a different model (source hashes differ)")
    write_selftest(out, inputs, raw, labels, expected, {
        **policy.to_dict(),
        "algorithm": fp.algorithm,
        "fingerprint_sha256": fp.sha256(),
        "source_model_sha256": fp.source_sha256,
        "threshold_note": json.dumps(fp.calibration, sort_keys=True),
        "golden_match_rate": match,
        **extra,
    }, fp.source_outputs if fp.has_score else None)
    sc = own.check("score")
    report["selftest"] = {"count": len(fp), "golden_match_rate": match,
                          "threshold": float(fp.threshold),
                          **({"score_threshold": st, "golden_score": sc.extra["correlation"]}
                             if sc is not None else {}),
                          **({"boundary_count": len(bd)} if bd is not None else {})}
    meta = {"name": Path(report["model"]).stem.removeprefix("zoo:"), "board": brd.name,
            "part": brd.part, "platform": brd.platform,
            "clock_ns": config.clock_ns or brd.clock_ns, "io": report["io"],
            "input_grid": grid.to_dict()}
    if bit:
        meta["bitstream"] = {"path": str(bit[0].relative_to(out))}
        placed = report["vivado"].get("bist") or {}
        if placed.get("address"):  # where the board reaches the BIST: signed, unlike build.json
            meta["bitstream"]["bist"] = {"instance": placed["instance"],
                                         "interface": placed["interface"],
                                         "base": placed["address"]["base"],
                                         "high": placed["address"]["high"]}
    pkg = finalize_package(out, meta, key_path=key, allow_unsigned=allow_unsigned, tar=tar)
    v = pkg.verification
    report["package"] = {"package_id": v.package_id, "signed": v.signed,
                         "signer": v.public_key, "tar": tar}
