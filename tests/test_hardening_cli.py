"""Mistakes a user makes on the command line, each one line naming what and where, exit 2,
before any work starts: wrong key kinds, paths that are not models, output paths that cannot
be written, serve addresses that are not addresses."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import pytest

from fpgaprint.core.keys import generate_keypair


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keypair(tmp_path_factory.mktemp("keys"))


# ---------------------------------------------------------------- build: refused before any step


def test_build_with_a_public_key_as_key_is_refused_before_any_step(run_cli, keys, tmp_path):
    _, pub = keys
    for extra in ((), ("--fingerprint", tmp_path / "set.npz")):
        code, out, err = run_cli("build", "zoo:digits-mlp", "--out", tmp_path / "b", "--key",
                                 pub, *extra)
        assert code == 2 and out == ""
        assert _lines(err) == [f"error: {pub}: is a public key; sign with its private key "
                               "(e.g. signing.key)"]
        assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("case", ["directory", "npz", "zoo"])
def test_build_names_a_model_that_is_not_one_before_progress_starts(run_cli, tmp_path, case):
    model = {"directory": tmp_path, "npz": tmp_path / "data.npz", "zoo": "zoo:nosuch"}[case]
    if case == "npz":
        np.savez(model, x=np.zeros(3))
    code, out, err = run_cli("build", model, "--out", tmp_path / "b", "--allow-unsigned",
                             "--fingerprint", tmp_path / "none.npz")
    formats = "a QONNX .onnx, a checkpoint written by `fpgaprint train` (.pt) or zoo:NAME"
    assert code == 2 and out == "" and not (tmp_path / "b").exists()
    assert _lines(err) == [{
        "directory": f"error: {model}: is a directory, not a model file ({formats})",
        "npz": f"error: {model}: not a model file (expected {formats})",
        "zoo": "error: unknown zoo model 'zoo:nosuch'; available: cnv-w2a2, digits-mlp, "
               "lfc-w1a2, tfc-w2a2"}[case]]


def test_a_non_checkpoint_zip_never_leaks_torch_internals(tmp_path):
    from fpgaprint.compiler import modelio
    from fpgaprint.core.errors import InputError

    np.savez(tmp_path / "data.npz", x=np.zeros(3))
    with pytest.raises(InputError) as e:
        modelio.load(tmp_path / "data.npz")
    assert str(e.value) == (f"{tmp_path / 'data.npz'}: not a model file (expected a QONNX "
                            ".onnx, a checkpoint written by `fpgaprint train` (.pt) or zoo:NAME)")


@pytest.mark.parametrize("flag", ["--allow-unsigned", "--key"])
def test_signing_flags_without_a_fingerprint_are_named_as_doing_nothing(run_cli, keys,
                                                                        tmp_path, flag):
    args = ("--key", keys[0]) if flag == "--key" else (flag,)
    code, _, err = run_cli("build", "zoo:digits-mlp", "--out", tmp_path / "b", *args,
                           "--config", tmp_path / "missing.yaml")
    assert code == 2
    lines = _lines(err)
    assert lines[0] == (f"warning: {flag}: no effect without --fingerprint (the build writes "
                        "no package to sign)")
    assert len(lines) == 2 and "missing.yaml" in lines[1]


# ---------------------------------------------------------------- output paths and model files


def test_fingerprint_generate_of_an_empty_onnx_is_one_line(run_cli, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    code, out, err = run_cli("fingerprint", "generate", tmp_path / "m.onnx", "--out",
                             tmp_path / "s.npz")
    assert code == 2 and out == ""
    assert _lines(err) == [f"error: {tmp_path / 'm.onnx'}: not an ONNX model (a graph with 0 "
                           "nodes, 0 inputs and 0 outputs)"]


@pytest.mark.parametrize("argv", [
    ("fingerprint", "generate", "zoo:digits-mlp", "--out", "{f}/s.npz"),
    ("fingerprint", "generate", "zoo:digits-mlp", "--out", "{d}/s.npz", "--challenge-out",
     "{f}/c.npz"),
    ("fingerprint", "check", "zoo:digits-mlp", "{d}/s.npz", "--json", "{f}/r.json"),
    ("fingerprint", "calibrate", "zoo:digits-mlp", "{d}/s.npz", "--out", "{f}/s.npz"),
    ("fingerprint", "eval", "zoo:digits-mlp", "--out", "{f}/eval"),
    ("build", "zoo:digits-mlp", "--out", "{f}/b"),
], ids=["generate", "challenge-out", "check-json", "calibrate", "eval", "build"])
def test_an_output_path_under_a_file_is_refused_before_any_work(run_cli, tmp_path, argv):
    (tmp_path / "file").write_text("x")
    argv = [a.format(f=tmp_path / "file", d=tmp_path) for a in argv]
    flag = argv[argv.index(next(a for a in argv if a.startswith(str(tmp_path / "file")))) - 1]
    code, out, err = run_cli(*argv)
    bad = next(a for a in argv if a.startswith(str(tmp_path / "file")))
    assert code == 2 and out == ""
    assert _lines(err) == [f"error: {flag} {bad}: {tmp_path / 'file'} is a file, not a folder"]


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@functools.cache
def _nobody_runs_fpgaprint() -> bool:
    """Whether `nobody` can import this checkout's fpgaprint (not when it lies in a folder
    only its owner may enter, e.g. one made by mktemp -d)."""
    proc = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import fpgaprint"],
                          capture_output=True, timeout=60)
    return proc.returncode == 0


@pytest.mark.skipif(not shutil.which("setpriv") or os.getuid() != 0,
                    reason="runs the CLI as another user: needs root and setpriv")
@pytest.mark.parametrize("argv", [
    ("fingerprint", "generate", "zoo:digits-mlp", "--out", "{ro}/s.npz"),
    ("fingerprint", "eval", "zoo:digits-mlp", "--out", "{ro}/eval"),
], ids=["generate", "eval"])
def test_an_unwritable_output_folder_is_refused_before_any_work(argv):
    """Run as `nobody` (root may write anywhere), in a folder that user can reach."""
    if not _nobody_runs_fpgaprint():
        pytest.skip("the user nobody cannot reach this checkout's interpreter or sources")
    top = Path(tempfile.mkdtemp())
    try:
        top.chmod(0o755)
        ro = top / "ro"
        ro.mkdir(mode=0o555)
        ro.chmod(0o555)
        argv = [a.format(ro=ro) for a in argv]
        proc = subprocess.run(
            [*AS_NOBODY, sys.executable, "-m", "fpgaprint", *argv], capture_output=True,
            text=True, timeout=300,
            env={**os.environ, "HOME": str(top), "PYTHONDONTWRITEBYTECODE": "1"})
        assert proc.returncode == 2 and proc.stdout == ""
        assert _lines(proc.stderr) == [f"error: --out {argv[-1]}: cannot write in {ro}"]
    finally:
        shutil.rmtree(top)


def test_a_port_longer_than_a_results_database_keeps_is_refused(run_cli, digits_package, keypair):
    port = "/dev/" + "p" * 600
    code, out, err = run_cli("verify", "--port", port, "--package", digits_package,
                             "--trusted-key", keypair[1])
    assert code == 2 and out == ""
    assert _lines(err) == [f"error: --port {port[:40]!r}…: longer than 512 characters"]


def test_an_output_file_on_a_file_system_that_takes_no_files_is_refused_before_the_board(
        run_cli, digits_package, keypair, tmp_path):
    """/proc takes no new files, though it reports itself writable to root: the report's
    folder is probed by creating a file, as the atomic writer will, before any board."""
    code, out, err = run_cli("verify", "--port", str(tmp_path / "no-board"), "--package",
                             digits_package, "--trusted-key", keypair[1], "--json",
                             "/proc/fpgaprint-report.json")
    assert code == 2 and out == ""
    assert _lines(err) == ["error: --json /proc/fpgaprint-report.json: cannot write in /proc"]


@pytest.mark.parametrize("exc", [
    NotADirectoryError(20, "Not a directory", "/data/file/out.json"),
    FileExistsError(17, "File exists", "/data/out"),
    PermissionError(13, "Permission denied", "/data/ro/out.npz"),
])
def test_an_os_error_on_a_path_is_one_line_naming_it(run_cli, monkeypatch, exc):
    """The one place that maps exceptions to exit codes names the path of any OSError that
    carries one, exit 2, never "unexpected"."""
    from fpgaprint import cli as cli_mod

    @click.command()
    def boom():
        raise exc

    monkeypatch.setitem(cli_mod.COMMANDS, "boom", f"{__name__}:_BOOM")
    monkeypatch.setattr(sys.modules[__name__], "_BOOM", boom, raising=False)
    code, out, err = run_cli("boom")
    assert code == 2 and out == ""
    assert _lines(err) == [f"error: {exc.filename}: {exc.strerror}"]


# ---------------------------------------------------------------- board serve addresses


@pytest.mark.parametrize("tcp,why", [
    ("nope", "--tcp expects HOST:PORT, got 'nope'"),
    ("1.2.3.4:99999", "--tcp expects HOST:PORT, got '1.2.3.4:99999'"),
    ("board.invalid:5000", "--port 'socket://board.invalid:5000': 'board.invalid' is not an "
                           "address"),
])
def test_board_serve_on_a_malformed_address_is_a_usage_error(run_cli, tmp_path, tcp, why):
    code, out, err = run_cli("board", "serve", tmp_path / "pkg", "--tcp", tcp)
    assert code == 2 and out == ""
    assert len(_lines(err)) == 1 and _lines(err)[0].startswith(f"error: {why}")
