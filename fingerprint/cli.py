"""`fpgaprint fingerprint`: generate, calibrate, check and evaluate fingerprint sets.

Every numeric option is range-checked: a bad value is one line naming the flag, exit 2.
"""

from __future__ import annotations

from pathlib import Path

import click

from fpgaprint.core.atomic import write_json
from fpgaprint.core.cliopts import FPSET, Number, OutputDir, OutputPath
from fpgaprint.core.errors import InputError, NoVerdict, VerdictFail

MAX_SEED = 2**32 - 1


class Algorithm(click.ParamType):
    """vanilla | robust | ltrc | boundary (the former name `sensitive` is accepted)."""

    name = "[vanilla|robust|ltrc|boundary]"

    def get_metavar(self, param, ctx=None) -> str:
        return self.name

    def convert(self, value, param, ctx):
        from fpgaprint.fingerprint.generate import canonical

        return canonical(str(value))


def _count_type(kind: type[Number] = Number) -> Number:
    from fpgaprint.fingerprint.sets import MAX_COUNT  # light: `fpgaprint --help` needs it

    return kind(int, 1, MAX_COUNT)


class CountOrAuto(Number):
    """A count from 1 to MAX_COUNT, or `auto` (sized to the calibration's gap)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return super().convert(value, param, ctx)

    def describe(self) -> str:
        return super().describe() + " or auto"


def _seed_torch() -> None:
    import torch

    torch.manual_seed(0)


def _progress():
    from fpgaprint.core.cliopts import stderr_console
    from fpgaprint.core.progress import Progress

    return Progress(stderr_console())


def _set_threads(ctx, param, value: int | None) -> int | None:
    if value is not None:
        import torch

        torch.set_num_threads(value)
    return value


_THREADS_HELP = "Torch threads (small models run fastest on one)."
threads_option = click.option(
    "--threads", type=Number(int, 1, 256), default=None, expose_value=False,
    callback=_set_threads, help=f"{_THREADS_HELP}  [default: 1]")


@click.group()
@click.option("--threads", type=Number(int, 1, 256), default=1, hidden=True,
              help=_THREADS_HELP)  # the old place, before the subcommand: still accepted
@click.pass_context
def fingerprint(ctx: click.Context, threads: int) -> None:
    """Intrinsic examples: data-free fingerprints of a pre-trained model."""
    import torch

    from fpgaprint.core.liblog import library_output

    torch.set_num_threads(threads)
    ctx.with_resource(library_output())  # torch's loggers exist now: route them too


_calibration_options = [
    click.option("--golden", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                 help="The build's model/golden.onnx: a benign variant of the calibration."),
    click.option("--attack", multiple=True, metavar="MODEL",
                 help="An independently trained model for the attack side (repeat; default: "
                      "the zoo recipe retrained with 2 new seeds)."),
]


def _with(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


@fingerprint.command()
@click.argument("model")
@click.option("--algorithm", type=Algorithm(), default="robust", show_default=True,
              help="vanilla (C-), robust (RC-), ltrc (LTRC-examples) from the pre-trained "
                   "model; boundary: the fragile tier, from the build's model/golden.onnx.")
@click.option("--count", type=_count_type(CountOrAuto), default=100, show_default=True,
              help="Examples in the set (1 to 10000), or auto: sized to the gap the "
                   "calibration measures on a pilot of 100, at most 500 (needs --calibrate).")
@click.option("--out", type=OutputPath(), required=True,
              metavar=FPSET, help="The fingerprint set to write (.npz).")
@click.option("--seed", type=Number(int, 0, MAX_SEED), default=0, show_default=True,
              help="Generation seed.")
@threads_option
@click.option("--calibrate", is_flag=True,
              help="Threshold from held-out benign variants, checked against independent "
                   "models and impostors.")
@_with(_calibration_options)
@click.option("--board", metavar="BOARD",
              help="The board the set is verified on: its UART rate (core/boards.yaml) sets "
                   "the line times the calibration reports [default: 115200 baud].")
@click.option("--challenge-out", type=OutputPath(), metavar=FPSET,
              help="Also write a challenge set, disjoint from the embedded one.")
@click.option("--challenge-count", type=_count_type(), default=None,
              help="Examples in the challenge set (default: --count).")
@click.option("--margin", type=Number(float, 0.0, 100.0), default=None,
              help="Minimum logit margin to keep (intrinsic examples).")
@click.option("--steps", type=Number(int, 1, 100_000), default=None,
              help="Gradient steps per round (intrinsic examples).")
@click.option("--weight-bits", type=Number(int, 2, 16), default=None,
              help="The build's weight width the robust family draws [build default].")
@click.option("--act-bits", type=Number(int, 2, 16), default=None,
              help="The build's activation width the robust family draws [build default].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="build.yaml: take the widths and the input grid from it.")
def generate(model: str, algorithm: str, count: int | str, out: Path, seed: int,
             calibrate: bool, golden: Path | None, attack: tuple[str, ...], board: str | None,
             challenge_out: Path | None, challenge_count: int | None, margin: float | None,
             steps: int | None, weight_bits: int | None, act_bits: int | None,
             config_path: Path | None) -> None:
    """Generate COUNT examples of MODEL (.pt, zoo:NAME, or golden.onnx for boundary) into OUT."""
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.fingerprint import power
    from fpgaprint.fingerprint.calibrate import build_sides, calibrate_with
    from fpgaprint.fingerprint.generate import PAPER_NAMES, GenParams, generate_pair
    from fpgaprint.fingerprint.source import load_model

    if count == "auto" and not calibrate:
        raise InputError("--count auto: needs --calibrate (the count is sized to the gap the "
                         "calibration measures)")
    if board is not None and not calibrate:
        raise InputError("--board: only with --calibrate (it sets the calibration's line times)")
    try:  # an unknown board is an input error before any work
        baud = power.board_baud(board)[0]
    except InputError as e:
        raise InputError(f"--board: {e}") from None
    if challenge_count is not None and challenge_out is None:
        raise InputError("--challenge-count: give --challenge-out for the challenge set")
    if challenge_out is not None and Path(challenge_out).resolve() == Path(out).resolve():
        raise InputError("--challenge-out: must differ from --out")
    n_chal = (challenge_count or count) if challenge_out and count != "auto" else 0
    if algorithm == "boundary":
        if calibrate:
            raise InputError("--calibrate: boundary sets are strict (threshold 1.0)")
        bad = [f for f, v in (("--margin", margin), ("--steps", steps),
                               ("--weight-bits", weight_bits), ("--act-bits", act_bits),
                               ("--golden", golden), ("--attack", attack)) if v]
        if bad:
            raise InputError(f"{bad[0]}: does not apply to boundary vectors")
        params = None
    else:
        cfg = BuildConfig.load(config_path)
        params = GenParams(weight_bits=weight_bits or cfg.weight_bits,
                           act_bits=act_bits or cfg.act_bits, grid_bits=cfg.input_bits)
        if margin is not None:
            params.min_margin = margin
        if steps is not None:
            params.steps = steps
    _seed_torch()
    src = load_model(model)
    sizing = None
    with _progress() as progress:
        def sides():
            with progress.task("calibration"):
                return build_sides(src, golden=golden, attack=list(attack) or None,
                                   weight_bits=params.weight_bits, act_bits=params.act_bits,
                                   seed=seed, say=progress.log)

        if count == "auto":
            from fpgaprint.fingerprint.sizing import generate_sized

            sized = generate_sized(src, algorithm, sides, seed, params,
                                   challenge=challenge_out is not None,
                                   challenge_count=challenge_count, board=board,
                                   progress=progress)
            fs, chal, sizing = sized.fs, sized.challenge, sized.sizing
        else:
            fs, chal = generate_pair(src, algorithm, count, n_chal, seed=seed, params=params,
                                     progress=progress)
            if calibrate:
                both = sides()
                fs = calibrate_with(fs, both, baud=baud)
                chal = (calibrate_with(chal, both, embedded=fs, baud=baud)
                        if chal is not None else None)
    fs.save(out)
    click.echo(f"{out}: {len(fs)} {algorithm} examples ({PAPER_NAMES[algorithm]}) of "
               f"{src.name} (source sha256 {src.sha256[:16]}), threshold {fs.threshold:.3f}")
    click.echo(f"threshold: {fs.calibration.get('method')}")
    if chal is not None:
        chal.save(challenge_out)
        click.echo(f"{challenge_out}: {len(chal)} challenge examples, disjoint from {out} "
                   f"(no quantized input in common), threshold {chal.threshold:.3f}")
    if calibrate:
        _print_sides(fs.calibration)
        if chal is not None:
            from fpgaprint.fingerprint.report import calibration_lines

            click.echo(f"  challenge set against impostors trained on the embedded set: "
                       f"{calibration_lines(chal.calibration)[0]}")
    if sizing is not None:
        from fpgaprint.fingerprint.sizing import sizing_lines

        for text in sizing_lines(sizing):
            click.echo(text)


def _print_sides(cal: dict) -> None:
    for side in ("benign", "attack", "impostor", "excluded"):
        for name, r in cal.get(side, {}).items():
            lo, hi = r["interval"]
            acc = "" if r.get("accuracy") is None else f", accuracy {r['accuracy']:.3f}"
            note = f" — {r['note']}" if r.get("note") else ""
            click.echo(f"  {side:<8} {name:<26} match {r['match_rate']:.3f} "
                       f"[{lo:.3f}, {hi:.3f}]{acc}{note}")
    for name, why in cal.get("skipped", {}).items():
        click.echo(f"  skipped  {name}: {why}")
    from fpgaprint.fingerprint.report import calibration_lines

    for text in calibration_lines(cal):
        click.echo(f"  {text}")


@fingerprint.command(name="calibrate")
@click.argument("model")
@click.argument("fpset", type=click.Path(dir_okay=False, path_type=Path), metavar=FPSET)
@click.option("--out", type=OutputPath(), metavar=FPSET,
              help="Write the calibrated set here [FPSET, replaced atomically].")
@_with(_calibration_options)
@click.option("--seed", type=Number(int, 0, MAX_SEED), default=0, show_default=True,
              help="Seed of the calibration's variants and independent models.")
@click.option("--no-score", "no_score", is_flag=True,
              help="Never carry the score check, even where the calibration keeps it (a "
                   "benign side that misses planned compressions).")
@threads_option
def calibrate_cmd(model: str, fpset: Path, out: Path | None, golden: Path | None,
                  attack: tuple[str, ...], seed: int, no_score: bool) -> None:
    """Set FPSET's threshold from held-out benign variants of MODEL and check it against
    independently trained models and the set's impostors (exit 1, nothing written, when it
    does not reject an independent model); the set carries the score check where it
    separates (docs/fingerprint.md)."""
    from fpgaprint.core.fpset import load_set
    from fpgaprint.fingerprint.calibrate import calibrate
    from fpgaprint.fingerprint.source import load_model

    fs = load_set(fpset)
    _seed_torch()
    src = load_model(model)
    if src.sha256 != fs.source_sha256:
        raise InputError(f"{model}: not the source of {fpset} (sha256 {src.sha256[:16]}…, the "
                         f"set was made from {fs.source_sha256[:16]}…)")
    with _progress() as progress, progress.task("calibration"):
        fs = calibrate(fs, src, golden=golden, attack=list(attack) or None, seed=seed,
                       say=progress.log, score=not no_score)
    dest = out or fpset
    fs.save(dest)
    click.echo(f"{dest}: threshold {fs.threshold:.3f}")
    click.echo(f"threshold: {fs.calibration['method']}")
    _print_sides(fs.calibration)


@fingerprint.command()
@click.argument("model")
@click.argument("fpset", type=click.Path(dir_okay=False, path_type=Path), metavar=FPSET)
@threads_option
@click.option("--expect-source", is_flag=True,
              help="MODEL must be the set's source model (hash mismatch is an error).")
@click.option("--json", "json_out", type=OutputPath(),
              metavar="FILE", help="Also write the result as JSON.")
@click.option("--confidence", type=Number(float, 0.5, 0.999), default=0.95, show_default=True,
              help="Level of the match rate's Clopper-Pearson interval.")
def check(model: str, fpset: Path, expect_source: bool, json_out: Path | None,
          confidence: float) -> None:
    """Match rate, interval and verdict of MODEL on FPSET, and the score check when FPSET
    carries it: exit 0 PASS, 1 FAIL, 3 MARGINAL (an interval straddles its threshold: no
    confident verdict)."""
    from fpgaprint.core.fpset import load_set
    from fpgaprint.fingerprint.check import MARGINAL
    from fpgaprint.fingerprint.check import check as do_check
    from fpgaprint.fingerprint.source import load_model

    fs = load_set(fpset)
    _seed_torch()
    result = do_check(load_model(model), fs, expect_source=expect_source,
                      confidence=confidence)
    click.echo(result.explain())
    if json_out:
        write_json(json_out, result.to_dict(), sort_keys=False)
    lo, hi = result.interval
    if result.verdict == MARGINAL and not result.marginal:
        raise NoVerdict(f"marginal: score: {result.score['detail']}")
    if result.verdict == MARGINAL:
        raise NoVerdict(f"marginal: match rate {result.match_rate:.3f}, interval [{lo:.3f}, "
                        f"{hi:.3f}] straddles threshold {result.threshold:.3f} at N="
                        f"{result.count}: no confident verdict")
    if result.labels_pass and result.score_failed:
        raise VerdictFail(f"score mismatch: {result.score['detail']}")
    if not result.passed:
        raise VerdictFail(f"fingerprint mismatch: {result.matches}/{result.count} labels match"
                          + (" (strict)" if result.strict else
                             f", below threshold {result.threshold:.3f}"))


@fingerprint.command(name="eval")
@click.argument("model")
@click.option("--out", type=OutputDir(), required=True,
              metavar="DIR", help="Directory for the table (JSON, Markdown) and plots.")
@click.option("--count", type=_count_type(), default=100, show_default=True,
              help="Vectors per method.")
@click.option("--flip-seeds", type=Number(int, 1, 1000), default=20, show_default=True,
              help="Random draws per number of flipped weight bits.")
@click.option("--single-flips", type=Number(int, 1, 100_000), default=400, show_default=True,
              help="Single random weight-bit flips of the deployed model.")
@click.option("--seed", type=Number(int, 0, MAX_SEED), default=0, show_default=True,
              help="Seed of the sets, variants and attacks.")
@threads_option
@click.option("--golden", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="An existing model/golden.onnx of MODEL (no build).")
@click.option("--quick", is_flag=True, help="Fewer flip counts, seeds and epochs (smoke run).")
@click.option("--scheduler", metavar="tcp://HOST:8786",
              help="Fan trainings and generations out on Dask: a scheduler address, or 'local' "
                   "(a LocalCluster on this machine) [default: serial, in this process]")
@click.option("--workers", type=Number(int, 1, 1024), default=None,
              help="LocalCluster workers [one per core].")
def eval_(model: str, out: Path, count: int, flip_seeds: int, single_flips: int, seed: int,
          golden: Path | None, quick: bool, scheduler: str | None, workers: int | None) -> None:
    """Fidelity table of MODEL: benign and malicious variants against every method."""
    from fpgaprint.core.cluster import SERIAL, check_scheduler, connect
    from fpgaprint.fingerprint.evaluate import EvalConfig, evaluate
    from fpgaprint.fingerprint.report import write_report

    scheduler = check_scheduler(scheduler) or SERIAL
    if workers and scheduler != "local":
        raise InputError("--workers: only with --scheduler local")

    cfg = EvalConfig.quick() if quick else EvalConfig()
    cfg.count = count
    cfg.seed = seed
    cfg.golden = str(golden) if golden else None
    if not quick:
        cfg.flip_seeds = flip_seeds
        cfg.single_flip_seeds = single_flips
    _seed_torch()
    with _progress() as progress:
        with connect(scheduler, workers, progress.log, worker_log=out / "workers.log") as cluster:
            if cluster.client is not None:
                progress.log(cluster.describe())
            results, sets = evaluate(model, cfg, progress=progress, cluster=cluster)
    paths = write_report(results, out, sets)
    for p in paths:
        click.echo(str(p))
