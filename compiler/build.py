"""`fpgaprint build`: front end, FINN+ steps with resume, golden model, equivalence, reports."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fpgaprint.compiler import vivado
from fpgaprint.compiler.config import BuildConfig
from fpgaprint.compiler.equivalence import EquivalenceChecker, run_onnx, run_torch, sample_inputs
from fpgaprint.compiler.rtlsim import stage as rtl_stage
from fpgaprint.compiler.stage_runner import StageRunner
from fpgaprint.compiler.steps import GOLDEN_AFTER, STEPS, BuildContext
from fpgaprint.core.atomic import write_json
from fpgaprint.core.errors import FpgaprintError, InputError
from fpgaprint.core.finn_env import ensure_finn
from fpgaprint.core.selftest import Policy, evaluate

GOLDEN = Path("model/golden.onnx")
STATE = Path("finn/state.json")
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


def _step_keys(qonnx_path: Path, config: BuildConfig, board) -> list[str]:
    key = _sha(qonnx_path.read_bytes())
    keys = []
    for step in STEPS:
        cfg = {k: getattr(config, k) for k in step.config_keys}
        code = _sha(inspect.getsource(step.fn))  # a changed step invalidates its results
        key = _sha(json.dumps([key, step.name, code, cfg, board.part], sort_keys=True,
                              default=str))
        keys.append(key)
    return keys


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
) -> BuildResult:
    """Compile `spec` for `board` into the package directory `out`."""
    from fpgaprint.core.boards import check_resources, get_board

    config = config or BuildConfig()
    brd = get_board(board)  # fail on bad input before touching OUT
    fp = _load_fingerprint(fingerprint) if fingerprint else None
    if fp is not None:
        _check_key(key, allow_unsigned)
    if not spec.startswith("zoo:") and not Path(spec).exists():
        raise InputError(f"{spec}: no such model file")
    out = Path(out)
    _prepare_out(out)
    log = _Log(out, console)
    report: dict = {"model": spec, "board": brd.name, "part": brd.part,
                    "config": config.as_dict(), "steps": [], "equivalence": [],
                    "status": "running"}
    result = BuildResult(out, out / GOLDEN, report)
    t_all = time.perf_counter()
    try:
        _run(spec, brd, out, config, fp, log, report, result, console)
        findings = check_resources(brd, report.get("estimates", {}).get("resources_total", {}),
                                   config.resource_warn)
        report["resource_check"] = [{"level": lv, "message": m} for lv, m in findings]
        for lv, m in findings:
            log(f"[{'red' if lv == 'fail' else 'yellow'}]{lv}: {m}[/]", show=True)
        if any(lv == "fail" for lv, _ in findings):
            raise InputError(f"the design does not fit {brd.name}: " +
                             "; ".join(m for lv, m in findings if lv == "fail"))
        report["vivado"] = vivado.run_or_explain(out, brd, config, log)
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
        name = "build.json" if report["status"] == "ok" else "build.failed.json"
        write_json(out / "reports" / name, report)
        log.close()
    if fp is not None:
        _package(out, brd, config, fp, result, key, allow_unsigned, tar)
    return result


def _run(spec, brd, out, config, fp, log, report, result, console):
    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaprint.compiler import frontend
    from fpgaprint.core.grid import InputGrid

    ensure_finn(out / "finn")
    progress = _progress(console)
    with progress:
        task = progress.add_task("front end", total=len(STEPS) + 2)
        t0 = time.perf_counter()
        with log.capture():
            fe = frontend.resolve(spec, config, out / "model", log)
        result.frontend = fe
        report["source_sha256"] = fe.source_sha256
        report["steps"].append({"name": "frontend", "seconds": round(time.perf_counter() - t0, 3),
                                "skipped": False})
        log(f"front end: {fe.source} -> {fe.qonnx_path}")
        progress.advance(task)

        grid = InputGrid(config.input_bits)
        data_x = fe.data.x_test if fe.data is not None else None
        x_int = sample_inputs(fe.input_shape, grid.qmax, config.equivalence_samples,
                              config.seed, data_x)
        eq = EquivalenceChecker(x_int, grid.qmax)
        if fe.torch_model is not None:
            t0 = time.perf_counter()
            eq.add("brevitas", run_torch(fe.torch_model, eq.x_float, fe.input_shape), False,
                   time.perf_counter() - t0)
        qmodel = ModelWrapper(str(fe.qonnx_path))
        t0 = time.perf_counter()
        with log.capture():
            eq.add("qonnx", run_onnx(qmodel, eq.x_float), False, time.perf_counter() - t0)

        with StageRunner(out / "finn") as stages:
            _run_steps(fe, brd, out, config, log, report, result, progress, task, qmodel,
                       x_int, eq, stages)
            # RTL co-simulation: node by node on the worker, the stitched design here
            progress.update(task, description="rtlsim")
            rtl_stage.run(out, brd, config, log, report, eq, stages,
                          out / report["steps"][-1]["model"], out / GOLDEN, x_int)
            progress.update(task, description="equivalence")
            stages.drain(eq)
        report["equivalence"] = [r.as_dict() for r in eq.results]
        report["equivalence_inputs"] = int(len(x_int))
        progress.update(task, description="done")
        progress.advance(task)


def _run_steps(fe, brd, out, config, log, report, result, progress, task, qmodel, x_int, eq,
               stages) -> None:
    """The FINN+ steps, reusing unchanged results; stage executions queued on `stages`."""
    from qonnx.core.modelwrapper import ModelWrapper

    state_path = out / STATE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    keys = _step_keys(fe.qonnx_path, config, brd)
    ctx = BuildContext(config, brd, out, log, report)
    model, integer_input, reusing, golden = qmodel, False, True, None
    for i, (step, key) in enumerate(zip(STEPS, keys)):
        progress.update(task, description=step.name)
        path = out / "model" / "steps" / f"{i + 1:02d}_{step.name}.onnx"
        t0 = time.perf_counter()
        saved = state.get("steps", {}).get(step.name, {})
        reusing = reusing and saved.get("key") == key and path.is_file()
        if reusing:
            model = ModelWrapper(str(path))
            report.update(saved.get("report", {}))
        else:
            before = set(report)
            with log.capture():
                model = step.fn(model, ctx)
            model.save(str(path))
            state.setdefault("steps", {})[step.name] = {
                "key": key, "report": {k: report[k] for k in set(report) - before}}
            write_json(state_path, state)
        secs = time.perf_counter() - t0
        report["steps"].append({"name": step.name, "seconds": round(secs, 3),
                                "skipped": reusing, "model": str(path.relative_to(out))})
        log(f"step {step.name}: {'reused' if reusing else 'done'} in {secs:.2f} s")
        if reusing:
            result.skipped_steps.append(step.name)
        integer_input = integer_input or step.name == "input_grid"
        if step.executable and step.name != "qonnx_to_finn":
            stages.stage(step.name, model, path, x_int if integer_input else eq.x_float,
                         exact=i >= _STREAMLINE)
        if step.name == GOLDEN_AFTER:
            golden = model
            model.save(str(out / GOLDEN))
            report["io"] = _io_spec(model)
        if step.name == "dataflow_partition":
            stages.partition(out / "model" / "dataflow_parent.onnx", golden, out / GOLDEN,
                             x_int[:PARENT_VECTORS])
        progress.advance(task)


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
    }


def _progress(console):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description:<20}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=console, transient=True, disable=console is None)


def _load_fingerprint(path):
    from fpgaprint.core.fpset import load_set

    return load_set(path)


def _check_key(key, allow_unsigned: bool) -> None:
    """Fail before building when the package could not be signed at the end."""
    from fpgaprint.core.keys import default_key_path

    if allow_unsigned:
        return
    path = Path(key) if key else default_key_path()
    if not path.is_file():
        raise InputError(f"signing key {path} not found: run `fpgaprint keys generate`, pass "
                         "--key, or --unsigned for a development package")


def _package(out: Path, brd, config, fp, result, key, allow_unsigned: bool, tar: bool) -> None:
    """Embed the fingerprint as self-test vectors, then write the signed manifest."""
    from fpgaprint.compiler.package import finalize_package, write_selftest
    from fpgaprint.core.golden import GoldenModel

    report = result.report
    golden = GoldenModel(result.golden_path)
    in_shape = tuple(report["io"]["input"]["shape"][1:])
    if tuple(fp.input_shape) != in_shape and int(np.prod(fp.input_shape)) != int(
            np.prod(in_shape)):
        raise InputError(f"fingerprint inputs have shape {fp.input_shape}, the accelerator "
                         f"takes {in_shape}")
    if fp.grid_bits != config.input_bits:
        raise InputError(f"fingerprint set is on a {fp.grid_bits}-bit grid, the accelerator "
                         f"input is {config.input_bits}-bit")
    inputs = fp.inputs_int.reshape((len(fp), *in_shape))
    raw, _, labels = golden.run(inputs)
    policy = Policy(("exact", "fingerprint"), float(fp.threshold))
    own = evaluate(raw, labels, {"golden_raw": raw, "expected_labels": fp.labels}, policy)
    match = own.match_rate
    if not own.passed:
        raise InputError(f"the compiled model would fail its own self-test: {own.reason}")
    src = report.get("source_sha256")
    if src and fp.source_sha256 != src:
        report.setdefault("warnings", []).append(
            "fingerprint set was made from a different model (source hashes differ)")
    write_selftest(out, inputs, raw, labels, fp.labels, {
        **policy.to_dict(),
        "algorithm": fp.algorithm,
        "fingerprint_sha256": fp.sha256(),
        "source_model_sha256": fp.source_sha256,
        "threshold_note": json.dumps(fp.calibration, sort_keys=True),
        "golden_match_rate": match,
    })
    report["selftest"] = {"count": len(fp), "golden_match_rate": match,
                          "threshold": float(fp.threshold)}
    write_json(out / "reports" / "build.json", report)
    meta = {"name": Path(report["model"]).stem.removeprefix("zoo:"), "board": brd.name,
            "part": brd.part, "platform": brd.platform,
            "clock_ns": config.clock_ns or brd.clock_ns, "io": report["io"]}
    bit = sorted((out / "hw").glob("*.bit")) if (out / "hw").is_dir() else []
    if bit:
        meta["bitstream"] = {"path": str(bit[0].relative_to(out))}
    finalize_package(out, meta, key_path=key, allow_unsigned=allow_unsigned, tar=tar)
