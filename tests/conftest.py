"""Shared fixtures: FINN's build directory and the CLI runner."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _finn_build_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("finn_build")
    os.environ["FINN_BUILD_DIR"] = str(d)
    yield


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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread than on two contended ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def src(one_thread):
    """The embedded default model, trained with seed 0, as the fingerprint code sees it."""
    from fpgaprint.fingerprint.source import train_zoo

    return train_zoo("digits-mlp", seed=0)
