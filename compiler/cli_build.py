"""CLI: `fpgaprint train` and `fpgaprint build`."""

from __future__ import annotations

from pathlib import Path

import click

from fpgaprint.core.cliopts import (
    FPSET,
    KEY,
    check_output_dir,
    check_output_path,
    option,
    stderr_console,
    warn,
)


@click.command()
@click.argument("model")
@click.option("--out", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Checkpoint to write (.pt).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Training seed (same seed, same weights on one machine).")
@click.option("--epochs", default=None, type=click.IntRange(1, 10_000),
              help="Override the zoo entry's epochs (1 to 10000).")
def train(model: str, out: str, seed: int, epochs: int | None) -> None:
    """Train a zoo model (e.g. zoo:digits-mlp) on its embedded data set and save it."""
    from fpgaprint.compiler import modelio, zoo
    from fpgaprint.core.liblog import library_output
    from fpgaprint.core.progress import Progress

    check_output_path(out, "--out")
    entry = zoo.get_entry(model)
    with library_output(), Progress(stderr_console()) as progress:
        ckpt = zoo.make(entry.name, seed=seed, epochs=epochs, progress=progress)
    modelio.save(ckpt, out)
    click.echo(f"{out}: {entry.name} ({entry.kind}), test accuracy "
               f"{ckpt.meta['test_accuracy']:.3f} on {ckpt.meta['data']}, seed {seed}")


@click.command()
@click.argument("model", required=False)
@click.option("--board", default="Pynq-Z1", show_default=True, metavar="BOARD",
              help="Target board (see `fpgaprint boards`).")
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Build directory (the package, with --fingerprint).")
@click.option("--fingerprint", "fingerprint", type=click.Path(dir_okay=False), metavar=FPSET,
              help="Fingerprint set to embed as self-test vectors; writes the signed package.")
@click.option("--boundary", "boundary", type=click.Path(dir_okay=False), metavar=FPSET,
              help="Boundary set made from this build's model/golden.onnx: the strict tier "
                   "(needs --fingerprint).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Build options as YAML (keys of BuildConfig; the flags below override it).")
@click.option("--weight-bits", type=click.IntRange(1, 16),
              help="Weight bits of PTQ/QAT for float models.")
@click.option("--act-bits", type=click.IntRange(1, 16),
              help="Activation bits of PTQ/QAT for float models.")
@click.option("--input-bits", type=click.IntRange(1, 16),
              help="Input grid bits of float models without an input quantizer.")
@click.option("--qat/--no-qat", default=None,
              help="QAT fine-tuning after PTQ (models that carry their data set).")
@click.option("--target-fps", type=click.IntRange(min=1),
              help="Folding target in frames per second [default: the fastest that fits].")
@click.option("--folding-config", type=click.Path(dir_okay=False, exists=True), metavar="FILE",
              help="FINN folding JSON (node names of the specialized accelerator).")
@click.option("--clock-ns", type=click.FloatRange(min=0, min_open=True, max=1000),
              help="Clock period in ns [default: the board's].")
@click.option("--impl-style", type=click.Choice(["auto", "rtl", "hls"]),
              help="FINN+ RTL or HLS variant of each layer (default auto: RTL where it exists).")
@click.option("--bist-mode", type=click.Choice(["exact", "signature"]),
              help="On-chip self-test ROM: every golden output word, or their CRC-32 only "
                   "(config bist.mode) [default: exact].")
@click.option("--samples", "equivalence_samples", type=click.IntRange(1, 100_000),
              help="Vectors run through every stage for the equivalence checks.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1),
              help="Training, calibration and equivalence-vector seed.")
@click.option("--key", type=click.Path(dir_okay=False), metavar=KEY,
              help="Ed25519 private key to sign with [default: ~/.config/fpgaprint/signing.key].")
@option("--allow-unsigned", "allow_unsigned", is_flag=True, old=("--unsigned",),
        help="Write the package without a signature (development only; verifiers refuse it "
             "unless they too allow unsigned packages).")
@click.option("--tar", is_flag=True, help="Also write OUT.tar.gz.")
@click.option("--matrix", type=click.Path(dir_okay=False), metavar="MATRIX.yaml",
              help="Models x boards x config overrides, one build each, into OUT/NAME/.")
@click.option("--scheduler", metavar="tcp://HOST:8786",
              help="With --matrix: a Dask scheduler, 'local' (a LocalCluster, the default) or "
                   "'serial'.")
@click.option("--workers", type=click.IntRange(1, 1024),
              help="With --matrix: LocalCluster workers [one per core].")
def build(model, board, out, fingerprint, boundary, config_path, key, allow_unsigned, tar, matrix,
          scheduler, workers, **overrides) -> None:
    """Compile MODEL (QONNX .onnx, PyTorch/Brevitas checkpoint, or zoo:NAME) for BOARD, or
    every build of a --matrix file."""
    from fpgaprint.compiler.matrix import check_build_args, cli_matrix
    from fpgaprint.core.keys import load_private_key

    is_matrix = check_build_args(model, matrix, scheduler, workers, fingerprint, boundary,
                                 config_path, tar, overrides)
    check_output_dir(out, "--out")
    if key is not None:
        load_private_key(key)  # a wrong key is refused before the build, not after it
    if is_matrix:
        return cli_matrix(matrix, out, scheduler, workers, key, allow_unsigned)
    from fpgaprint.compiler.build import build_model, check_model_spec
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.compiler.report import produced, summary

    check_model_spec(model)
    if fingerprint is None:
        for flag, given in (("--key", key is not None), ("--allow-unsigned", allow_unsigned)):
            if given:
                warn(f"{flag}: no effect without --fingerprint (the build writes no package "
                     "to sign)")
    console = stderr_console()
    bist_mode = overrides.pop("bist_mode", None)
    cfg = BuildConfig.load(config_path, **overrides)
    if bist_mode is not None:
        cfg.bist = cfg.bist.model_copy(update={"mode": bist_mode})
    res = build_model(model, board, Path(out), cfg, fingerprint=fingerprint, key=key, tar=tar,
                      allow_unsigned=allow_unsigned,
                      console=console, boundary=boundary)
    summary(res.report, console)
    for line in produced(res.report, out):  # the result: stdout
        click.echo(line)
