"""CLI: `fpgaprint train` and `fpgaprint build`."""

from __future__ import annotations

from pathlib import Path

import click

from fpgaprint.core.cliopts import trust_pickle_option


@click.command()
@click.argument("model")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="checkpoint path")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--epochs", default=None, type=int, help="override the zoo entry's epochs")
def train(model: str, out: str, seed: int, epochs: int | None) -> None:
    """Train a zoo model (e.g. zoo:digits-mlp) on its embedded data set and save it."""
    from rich.console import Console

    from fpgaprint.compiler import modelio, zoo

    console = Console(stderr=True)
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
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="build.yaml")
@click.option("--weight-bits", type=int)
@click.option("--act-bits", type=int)
@click.option("--input-bits", type=int)
@click.option("--qat/--no-qat", default=None, help="QAT fine-tune after PTQ (zoo models)")
@click.option("--target-fps", type=int)
@click.option("--folding-config", type=click.Path(dir_okay=False))
@click.option("--clock-ns", type=float)
@click.option("--samples", "equivalence_samples", type=int, help="equivalence vectors")
@click.option("--seed", type=int)
@click.option("--key", type=click.Path(dir_okay=False), help="Ed25519 private key to sign with")
@click.option("--unsigned", is_flag=True, help="development package without a signature")
@click.option("--tar", is_flag=True, help="also write OUT.tar.gz")
def build(model, board, out, fingerprint, config_path, key, unsigned, tar, **overrides) -> None:
    """Compile MODEL (QONNX .onnx, PyTorch/Brevitas checkpoint, or zoo:NAME) for BOARD."""
    from rich.console import Console

    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.compiler.report import summary

    console = Console(stderr=True)
    cfg = BuildConfig.load(config_path, **overrides)
    res = build_model(model, board, Path(out), cfg, fingerprint=fingerprint, key=key, tar=tar,
                      allow_unsigned=unsigned,
                      console=console)
    summary(res.report, console)
