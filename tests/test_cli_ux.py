"""The command line as people use it: progress lines when output is not a terminal, a build
summary that names what was produced, library warnings in the build log (not on the terminal),
one line per error, help text on every option and the old flag spellings still parsed."""

from __future__ import annotations

import hashlib
import logging
import re
import warnings

import click
import pytest
from conftest import run_fpgaprint

from fpgaprint.cli import cli
from fpgaprint.compiler.steps import STEPS
from fpgaprint.core.errors import InputError

STAMP = re.compile(r"^\d\d:\d\d:\d\d ")
BUILD_TOTAL = len(STEPS) + 2  # the build's progress total (compiler/build.py)


# ------------------------------------------------------------------ a real build, not on a TTY


@pytest.fixture(scope="module")
def cli_build(tmp_path_factory, keypair, cli_trained):
    """train → fingerprint generate (the session's, conftest.cli_trained) → build
    --fingerprint, each through the CLI with pipes; a heartbeat of 0.3 s so that the front
    end's seconds show heartbeat lines."""
    d = tmp_path_factory.mktemp("cli-ux")
    build = run_fpgaprint("build", cli_trained["model"], "--out", d / "pkg", "--fingerprint",
                          cli_trained["both"], "--key", keypair[0], "--samples", 8,
                          env={"FPGAPRINT_HEARTBEAT_S": "0.3"})
    assert build.returncode == 0, build.stdout + build.stderr
    return {"dir": d, "train": cli_trained["train"], "generate": cli_trained["generate"],
            "build": build, "pkg": d / "pkg"}


def stamped(text: str) -> list[str]:
    return [line for line in text.splitlines() if STAMP.match(line)]


def test_non_tty_progress_lines_appear_during_a_build(cli_build):
    lines = stamped(cli_build["build"].stderr)
    steps = [line for line in lines if re.search(rf" build \d+/{BUILD_TOTAL}: [\w ]+$", line)]
    named = {line.rsplit(": ", 1)[1] for line in steps}
    assert {"front end", "streamline", "convert_to_hw", "codegen", "rtlsim"} <= named, lines
    counts = [int(re.search(rf"build (\d+)/{BUILD_TOTAL}", line).group(1)) for line in steps]
    assert counts == sorted(counts) and counts[-1] >= 12
    beats = [line for line in lines if re.search(r" … \d+ s$", line)]
    assert beats, lines  # the heartbeat speaks while a step is quiet
    assert re.search(rf"build {BUILD_TOTAL}/{BUILD_TOTAL} \(done in \d+\.\d s\)$", lines[-1])


def test_non_tty_progress_of_training_and_generation(cli_build):
    train = stamped(cli_build["train"].stderr)
    assert train[0].endswith("train digits-mlp …")
    assert re.search(r"train digits-mlp (\d+)/\1: loss \d\.\d{3} \(done in", train[-1]), train
    gen = stamped(cli_build["generate"].stderr)
    assert any(re.search(r"robust examples .*round 1, 0/48 kept$", line) for line in gen), gen


def test_build_summary_names_the_signed_package(cli_build, keypair):
    from fpgaprint.core.keys import load_public_key, public_key_hex

    out, err = cli_build["build"].stdout, cli_build["build"].stderr
    pkg = cli_build["pkg"]
    pid = hashlib.sha256((pkg / "manifest.json").read_bytes()).hexdigest()
    signer = public_key_hex(load_public_key(keypair[1]))
    # the result on stdout, and only there; progress and the build summary on stderr
    assert out == f"package: {pkg}\npackage id: {pid}\nsignature: signed by {signer}\n", out
    assert pid not in err and "bit-exact" in err


def test_library_warnings_go_to_the_build_log_not_the_terminal(cli_build):
    for step in ("train", "generate", "build"):
        err = cli_build[step].stderr
        assert not re.search(r"Warning\b|warnings\.warn|^W\d{4} ", err, re.M), (step, err)
    log = (cli_build["pkg"] / "build.log").read_text()
    assert re.search(r"\w+Warning: ", log)  # Brevitas' and QONNX's warnings, kept here


def test_library_output_routes_warnings_and_library_loggers(tmp_path, capfd):
    import torch  # noqa: F401  (its loggers exist)

    from fpgaprint.core.liblog import library_output

    handler = logging.FileHandler(tmp_path / "log")
    with library_output(handler):
        warnings.warn("a library's UserWarning", UserWarning, stacklevel=1)
        logging.getLogger("torch.onnx._internal.x").warning("a torch warning")
        logging.getLogger("brevitas.y").warning("a brevitas warning")
    handler.close()
    text = (tmp_path / "log").read_text()
    assert "UserWarning: a library's UserWarning" in text
    assert "a torch warning" in text and "a brevitas warning" in text
    out, err = capfd.readouterr()
    assert "warning" not in (out + err).lower()


def test_summary_without_fingerprint_says_no_package(tmp_path):
    from fpgaprint.compiler.report import produced

    lines = produced({}, tmp_path / "b")
    assert lines == [f"no package written: {tmp_path / 'b'} holds the build (golden model, "
                     "steps, reports); build with --fingerprint FPSET to write a signed package"]
    unsigned = produced({"package": {"package_id": "ab" * 32, "signed": False, "signer": None,
                                     "tar": True}}, tmp_path / "p")
    assert unsigned[2] == "signature: UNSIGNED (--allow-unsigned: for development only)"
    assert unsigned[3] == f"archive: {tmp_path / 'p'}.tar.gz"


def test_package_verify_on_a_build_without_package(run_cli, digits_build):
    assert not (digits_build.out / "manifest.json").exists()
    code, out, err = run_cli("package", "verify", digits_build.out, "--allow-unsigned")
    assert code == 2
    assert err.strip() == (f"error: {digits_build.out}: no package here: a build without a "
                           "package (build with --fingerprint FPSET to write one)")


# ------------------------------------------------------------------ one message per error


@pytest.mark.parametrize("url", ["{tmp}/no-such-tty", "socket://127.0.0.1:1",
                                 "rfc2217://127.0.0.1:1"])
def test_unreachable_port_is_one_line_exit_3(run_cli, digits_package, keypair, tmp_path, url):
    port = url.format(tmp=tmp_path)
    code, out, err = run_cli("verify", "--port", port, "--package", digits_package,
                             "--trusted-key", keypair[1], "--json", tmp_path / "r.json")
    assert code == 3
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(rf"error: cannot open board port {re.escape(port)}: [A-Z][^:]+", lines[0])
    reason = lines[0].removeprefix("error: ")
    import json

    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["status"] == "NO_VERDICT" and rep["reason"] == reason  # the report still says it


# ------------------------------------------------------------------ one flag vocabulary


def _commands(cmd: click.Command = cli, path: tuple[str, ...] = ("fpgaprint",)):
    yield path, cmd
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            yield from _commands(cmd.get_command(ctx, name), (*path, name))


def test_every_option_of_every_command_has_help_text():
    missing, seen = [], 0
    for path, cmd in _commands():
        assert cmd.help, f"{' '.join(path)}: no help text"
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                seen += 1
                if not (p.help or "").strip():
                    missing.append(f"{' '.join(path)} {p.opts[0]}")
    assert seen > 100
    assert not missing, missing


def test_the_vocabulary_is_spelled_one_way():
    """One flag per meaning in every command's help, one metavar per kind of value."""
    metavars: dict[str, set[str]] = {}
    names: set[str] = set()
    for path, cmd in _commands():
        ctx = click.Context(cmd, info_name=path[-1])
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                names.update(p.opts)
                if p.name in ("trusted_key", "key", "fingerprint", "boundary", "challenge",
                              "package", "swap_model"):
                    metavars.setdefault(p.name, set()).add(p.make_metavar(ctx))
    assert not {"--unsigned", "--report"} & names
    assert metavars["trusted_key"] == {"PUB"} and metavars["key"] == {"KEY"}
    assert metavars["fingerprint"] | metavars["boundary"] | metavars["challenge"] == {"FPSET"}
    assert metavars["package"] | metavars["swap_model"] == {"PACKAGE"}


def test_help_of_every_command_runs(run_cli):
    for path, _ in _commands():
        code, out, err = run_cli(*path[1:], "--help")
        assert code == 0, (path, err)
        assert "--unsigned " not in out and "--report " not in out


def test_top_level_help_lists_every_command_without_loading_torch():
    """`fpgaprint --help` imports every command's module for its summary; none of them may
    import torch (about 2 s) just to be listed."""
    import subprocess
    import sys

    code = ("import sys\nfrom fpgaprint.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\nprint('torch loaded:', 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    listed = {line.split()[0] for line in r.stdout.split("Commands:")[1].splitlines()[1:-1]}
    assert listed == set(cli.list_commands(None))
    assert r.stdout.rstrip().endswith("torch loaded: False"), r.stdout


def _parse(*args: str) -> dict:
    """The values a command line parses into, without running the command."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # click 8.5's protected_args
        ctx = cli.make_context("fpgaprint", list(args), resilient_parsing=False)
        names = ctx.protected_args + ctx.args
        cmd, params = cli, {}
        while isinstance(cmd, click.Group):
            name, *rest = names
            sub = cmd.get_command(ctx, name)
            ctx = sub.make_context(name, rest, parent=ctx)
            params.update(ctx.params)
            names = ctx.protected_args + ctx.args if isinstance(sub, click.Group) else []
            cmd = sub
    return params


def test_old_spellings_still_parse_and_warn(tmp_path, digits_package, capsys):
    new = _parse("build", "zoo:digits-mlp", "--out", str(tmp_path / "b"), "--allow-unsigned")
    old = _parse("build", "zoo:digits-mlp", "--out", str(tmp_path / "b"), "--unsigned")
    assert new["allow_unsigned"] is True and old["allow_unsigned"] is True
    assert "warning: --unsigned is now --allow-unsigned" in capsys.readouterr().err
    assert _parse("build", "zoo:digits-mlp", "--out", str(tmp_path / "b"))[
        "allow_unsigned"] is False

    base = ("verify", "--port", "/dev/null", "--package", str(digits_package))
    assert _parse(*base, "--report", str(tmp_path / "r.json"))["json_out"] == tmp_path / "r.json"
    assert "warning: --report is now --json" in capsys.readouterr().err
    assert _parse(*base, "--json", str(tmp_path / "j.json"))["json_out"] == tmp_path / "j.json"
    assert _parse(*base)["json_out"] is None
    assert capsys.readouterr().err == ""
    with pytest.raises(InputError, match="--report: the old spelling of --json; give one"):
        _parse(*base, "--json", str(tmp_path / "j.json"), "--report", str(tmp_path / "r.json"))


def test_threads_after_the_subcommand_and_before_it(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        _parse("fingerprint", "generate", "zoo:digits-mlp", "--out", str(tmp_path / "f.npz"),
               "--threads", "2")
        assert torch.get_num_threads() == 2
        assert _parse("fingerprint", "--threads", "3", "check", "zoo:digits-mlp",
                      "x.npz")["threads"] == 3  # the group's option, applied when it runs
        with pytest.raises(Exception, match="--threads"):
            _parse("fingerprint", "eval", "zoo:digits-mlp", "--out", str(tmp_path / "e"),
                   "--threads", "0")
    finally:
        torch.set_num_threads(before)


def test_old_spellings_run_end_to_end(run_cli, digits_package, keypair, tmp_path):
    code, out, err = run_cli("verify", "--port", tmp_path / "none", "--package", digits_package,
                             "--trusted-key", keypair[1], "--report", tmp_path / "r.json")
    assert code == 3 and (tmp_path / "r.json").is_file()
    assert err.splitlines()[0].startswith("warning: --report is now --json")


