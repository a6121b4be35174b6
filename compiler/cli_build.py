"""CLI: `fpgaprint train` and `fpgaprint build`."""

from __future__ import annotations

from pathlib import Path

import click

from fpgaprint.core.cliopts import trust_pickle_option
from fpgaprint.core.errors import InputError


def check_output_path(path: str, flag: str, directory: bool) -> None:
    """An output path must be creatable: no parent that is a file, and the right kind."""
    p = Path(path)
    if str(path) == "":
        raise InputError(f"{flag}: empty path")
    if p.exists() and p.is_dir() != directory:
        kind = "a directory" if directory else "a file"
        raise InputError(f"{flag} {p}: exists and is not {kind}")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {p}: {parent} is a file, not a directory")
            break


@click.command()
@click.argument("model")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="checkpoint path")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1))
@click.option("--epochs", default=None, type=click.IntRange(1, 10_000),
              help="override the zoo entry's epochs (1 to 10000)")
def train(model: str, out: str, seed: int, epochs: int | None) -> None:
    """Train a zoo model (e.g. zoo:digits-mlp) on its embedded data set and save it."""
    from rich.console import Console

    from fpgaprint.compiler import modelio, zoo

    console = Console(stderr=True)
    check_output_path(out, "--out", directory=False)
    entry = zoo.get_entry(model)
    with console.status(f"training {entry.name}: {entry.description}"):
        ckpt = zoo.make(entry.name, seed=seed, epochs=epochs)
    modelio.save(ckpt, out)
    click.echo(f"{out}: {entry.name} ({entry.kind}), test accuracy "
               f"{ckpt.meta['test_accuracy']:.3f} on {ckpt.meta['data']}, seed {seed}")


@click.command()
@click.argument("model")
@trust_pickle_option
@click.option("--board", default="Pynq-Z1", show_default=True, help="see `fpgaprint boards`")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="package directory")
@click.option("--fingerprint", "fingerprint", type=click.Path(dir_okay=False),
              help="fingerprint set (.npz) to embed as self-test vectors")
@click.option("--boundary", "boundary", type=click.Path(dir_okay=False),
              help="boundary set made from this build's model/golden.onnx: the strict tier")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="build.yaml")
@click.option("--weight-bits", type=click.IntRange(1, 16), help="PTQ/QAT weight bits")
@click.option("--act-bits", type=click.IntRange(1, 16), help="PTQ/QAT activation bits")
@click.option("--input-bits", type=click.IntRange(1, 16),
              help="input grid of float models without an input quantizer")
@click.option("--qat/--no-qat", default=None, help="QAT fine-tune after PTQ (zoo models)")
@click.option("--target-fps", type=click.IntRange(min=1), help="folding target")
@click.option("--folding-config", type=click.Path(dir_okay=False, exists=True),
              help="FINN folding JSON (node names of the specialized accelerator)")
@click.option("--clock-ns", type=click.FloatRange(min=0, min_open=True, max=1000),
              help="clock period [default: the board's]")
@click.option("--impl-style", type=click.Choice(["auto", "rtl", "hls"]),
              help="FINN+ RTL or HLS variant of each layer (default auto: RTL where it exists)")
@click.option("--bist-mode", type=click.Choice(["exact", "signature"]),
              help="on-chip self-test ROM: every golden output word, or their CRC-32 only "
                   "(config bist.mode; default exact)")
@click.option("--samples", "equivalence_samples", type=click.IntRange(1, 100_000),
              help="equivalence vectors")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="training/calibration seed")
@click.option("--key", type=click.Path(dir_okay=False), help="Ed25519 private key to sign with")
@click.option("--unsigned", is_flag=True, help="development package without a signature")
@click.option("--tar", is_flag=True, help="also write OUT.tar.gz")
def build(model, board, out, fingerprint, boundary, config_path, key, unsigned, tar,
          **overrides) -> None:
    """Compile MODEL (QONNX .onnx, PyTorch/Brevitas checkpoint, or zoo:NAME) for BOARD."""
    from rich.console import Console

    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.compiler.report import summary

    console = Console(stderr=True)
    check_output_path(out, "--out", directory=True)
    bist_mode = overrides.pop("bist_mode", None)
    cfg = BuildConfig.load(config_path, **overrides)
    if bist_mode is not None:
        cfg.bist = cfg.bist.model_copy(update={"mode": bist_mode})
    res = build_model(model, board, Path(out), cfg, fingerprint=fingerprint, key=key, tar=tar,
                      allow_unsigned=unsigned,
                      console=console, boundary=boundary)
    summary(res.report, console)
