"""`fpgaprint fingerprint`: generate, check and evaluate fingerprint sets."""

from __future__ import annotations

from pathlib import Path

import click

from fpgaprint.core.atomic import write_json
from fpgaprint.core.cliopts import trust_pickle_option
from fpgaprint.core.errors import InputError, VerdictFail


def _seed_torch() -> None:
    import torch

    torch.manual_seed(0)


@click.group()
@click.option("--threads", type=int, default=1, show_default=True,
              help="Torch threads (small models run fastest on one).")
def fingerprint(threads: int) -> None:
    """Intrinsic examples: data-free fingerprints of a pre-trained model."""
    import torch

    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


@fingerprint.command()
@click.argument("model")
@trust_pickle_option
@click.option("--algorithm", type=click.Choice(["vanilla", "robust", "sensitive"]),
              default="robust", show_default=True)
@click.option("--count", type=int, default=100, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--calibrate", is_flag=True, help="Set the threshold from benign variants.")
@click.option("--margin", type=float, default=None, help="Minimum logit margin to keep.")
@click.option("--steps", type=int, default=None, help="Gradient steps per round.")
def generate(model: str, algorithm: str, count: int, out: Path, seed: int, calibrate: bool,
             margin: float | None, steps: int | None) -> None:
    """Generate COUNT intrinsic examples of MODEL (a .pt file or zoo:NAME) into OUT."""
    from fpgaprint.fingerprint.calibrate import calibrate as do_calibrate
    from fpgaprint.fingerprint.generate import GenParams
    from fpgaprint.fingerprint.generate import generate as do_generate
    from fpgaprint.fingerprint.source import load_model

    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}")
    params = GenParams()
    if margin is not None:
        params.min_margin = margin
    if steps is not None:
        params.steps = steps
    _seed_torch()
    src = load_model(model)
    fs = do_generate(src, algorithm, count, seed=seed, params=params, progress=True)
    if calibrate:
        fs = do_calibrate(fs, src)
    fs.save(out)
    click.echo(f"{out}: {len(fs)} {algorithm} examples of {src.name} "
               f"(source sha256 {src.sha256[:16]}), threshold {fs.threshold:.3f}")
    click.echo(f"threshold: {fs.calibration.get('method')}")


@fingerprint.command()
@click.argument("model")
@trust_pickle_option
@click.argument("fpset", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--expect-source", is_flag=True,
              help="MODEL must be the set's source model (hash mismatch is an error).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the result as JSON.")
def check(model: str, fpset: Path, expect_source: bool, json_out: Path | None) -> None:
    """Match rate and verdict of MODEL on the fingerprint set FPSET (exit 1 on FAIL)."""
    from fpgaprint.core.fpset import load_set
    from fpgaprint.fingerprint.check import check as do_check
    from fpgaprint.fingerprint.source import load_model

    fs = load_set(fpset)
    _seed_torch()
    result = do_check(load_model(model), fs, expect_source=expect_source)
    click.echo(result.explain())
    if json_out:
        write_json(json_out, result.to_dict(), sort_keys=False)
    if not result.passed:
        raise VerdictFail(f"fingerprint mismatch: {result.matches}/{result.count} labels match, "
                          f"below threshold {result.threshold:.3f}")


@fingerprint.command(name="eval")
@click.argument("model")
@trust_pickle_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--count", type=int, default=100, show_default=True, help="Vectors per method.")
@click.option("--flip-seeds", type=int, default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="Fewer flip counts, seeds and epochs (smoke run).")
def eval_(model: str, out: Path, count: int, flip_seeds: int, seed: int, quick: bool) -> None:
    """Fidelity table of MODEL: benign and malicious variants against every method."""
    from fpgaprint.fingerprint.evaluate import EvalConfig, evaluate
    from fpgaprint.fingerprint.report import write_report

    cfg = EvalConfig.quick() if quick else EvalConfig()
    cfg.count = count
    cfg.seed = seed
    if not quick:
        cfg.flip_seeds = flip_seeds
    _seed_torch()
    results, sets = evaluate(model, cfg, progress=True)
    paths = write_report(results, out, sets)
    for p in paths:
        click.echo(str(p))
