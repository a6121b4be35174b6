"""`fpgaprint build --matrix`: models × boards × config overrides as builds on Dask.

The matrix file (YAML):

    models: [zoo:digits-mlp, {model: nets/tfc.onnx, name: tfc, fingerprint: fp/tfc.npz}]
    boards: [Pynq-Z1, ZCU104]
    config: {equivalence_samples: 16}        # or a build.yaml path; keys of the build config
    overrides: [{}, {name: w3, weight_bits: 3, act_bits: 3}]   # one build per entry …
    sweep: {target_fps: [1000, 10000]}       # … times every combination of these values
    fingerprint: fp.npz                       # models without their own; no set: no package
    key: release.key                          # or `unsigned: true`

Keys are the build config's, FINN+ names included, and are validated by it. Relative paths
are relative to the matrix file. Each build writes its usual directory `OUT/NAME/`;
`OUT/matrix.{json,md,html}` list per build: fit and resources, estimated and measured cycles,
equivalence, package id, signed or UNSIGNED, seconds, or the error. A failed build never
stops the others. A build whose directory already holds a complete result of the same
inputs (model, board, config, fingerprint, key, fpgaprint code) is skipped with its package
id; any other build goes through `build_model`, which reuses every unchanged step.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fpgaprint.core.atomic import write_atomic, write_json
from fpgaprint.core.cluster import (
    PROCESS_LOCK,
    Cluster,
    TaskView,
    code_identity,
    connect,
    describe_error,
    fan_out,
    stamp,
    task_started,
    worker_address,
)
from fpgaprint.core.errors import FpgaprintError, InputError

MAX_BUILDS = 10_000
STATE = ".matrix"  # OUT/.matrix/NAME.json: a build's record and the inputs it was made of;
# OUT/.matrix/NAME.running: an attempt under way (a lost worker leaves it behind)
RESOURCES = ("LUT", "FF", "BRAM_18K", "DSP", "URAM")


class _ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    name: str | None = None
    fingerprint: str | None = None
    boundary: str | None = None


class _MatrixFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str | _ModelEntry] = Field(min_length=1)
    boards: list[str] = Field(default_factory=lambda: ["Pynq-Z1"], min_length=1)
    config: str | dict[str, Any] = Field(default_factory=dict)
    overrides: list[dict[str, Any]] = Field(default_factory=lambda: [{}], min_length=1)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    fingerprint: str | None = None
    boundary: str | None = None
    key: str | None = None
    unsigned: bool = False


@dataclass
class BuildJob:
    """One build of the matrix, as a task receives it (absolute paths, validated config)."""

    name: str
    model: str  # zoo:NAME or an absolute path
    board: str
    config: dict[str, Any]  # BuildConfig values
    overrides: dict[str, Any]  # what this build changes (for the report)
    out: str  # absolute build directory
    fingerprint: str | None = None
    boundary: str | None = None
    key: str | None = None
    unsigned: bool = False
    inputs: str = ""  # SHA-256 of everything the build's result depends on


@dataclass
class Matrix:
    path: Path
    jobs: list[BuildJob]
    meta: dict[str, Any] = field(default_factory=dict)


def _sha_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.") or "x"


def _override_name(ov: dict[str, Any]) -> str:
    return "_".join(f"{k}-{v}" for k, v in ov.items())


def load_matrix(path: str | Path, out: str | Path, key: str | None = None,
                unsigned: bool = False) -> Matrix:
    """Read, validate and expand a matrix file; every error names the file and the entry."""
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.core.boards import get_board

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--matrix {p}: no such file")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{p}: expected a mapping with models, boards, config, overrides")
    try:
        spec = _MatrixFile.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise InputError(f"{p}: {where}: {err['msg']}") from None
    base = p.resolve().parent

    def resolve(rel: str | None, what: str) -> str | None:
        if rel is None:
            return None
        q = Path(rel).expanduser()
        q = q if q.is_absolute() else base / q
        if not q.is_file():
            raise InputError(f"{p}: {what} {rel}: no such file")
        return str(q)

    if isinstance(spec.config, str):
        base_values = BuildConfig.load(resolve(spec.config, "config")).as_dict()
    else:
        try:  # a bad key here is the config's, not the first override's
            BuildConfig.load(None, **spec.config)
        except InputError as err:
            raise InputError(f"{p}: config: {err}") from None
        base_values = dict(spec.config)
    for k, vals in spec.sweep.items():
        if not vals:
            raise InputError(f"{p}: sweep.{k}: an empty list of values")
    sweep = [dict(zip(spec.sweep, combo)) for combo in itertools.product(*spec.sweep.values())]
    variants = []
    for i, ov in enumerate(spec.overrides):
        ov = dict(ov)
        name = ov.pop("name", None)
        for s in sweep:
            both = {**ov, **s}
            label = "_".join(x for x in (str(name) if name is not None else _override_name(ov),
                                         _override_name(s)) if x)
            variants.append((f"overrides[{i}]", label, both))
    n = len(spec.models) * len(spec.boards) * len(variants)
    if n > MAX_BUILDS:
        raise InputError(f"{p}: {n} builds; at most {MAX_BUILDS}")
    boards = []
    for i, b in enumerate(spec.boards):
        try:
            boards.append(get_board(b).name)
        except InputError as err:
            raise InputError(f"{p}: boards[{i}]: {err}") from None
    key = key or resolve(spec.key, "key")
    unsigned = unsigned or spec.unsigned
    key_id = _key_id(key, unsigned)
    code = code_identity()["code"]
    out = Path(out).resolve()
    jobs: list[BuildJob] = []
    for mi, entry in enumerate(spec.models):
        e = entry if isinstance(entry, _ModelEntry) else _ModelEntry(model=entry)
        if e.model.startswith("zoo:"):
            from fpgaprint.compiler.zoo import get_entry

            try:
                get_entry(e.model)
            except InputError as err:
                raise InputError(f"{p}: models[{mi}]: {err}") from None
            model, model_id = e.model, e.model
            mname = e.name or e.model.removeprefix("zoo:")
        else:
            model = resolve(e.model, f"models[{mi}]")
            model_id = _sha_file(Path(model))
            mname = e.name or Path(model).stem
        fp = resolve(e.fingerprint or spec.fingerprint, f"models[{mi}].fingerprint")
        bd = resolve(e.boundary or spec.boundary, f"models[{mi}].boundary")
        for board in boards:
            for where, label, ov in variants:
                try:
                    cfg = BuildConfig.load(None, **{**base_values, **ov})
                except InputError as err:
                    raise InputError(f"{p}: {where}: {err}") from None
                values = cfg.as_dict()
                folding = values.get("folding_config")
                if folding:
                    values["folding_config"] = resolve(folding, f"{where}: folding_config")
                name = _slug("-".join(x for x in (mname, board, label) if x))
                files = {k: _sha_file(Path(v)) for k, v in (
                    ("fingerprint", fp), ("boundary", bd),
                    ("folding_config", values.get("folding_config"))) if v}
                inputs = hashlib.sha256(json.dumps(
                    [model_id, board, {k: v for k, v in values.items() if k != "folding_config"},
                     files, key_id, code], sort_keys=True, default=str).encode()).hexdigest()
                jobs.append(BuildJob(name, model, board, values, ov, str(out / name), fp, bd,
                                     key, unsigned, inputs))
    names = [j.name for j in jobs]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise InputError(f"{p}: two builds would be named {dup[0]} (give the models or "
                         "overrides distinct `name`s)")
    if any(j.fingerprint for j in jobs) and not unsigned and not key:
        from fpgaprint.core.keys import default_key_path

        if not default_key_path().is_file():
            raise InputError(f"{p}: packages need a signing key: `key:` in the matrix, --key, "
                             "or `unsigned: true` / --allow-unsigned")
    return Matrix(p, jobs, {"models": len(spec.models), "boards": boards,
                            "variants": len(variants)})


def _key_id(key: str | None, unsigned: bool) -> str:
    """Who signs: the public key (never the private key's bytes), or unsigned."""
    if key is None:
        from fpgaprint.core.keys import default_key_path

        if unsigned or not default_key_path().is_file():
            return "unsigned"
        key = str(default_key_path())
    from fpgaprint.core.keys import load_private_key, public_key_hex

    return public_key_hex(load_private_key(key))


# ------------------------------------------------------------------------------ one build

def _state(job: BuildJob, suffix: str) -> Path:
    """The matrix's own files about a build, beside (never inside) its directory."""
    return Path(job.out).parent / STATE / f"{job.name}.{suffix}"


def _present(out: Path, job: BuildJob) -> dict | None:
    """The recorded result when OUT holds a complete build of exactly these inputs."""
    try:
        entry = json.loads(_state(job, "json").read_text())
    except (OSError, ValueError):
        return None
    if entry.get("inputs") != job.inputs or entry.get("status") not in ("ok", "skipped"):
        return None
    if not (out / "reports" / "build.json").is_file() or _state(job, "running").exists():
        return None
    if job.fingerprint:
        manifest = out / "manifest.json"
        if not manifest.is_file() or \
                hashlib.sha256(manifest.read_bytes()).hexdigest() != entry.get("package_id"):
            return None
    return entry


def summarize_report(report: dict, board_name: str) -> dict[str, Any]:
    """Fit and resources, cycles, equivalence of one build report (complete or failed)."""
    from fpgaprint.core.boards import get_board

    est = report.get("estimates") or {}
    total = est.get("resources_total") or {}
    board = get_board(board_name)
    resources = {}
    for k in RESOURCES:
        need = total.get(k)
        have = board.resources.get(k, 0)
        if need is not None:
            resources[k] = {"used": round(float(need), 1), "available": have,
                            "percent": round(100.0 * float(need) / have, 1) if have else None}
    checks = report.get("resource_check") or []
    if not total:
        fit = None
    elif any(c.get("level") == "fail" for c in checks):
        fit = "does not fit"
    elif checks:
        fit = "fits (" + "; ".join(c["message"] for c in checks) + ")"
    else:
        fit = "fits"
    stitched = ((report.get("rtl") or {}).get("stitched") or {})
    measured = None
    if stitched.get("built"):
        measured = {"latency_cycles": stitched.get("latency_cycles"),
                    "ii_cycles": stitched.get("ii_cycles"),
                    "fps": stitched.get("measured_fps")}
    eq = report.get("equivalence") or []
    eq = [r for r in eq if isinstance(r, dict)]
    bad = [r["stage"] for r in eq if not r.get("ok")]
    equivalence = None if not eq else {
        "ok": not bad, "stages": len(eq),
        "exact_stages": sum(bool(r.get("exact")) for r in eq),
        "first_mismatch": bad[0] if bad else None}
    return {
        "fit": fit, "resources": resources,
        "estimated": {"ii_cycles": est.get("max_cycles"), "fps": est.get("estimated_fps"),
                      "clock_ns": est.get("clock_ns")} if est else None,
        "measured": measured, "equivalence": equivalence,
        "build_seconds": report.get("seconds"),
        "steps_reused": sum(bool(s.get("skipped")) for s in report.get("steps", [])),
        "steps": len(report.get("steps", [])),
    }


def _read_report(out: Path) -> dict:
    for name in ("build.json", "build.failed.json"):
        with contextlib.suppress(OSError, ValueError):
            return json.loads((out / "reports" / name).read_text())
    return {}


def run_build(job: BuildJob) -> dict[str, Any]:
    """Build one matrix entry here (a Dask worker or the client); never raises for a build
    error: the record carries it. Writes the record to OUT/../.matrix/NAME.json."""
    with PROCESS_LOCK:
        task_started()
        return _run_build(job)


def _run_build(job: BuildJob) -> dict[str, Any]:
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.compiler.zoo import deterministic_torch

    t0 = time.perf_counter()
    out = Path(job.out)
    rec: dict[str, Any] = {"name": job.name, "model": job.model, "board": job.board,
                           "overrides": job.overrides, "dir": out.name,
                           "worker": worker_address(), "started": stamp()}
    present = _present(out, job)
    if present is not None:
        keep = {k: present.get(k) for k in ("package_id", "signature", "fit", "resources",
                                            "estimated", "measured", "equivalence",
                                            "build_seconds", "steps", "steps_reused")}
        rec.update(keep, status="skipped", attempts=0,
                   detail="complete result of the same inputs present")
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        return rec
    running = _state(job, "running")
    running.parent.mkdir(parents=True, exist_ok=True)
    attempts = 1
    with contextlib.suppress(OSError, ValueError):
        attempts = int(json.loads(running.read_text()).get("attempts", 0)) + 1
    write_json(running, {"attempts": attempts, "worker": rec["worker"],
                               "started": rec["started"]})
    rec["attempts"] = attempts
    if attempts > 1:
        rec["detail"] = f"attempt {attempts}: an earlier attempt was interrupted"
    try:
        with deterministic_torch(1):  # the same floats, the same ids, wherever it runs
            res = build_model(job.model, job.board, out, BuildConfig.load(None, **job.config),
                              fingerprint=job.fingerprint, key=job.key,
                              allow_unsigned=job.unsigned, console=None, boundary=job.boundary)
        report = res.report
        rec["status"] = "ok"
        manifest = out / "manifest.json"
        rec["package_id"] = (hashlib.sha256(manifest.read_bytes()).hexdigest()
                             if job.fingerprint and manifest.is_file() else None)
        rec["signature"] = package_signature(out) if rec["package_id"] else None
    except Exception as e:  # every build error is this build's, never the matrix's
        report = _read_report(out)
        rec.update(status="failed", error=describe_error(e), package_id=None,
                   exit_code=getattr(e, "exit_code", 2) if isinstance(e, FpgaprintError)
                   else 2)
    rec.update(summarize_report(report, job.board))
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(_state(job, "json"), {"inputs": job.inputs, **rec})
    running.unlink(missing_ok=True)
    return rec


# ------------------------------------------------------------------------------ the matrix

@dataclass
class MatrixResult:
    out: Path
    records: list[dict[str, Any]]  # in matrix order
    meta: dict[str, Any]
    paths: list[Path]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "failed"]


def _lost(job: BuildJob, error: BaseException) -> dict[str, Any]:
    """The record of a task that ended without a record (given up after lost workers)."""
    out = Path(job.out)
    rec = {"name": job.name, "model": job.model, "board": job.board,
           "overrides": job.overrides, "dir": out.name, "status": "failed",
           "error": describe_error(error), "package_id": None, "exit_code": 3,
           "seconds": None, "worker": None}
    rec.update(summarize_report(_read_report(out), job.board))
    return rec


def run_matrix(matrix: Matrix, out: str | Path, cluster: Cluster, console=None
               ) -> MatrixResult:
    """Every build of `matrix` on `cluster`; the reports written to OUT."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = matrix.jobs
    records: list[dict | None] = [None] * len(jobs)
    view = TaskView(f"build matrix {matrix.path.name}", [j.name for j in jobs], console,
                    ("worker", "seconds", "package", "detail"))
    t0 = time.perf_counter()
    keys = [f"build-{j.name}-{j.inputs[:12]}" for j in jobs]
    with view:
        view.line(f"{len(jobs)} builds on {cluster.describe()}")
        def started(i: int, msg: dict) -> None:
            view.update(i, "running", worker=msg.get("worker"))

        for o in fan_out(cluster, run_build, jobs, keys, started):
            rec = o.value if o.error is None else _lost(jobs[o.index], o.error)
            records[o.index] = rec
            pkg = (rec.get("package_id") or "")[:12]
            secs = rec.get("seconds")
            view.update(o.index, rec["status"], seconds=None if secs is None else f"{secs:.1f}",
                        package=pkg,
                        worker=rec.get("worker"),
                        detail=rec.get("error") or rec.get("detail") or rec.get("fit") or "")
    wall = time.perf_counter() - t0
    # the report outlives the cluster: no dashboard address in it
    meta = {"matrix": str(matrix.path), "builds": len(jobs),
            "cluster": cluster.describe(live=False),
            "mode": cluster.mode, "workers": len(cluster.workers) if cluster.client else 1,
            "wall_seconds": round(wall, 3),
            "finished": stamp(), **code_identity(), **matrix.meta}
    result = MatrixResult(out, [r for r in records if r is not None], meta, [])
    result.paths = write_reports(result)
    return result


def write_reports(result: MatrixResult) -> list[Path]:
    """OUT/matrix.json, matrix.md and matrix.html (one page with its plot)."""
    out = result.out
    counts = {s: sum(r["status"] == s for r in result.records) for s in ("ok", "skipped",
                                                                          "failed")}
    doc = {"schema": "fpgaprint-matrix/1", **result.meta, "counts": counts,
           "builds": result.records}
    write_json(out / "matrix.json", doc, sort_keys=False)
    write_atomic(out / "matrix.md", markdown(doc))
    write_atomic(out / "matrix.html", html_page(doc).encode("utf-8"))
    return [out / "matrix.json", out / "matrix.md", out / "matrix.html"]


def package_signature(pkg: Path) -> str:
    """"signed" when the package carries its detached signature, else "UNSIGNED"."""
    return "signed" if (pkg / "manifest.sig").is_file() else "UNSIGNED"


def _cells(r: dict[str, Any]) -> dict[str, str]:
    """The table cells of one build (Markdown and HTML share them)."""
    res = r.get("resources") or {}
    resources = ", ".join(f"{k} {v['used']:.0f}" + (f" ({v['percent']:.0f} %)"
                                                     if v.get("percent") is not None else "")
                          for k, v in res.items() if v.get("used"))
    est = r.get("estimated") or {}
    meas = r.get("measured") or {}
    eq = r.get("equivalence")
    if eq is None:
        eqs = ""
    elif eq["ok"]:
        eqs = f"ok ({eq['stages']} stages, {eq['exact_stages']} bit-exact)"
    else:
        eqs = f"MISMATCH at {eq['first_mismatch']}"
    secs = r.get("seconds")
    return {
        "build": r["name"], "status": r["status"] + (f" (attempt {r['attempts']})"
                                                     if (r.get("attempts") or 0) > 1 else ""),
        "fit": r.get("fit") or "", "resources": resources,
        "estimated cycles": "" if est.get("ii_cycles") is None else f"{est['ii_cycles']}",
        "measured cycles": "" if not meas else f"{meas.get('ii_cycles'):g} "
                                               f"(latency {meas.get('latency_cycles'):g})",
        "equivalence": eqs, "package id": r.get("package_id") or "",
        "signature": r.get("signature") or "",
        "seconds": "" if secs is None else f"{secs:.1f}",
        "error": r.get("error") or "",
    }


def markdown(doc: dict[str, Any]) -> str:
    rows = [_cells(r) for r in doc["builds"]]
    cols = list(rows[0]) if rows else []
    c = doc["counts"]
    lines = [f"# Build matrix {Path(doc['matrix']).name}", "",
             f"{len(doc['builds'])} builds on {doc['cluster']}: {c['ok']} built, "
             f"{c['skipped']} skipped (present), {c['failed']} failed; "
             f"{doc['wall_seconds']:.1f} s wall time.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in row.values()) + " |")
    lines += ["", "Cycles are per frame (initiation interval): estimated by FINN+, measured in "
              "RTL simulation when the build ran it. Seconds are the task's wall time; a "
              "skipped build's are the check that its result is present."]
    return "\n".join(lines) + "\n"


STATUS_COLORS = {"ok": "#009E73", "skipped": "#56B4E9", "failed": "#D55E00"}  # Okabe & Ito


def _plot(doc: dict[str, Any]) -> str | None:
    """Base64 PNG: seconds per build (bar colour = status) beside LUT use per build."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    recs = doc["builds"]
    if not recs:
        return None
    names = [r["name"] for r in recs]
    y = list(range(len(recs)))
    fig = Figure(figsize=(11, 1.2 + 0.35 * len(recs)), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    colors = [STATUS_COLORS[r["status"]] for r in recs]
    ax1.barh(y, [r.get("seconds") or 0 for r in recs], color=colors)
    ax1.set_yticks(y, names, fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("seconds (task wall time)")
    ax1.set_title("Time per build")
    ax1.legend(handles=[Patch(color=v, label=k) for k, v in STATUS_COLORS.items()],
               loc="upper left", bbox_to_anchor=(0.0, -0.12 - 0.6 / len(recs)), ncol=3,
               frameon=False, fontsize=8)
    kinds = (("LUT", "#0072B2"), ("BRAM_18K", "#E69F00"), ("DSP", "#CC79A7"))
    h = 0.8 / len(kinds)
    top = 0.0
    for k, (res, color) in enumerate(kinds):
        pct = [((r.get("resources") or {}).get(res) or {}).get("percent") or 0 for r in recs]
        top = max(top, *pct)
        ax2.barh([v - 0.4 + h * (k + 0.5) for v in y], pct, height=h, color=color, label=res)
    if top >= 80:
        ax2.axvline(100, color="black", ls="--", lw=1)
    ax2.set_xlim(0, max(5.0, 1.15 * top))
    ax2.set_xlabel("estimate, % of the board's resource")
    ax2.set_title("Resource use per build")
    ax2.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12 - 0.6 / len(recs)), ncol=3,
               frameon=False, fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def html_page(doc: dict[str, Any]) -> str:
    e = html.escape
    rows = [_cells(r) for r in doc["builds"]]
    cols = list(rows[0]) if rows else []
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    body = "".join(
        f"<tr class='{e(r['status'])}'>" + "".join(f"<td>{e(v)}</td>" for v in row.values())
        + "</tr>" for r, row in zip(doc["builds"], rows))
    png = _plot(doc)
    fig = "" if png is None else (
        f"<figure><img alt='time and resource use per build' src='data:image/png;base64,{png}'>"
        "<figcaption>Left: each build's task wall time, coloured by its status. Right: its "
        "LUT, BRAM and DSP estimates as shares of the board's (a dashed line at 100 % when a "
        "build comes near it).</figcaption></figure>")
    c = doc["counts"]
    meta = "".join(f"<tr><th>{e(k)}</th><td>{e(str(doc[k]))}</td></tr>" for k in (
        "matrix", "cluster", "wall_seconds", "version", "finished") if doc.get(k) is not None)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>fpgaprint build matrix</title>
<style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:90%}}
tr.ok td:nth-child(2){{color:{STATUS_COLORS['ok']}}}
tr.skipped td:nth-child(2){{color:#0072B2}}
tr.failed td:nth-child(2){{color:{STATUS_COLORS['failed']};font-weight:bold}}
figcaption{{font-size:90%;color:#333}}
</style></head><body>
<h1>Build matrix {e(Path(doc['matrix']).name)}</h1>
<p>{c['ok']} built, {c['skipped']} skipped (present), {c['failed']} failed.</p>
<table>{meta}</table>
<h2>Builds</h2>
<table><tr>{head}</tr>{body}</table>
{fig}
</body></html>
"""


def build_matrix(path: str | Path, out: str | Path, scheduler: str | None = None,
                 workers: int | None = None, key: str | None = None, unsigned: bool = False,
                 console=None) -> MatrixResult:
    """Load the matrix, connect to the cluster, run every build, write the reports."""
    matrix = load_matrix(path, out, key, unsigned)
    say = (lambda m: console.print(m, highlight=False)) if console is not None else None
    log = Path(out) / STATE / "workers.log"
    with connect(scheduler, workers, say, worker_log=log) as cluster:
        if say is not None and cluster.mode == "local":
            say(f"worker output: {log}")
        return run_matrix(matrix, out, cluster, console)


def cli_matrix(path: str, out: str, scheduler: str | None, workers: int | None,
               key: str | None, unsigned: bool) -> int:
    """`fpgaprint build --matrix`: 0 when every build succeeded or was present, else the
    exit code of the first failed build (one line naming it and the reports)."""
    from fpgaprint.core.progress import console as make_console

    console = make_console(stderr=True)  # progress and logs; the result line: stdout
    res = build_matrix(path, out, scheduler, workers, key, unsigned, console)
    c = {s: sum(r["status"] == s for r in res.records) for s in ("ok", "skipped", "failed")}
    make_console().print(f"{len(res.records)} builds: {c['ok']} built, {c['skipped']} skipped "
                  f"(present), {c['failed']} failed in {res.meta['wall_seconds']:.1f} s; "
                  f"reports: {', '.join(str(p) for p in res.paths)}", highlight=False)
    if res.failed:
        first = res.failed[0]
        raise _MatrixFailed(f"{len(res.failed)} of {len(res.records)} builds failed, first "
                            f"{first['name']}: {first['error']}", first.get("exit_code", 2))
    return 0


class _MatrixFailed(FpgaprintError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def check_build_args(model, matrix, scheduler, workers, fingerprint, boundary, config_path,
                     tar, overrides) -> bool:
    """Whether `fpgaprint build` runs a matrix; refuses options that belong to the other
    form (one line naming them)."""
    from fpgaprint.core.cluster import check_scheduler

    if matrix is None:
        if model is None:
            raise InputError("build: give MODEL, or --matrix MATRIX.yaml")
        used = [f for f, v in (("--scheduler", scheduler), ("--workers", workers)) if v]
        if used:
            raise InputError(f"{', '.join(used)}: only with --matrix")
        return False
    if model is not None:
        raise InputError(f"build: MODEL {model} and --matrix: give one (the matrix names "
                         "its models)")
    single = [f"--{k.replace('_', '-')}" for k, v in overrides.items() if v is not None]
    single += [f for f, v in (("--fingerprint", fingerprint), ("--boundary", boundary),
                              ("--config", config_path), ("--tar", tar)) if v]
    if single:
        raise InputError(f"{', '.join(single)}: not with --matrix (set them in the matrix "
                         "file)")
    check_scheduler(scheduler)
    if workers and scheduler not in (None, "local"):
        raise InputError("--workers: only for the LocalCluster (--scheduler local)")
    return True
